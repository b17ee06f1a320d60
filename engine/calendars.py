"""Business time: when a calendar is open, and how much of it lies between two instants.

A calendar (``calendars:`` in a definition, `engine.model.Calendar`) gives working hours per weekday
in the app's timezone, optionally a country's public holidays and adjusted workdays (调休), and
dates of its own. `BusinessCalendar` answers in instants: aware datetimes in, UTC datetimes out.
Inside, an instant is a whole number of microseconds since the epoch and every local date has its
open spans cut to that date (cached), so a deadline a month away walks thirty dates, not forty
thousand minutes. The rules a reader needs are in docs/calendars.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from engine.model import App

ROUND_THE_CLOCK = "24x7"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOSED = frozenset({"", "closed", "off", "none"})  # "none": a YAML null, as the builder writes it

Span = tuple[int, int]  # [start, end) in microseconds since the epoch
Range = tuple[int, int]  # minutes after a day's 00:00; in a week, "20:00-08:00" is (1200, 1920)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000
_ONE_DAY = timedelta(days=1)
_DAY = 24 * 60
_MINUTE_US = 60 * _US
_DAY_US = _DAY * _MINUTE_US
_EPOCH_DATE = _EPOCH.toordinal()
_RANGE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")


def days_of(spec: str) -> tuple[int, ...]:
    """The weekdays (0 is Monday) a day spec names: ``mon-fri``, ``sat``, ``mon,wed``, ``fri-mon``."""
    days: list[int] = []
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        days.extend((a + i) % 7 for i in range((b - a) % 7 + 1))  # a range may wrap past Sunday
    return tuple(days)


def ranges_of(text: str) -> tuple[Range, ...]:
    """``"08:30-12:00,13:00-17:30"`` as minutes; ``closed``, ``off`` or empty is no range."""
    if text.strip().lower() in CLOSED:
        return ()
    ranges = []
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise ValueError(f"'{part.strip()}' is not a time range; write HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        ranges.append((h1 * 60 + m1, h2 * 60 + m2))
    return tuple(ranges)


class BusinessCalendar:
    """Working hours in one timezone, with holidays and adjusted workdays."""

    def __init__(
        self,
        hours: Mapping[str, str] | Iterable[tuple[str, str]],
        timezone: str = "Asia/Shanghai",
        *,
        holidays: str | None = None,
        extra_holidays: Iterable[str] = (),
        extra_workdays: Iterable[str] = (),
        name: str = "",
    ) -> None:
        self.name = name
        self.zone = ZoneInfo(timezone)
        pairs = list(hours.items() if isinstance(hours, Mapping) else hours)
        # No hours at all: round the clock from Monday to Friday (holidays and workdays still apply).
        week: list[tuple[Range, ...]] = [()] * 7 if pairs else [((0, _DAY),)] * 5 + [(), ()]
        for spec, text in pairs:
            for day in days_of(spec):
                week[day] = tuple((a, b if b > a else b + _DAY) for a, b in ranges_of(text))
        self.week = tuple(week)
        # An adjusted or extra workday works like a weekday: the first of Monday..Friday with hours.
        self.workday_hours = next((ranges for ranges in week[:5] if ranges), ())
        self.country = holidays
        self.extra_holidays = frozenset(date.fromisoformat(d) for d in extra_holidays)
        self.extra_workdays = frozenset(date.fromisoformat(d) for d in extra_workdays)
        self._day = lru_cache(maxsize=4096)(self._open_on)
        self._offset = lru_cache(maxsize=4096)(self._offset_at_midnight)

    def __repr__(self) -> str:
        return f"<BusinessCalendar {self.name or '?'} {self.zone.key}>"

    # -- the API -------------------------------------------------------------------------------------
    def add(self, start: datetime, seconds: int) -> datetime:
        """The first instant by which ``seconds`` of business time have passed since ``start``.

        Zero seconds is ``start`` itself, open or not. A deadline that uses up a span exactly is
        that span's end (17:30), not the next opening."""
        if seconds < 0:
            raise ValueError(f"cannot add negative business time ({seconds}s)")
        t = _us(start)
        if seconds == 0:
            return _utc(t)
        if not any(self.week):
            raise ValueError(f"calendar '{self.name}' has no working hours on any day")
        left = seconds * _US
        day = self._date_of(t)
        while True:
            lo, _, spans, total = self._day(day)
            if t <= lo and total < left:  # the whole date counts
                left -= total
            else:
                for s, e in spans:
                    if e <= t:
                        continue
                    s = max(s, t)
                    if e - s >= left:
                        return _utc(s + left)
                    left -= e - s
            day += _ONE_DAY

    def elapsed(self, start: datetime, end: datetime) -> int:
        """Whole seconds of business time from ``start`` to ``end`` (0 if ``end`` is not later)."""
        a, b = _us(start), _us(end)
        if b <= a:
            return 0
        day, last = self._date_of(a), self._date_of(b)
        total = 0
        while day <= last:
            lo, hi, spans, whole = self._day(day)
            if a <= lo and hi <= b:
                total += whole
            else:
                total += sum(max(0, min(e, b) - max(s, a)) for s, e in spans)
            day += _ONE_DAY
        return total // _US

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` lies in working hours (a span includes its start, not its end)."""
        t = _us(at)
        return any(s <= t < e for s, e in self._day(self._date_of(t))[2])

    # -- dates ---------------------------------------------------------------------------------------
    def kind_of(self, day: date) -> str:
        """``holiday``, ``workday`` (adjusted or extra: works like a weekday) or ``normal``."""
        if day in self.extra_holidays:
            return "holiday"
        if day in self.extra_workdays:
            return "workday"
        if self.country:
            holidays, workdays = _country_year(self.country, day.year)
            if day in holidays:
                return "holiday"
            if day in workdays:
                return "workday"
        return "normal"

    def hours_on(self, day: date) -> tuple[Range, ...]:
        """The ranges that start on a local date (a range crossing midnight belongs to its start)."""
        kind = self.kind_of(day)
        own = self.week[day.weekday()]
        if kind == "holiday":
            return ()
        if kind == "workday" and not (day.weekday() < 5 and own):
            return self.workday_hours or own
        return own

    def _open_on(self, day: date) -> tuple[int, int, tuple[Span, ...], int]:
        """The date's bounds, its open spans (the day before's overnight ranges included, all cut
        to the date, merged) and their total, in microseconds.

        A range holds the instants whose wall clock reads a time in it: on the night the clocks
        go forward it loses the skipped hour, on the night they go back it gains the repeated one."""
        lo, hi = self._midnight(day), self._midnight(day + _ONE_DAY)
        before, today = self.hours_on(day - _ONE_DAY), self.hours_on(day)
        if self._offset(day) == self._offset(day + _ONE_DAY):  # one offset all day: the usual date
            spans, total = _relative_spans(before, today)
            return lo, hi, tuple((lo + s, lo + e) for s, e in spans), total
        wall = (day.toordinal() - _EPOCH_DATE) * _DAY_US  # the date's 00:00 on the wall clock's scale
        found, offsets = [], self._offsets(lo, hi)
        for shift, ranges in ((-_DAY, before), (0, today)):
            for a, b in ranges:
                for p0, p1, offset in offsets:
                    found.append((max(wall + (shift + a) * _MINUTE_US - offset, p0),
                                  min(wall + (shift + b) * _MINUTE_US - offset, p1)))  # fmt: skip
        spans, total = _merged(found)
        return lo, hi, spans, total

    def _offsets(self, lo: int, hi: int) -> tuple[tuple[int, int, int], ...]:
        """The stretches of one UTC offset between two instants: ``(start, end, offset)``."""
        before, after = self._offset_at(lo), self._offset_at(hi - 1)
        if before == after:
            return ((lo, hi, before),)
        first, last = lo, hi - 1  # the change: the first instant with the later offset
        while first < last:
            middle = (first + last) // 2
            first, last = (first, middle) if self._offset_at(middle) == after else (middle + 1, last)
        return ((lo, first, before), (first, hi, after))

    def _midnight(self, day: date) -> int:
        """The first instant of a local date (where midnight is skipped, the change itself)."""
        return (day.toordinal() - _EPOCH_DATE) * _DAY_US - self._offset(day)

    def _offset_at_midnight(self, day: date) -> int:
        offset = self.zone.utcoffset(datetime(day.year, day.month, day.day))
        return offset // timedelta(microseconds=1) if offset else 0

    def _offset_at(self, t: int) -> int:
        offset = (_EPOCH + timedelta(microseconds=t)).astimezone(self.zone).utcoffset()
        return offset // timedelta(microseconds=1) if offset else 0

    def _date_of(self, t: int) -> date:
        """The local date whose bounds hold the instant ``t``."""
        day = (_EPOCH + timedelta(microseconds=t)).astimezone(self.zone).date()
        lo, hi = self._day(day)[:2]
        return day + _ONE_DAY if t >= hi else day - _ONE_DAY if t < lo else day


class RoundTheClock(BusinessCalendar):
    """The calendar ``24x7``: every second is business time."""

    def __init__(self) -> None:
        super().__init__({"mon-sun": "00:00-24:00"}, "UTC", name=ROUND_THE_CLOCK)

    def add(self, start: datetime, seconds: int) -> datetime:
        if seconds < 0:
            raise ValueError(f"cannot add negative business time ({seconds}s)")
        return _utc(_us(start) + seconds * _US)

    def elapsed(self, start: datetime, end: datetime) -> int:
        return max(0, _us(end) - _us(start)) // _US

    def is_open(self, at: datetime) -> bool:
        return True


_ROUND_THE_CLOCK = RoundTheClock()


def calendar_for(app: App, name: str) -> BusinessCalendar:
    """The app's calendar ``name`` (``24x7`` always exists), built once per definition and zone."""
    if name == ROUND_THE_CLOCK:
        return _ROUND_THE_CLOCK
    calendar = next((c for c in app.calendars if c.name == name), None)
    if calendar is None:
        raise KeyError(f"app '{app.name}' has no calendar '{name}' (it has {', '.join(app.calendar_names)})")
    return _cached(app.timezone, calendar.name, calendar.hours, calendar.holidays,
                   calendar.extra_holidays, calendar.extra_workdays)  # fmt: skip


@lru_cache(maxsize=64)
def _cached(
    timezone: str,
    name: str,
    hours: tuple[tuple[str, str], ...],
    holidays: str | None,
    extra_holidays: tuple[str, ...],
    extra_workdays: tuple[str, ...],
) -> BusinessCalendar:
    # Keyed by content, not by the app: a reload that leaves the calendar alone keeps its cache.
    return BusinessCalendar(hours, timezone, holidays=holidays, extra_holidays=extra_holidays,
                            extra_workdays=extra_workdays, name=name)  # fmt: skip


@lru_cache(maxsize=1024)
def _relative_spans(before: tuple[Range, ...], today: tuple[Range, ...]) -> tuple[tuple[Span, ...], int]:
    """The open spans of a date of 24 hours, after its midnight: the day before's overnight ranges
    and the date's own, cut at the date's end."""
    found = [((a - _DAY) * _MINUTE_US, (b - _DAY) * _MINUTE_US) for a, b in before]
    found += [(a * _MINUTE_US, b * _MINUTE_US) for a, b in today]
    return _merged([(max(s, 0), min(e, _DAY_US)) for s, e in found])


def _merged(spans: Iterable[Span]) -> tuple[tuple[Span, ...], int]:
    """Spans sorted and joined where they meet or overlap (empty ones dropped), and their total."""
    merged: list[Span] = []
    for s, e in sorted(spans):
        if s >= e:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return tuple(merged), sum(e - s for s, e in merged)


@lru_cache(maxsize=128)
def _country_year(country: str, year: int) -> tuple[frozenset[date], frozenset[date]]:
    """A country's public holidays in a year, and its adjusted workdays (weekend days worked, 调休)."""
    import holidays  # imported late: it is large and only calendars with a country need it

    found = holidays.country_holidays(country, years=year)
    return frozenset(found), frozenset(d for d in found.weekend_workdays if d.year == year)


def _us(at: datetime) -> int:
    if at.utcoffset() is None:
        raise ValueError(f"business time needs an aware datetime, not {at!r}")
    return (at - _EPOCH) // timedelta(microseconds=1)


def _utc(t: int) -> datetime:
    return _EPOCH + timedelta(microseconds=t)
