"""Business calendars: hand-computed deadlines, holidays and 调休, DST, and a slow reference."""

from __future__ import annotations

import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.calendars import DAYS, BusinessCalendar, RoundTheClock, calendar_for, days_of
from engine.compiler import compile_app_folder
from engine.schema import validate
from engine.source import parse_yaml

OFFICE = {"mon-fri": "08:30-12:00,13:00-17:30", "sat": "09:00-12:00"}
WEEKDAYS = {"mon-fri": "08:30-12:00,13:00-17:30"}
H = 3600


def at(zone: str, *when: int) -> datetime:
    """A wall-clock time in ``zone`` as the UTC instant the calendar takes."""
    return datetime(*when, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def sh(*when: int) -> datetime:
    return at("Asia/Shanghai", *when)


def berlin(*when: int) -> datetime:
    return at("Europe/Berlin", *when)


# -- hand-computed ------------------------------------------------------------------------------------
def test_lunch_break_is_skipped() -> None:
    office = BusinessCalendar(OFFICE)
    assert office.add(sh(2026, 3, 2, 11, 30), H) == sh(2026, 3, 2, 13, 30)
    assert office.elapsed(sh(2026, 3, 2, 11, 30), sh(2026, 3, 2, 13, 30)) == H
    assert office.elapsed(sh(2026, 3, 2, 0, 0), sh(2026, 3, 3, 0, 0)) == 8 * H
    assert not office.is_open(sh(2026, 3, 2, 12, 30))
    assert office.is_open(sh(2026, 3, 2, 8, 30)) and not office.is_open(sh(2026, 3, 2, 17, 30))


def test_friday_evening_plus_two_hours() -> None:
    # Without Saturday hours the deadline lands on Monday morning; with them, on Saturday.
    assert BusinessCalendar(WEEKDAYS).add(sh(2026, 3, 6, 17, 0), 2 * H) == sh(2026, 3, 9, 10, 0)
    assert BusinessCalendar(OFFICE).add(sh(2026, 3, 6, 17, 0), 2 * H) == sh(2026, 3, 7, 10, 30)


def test_a_deadline_that_fills_a_span_is_its_end() -> None:
    office = BusinessCalendar(OFFICE)
    assert office.add(sh(2026, 3, 2, 17, 0), 30 * 60) == sh(2026, 3, 2, 17, 30)
    assert office.add(sh(2026, 3, 2, 17, 0), 30 * 60 + 1) == sh(2026, 3, 3, 8, 30, 1)


def test_zero_is_the_start_even_when_closed() -> None:
    office = BusinessCalendar(OFFICE)
    sunday = sh(2026, 3, 8, 10, 0)
    assert office.add(sunday, 0) == sunday
    assert office.add(sunday, 1) == sh(2026, 3, 9, 8, 30, 1)
    assert office.elapsed(sunday, sunday) == 0
    assert office.elapsed(sh(2026, 3, 9, 10, 0), sunday) == 0


def test_ranges_across_midnight_belong_to_their_start_day() -> None:
    nights = BusinessCalendar({"mon-fri": "20:00-08:00"})
    # Friday 22:00 + 12h: Friday's shift runs to Saturday 08:00 (10h), then Monday 20:00 + 2h.
    assert nights.add(sh(2026, 3, 6, 22, 0), 12 * H) == sh(2026, 3, 9, 22, 0)
    assert nights.is_open(sh(2026, 3, 7, 7, 59)) and not nights.is_open(sh(2026, 3, 7, 21, 0))
    assert not nights.is_open(sh(2026, 3, 9, 3, 0))  # Sunday has no shift to run into Monday
    assert nights.elapsed(sh(2026, 3, 9, 0, 0), sh(2026, 3, 16, 0, 0)) == 5 * 12 * H
    # A holiday on the start day cancels the whole overnight range, a holiday after it none of it.
    off_friday = BusinessCalendar({"mon-fri": "20:00-08:00"}, extra_holidays=["2026-03-06"])
    assert not off_friday.is_open(sh(2026, 3, 6, 22, 0)) and not off_friday.is_open(sh(2026, 3, 7, 7, 0))
    assert off_friday.is_open(sh(2026, 3, 6, 7, 0))  # Thursday's shift
    off_tuesday = BusinessCalendar({"mon-fri": "20:00-08:00"}, extra_holidays=["2026-03-10"])
    assert off_tuesday.is_open(sh(2026, 3, 10, 7, 0)) and not off_tuesday.is_open(sh(2026, 3, 10, 21, 0))


def test_several_entries_and_day_lists() -> None:
    assert days_of("mon-fri") == (0, 1, 2, 3, 4)
    assert days_of("mon,wed") == (0, 2)
    assert days_of("mon-tue, fri") == (0, 1, 4)
    assert days_of("fri-mon") == (4, 5, 6, 0)
    calendar = BusinessCalendar({"mon,wed": "09:00-10:00", "sun": "closed", "sat": "off"})
    assert calendar.elapsed(sh(2026, 3, 2), sh(2026, 3, 9)) == 2 * H


def test_no_hours_is_round_the_clock_on_workdays() -> None:
    calendar = BusinessCalendar({})
    assert calendar.add(sh(2026, 3, 6, 23, 0), 2 * H) == sh(2026, 3, 9, 1, 0)
    assert calendar.elapsed(sh(2026, 3, 2), sh(2026, 3, 9)) == 5 * 24 * H


def test_cn_national_day_and_adjusted_workdays() -> None:
    office = BusinessCalendar(OFFICE, holidays="CN")
    # 2026: Oct 1-7 off (Sat Oct 3 too); Sun Sep 20 and Sat Oct 10 are worked (调休).
    assert office.kind_of(date(2026, 10, 1)) == "holiday"
    assert office.kind_of(date(2026, 10, 3)) == "holiday"
    assert office.kind_of(date(2026, 9, 20)) == office.kind_of(date(2026, 10, 10)) == "workday"
    assert office.kind_of(date(2026, 9, 21)) == "normal"
    assert not office.is_open(sh(2026, 10, 1, 10, 0))
    # Wednesday Sep 30, 17:00 + 1h: half an hour that day, the rest on Thursday Oct 8.
    assert office.add(sh(2026, 9, 30, 17, 0), H) == sh(2026, 10, 8, 9, 0)
    # An adjusted workday has a weekday's hours (Monday's), not Sunday's or Saturday's.
    assert office.is_open(sh(2026, 9, 20, 14, 0)) and office.is_open(sh(2026, 10, 10, 15, 0))
    assert office.elapsed(sh(2026, 9, 20), sh(2026, 9, 21)) == 8 * H
    assert office.elapsed(sh(2026, 10, 10), sh(2026, 10, 11)) == 8 * H
    # Saturday May 2 is Labour Day: its morning hours are off.
    assert office.elapsed(sh(2026, 5, 2), sh(2026, 5, 3)) == 0


def test_extra_holidays_and_workdays_override() -> None:
    office = BusinessCalendar(
        OFFICE,
        holidays="CN",
        extra_holidays=["2026-03-04", "2026-09-20"],
        extra_workdays=["2026-03-08", "2026-10-01"],
    )
    assert office.add(sh(2026, 3, 3, 17, 0), H) == sh(2026, 3, 5, 9, 0)  # Wednesday Mar 4 is off
    assert office.elapsed(sh(2026, 3, 8), sh(2026, 3, 9)) == 8 * H  # Sunday Mar 8 is worked
    assert office.kind_of(date(2026, 9, 20)) == "holiday"  # the company keeps the 调休 Sunday off
    assert office.elapsed(sh(2026, 10, 1), sh(2026, 10, 2)) == 8 * H  # and works National Day


def test_dst_days_are_23_and_25_hours() -> None:
    always = BusinessCalendar({"mon-sun": "00:00-24:00"}, "Europe/Berlin")
    assert always.elapsed(berlin(2026, 3, 29), berlin(2026, 3, 30)) == 23 * H
    assert always.elapsed(berlin(2026, 10, 25), berlin(2026, 10, 26)) == 25 * H
    # A night shift over the change is as long as the time that really passes.
    night = BusinessCalendar({"sat": "22:00-06:00"}, "Europe/Berlin")
    assert night.add(berlin(2026, 3, 28, 22, 0), 7 * H) == berlin(2026, 3, 29, 6, 0)
    assert night.elapsed(berlin(2026, 10, 24, 20, 0), berlin(2026, 10, 25, 12, 0)) == 9 * H
    # A range is the time the wall clock shows inside it: the skipped hour is lost, the repeated
    # one counted twice.
    assert (
        BusinessCalendar({"sun": "01:00-02:30"}, "Europe/Berlin").elapsed(
            berlin(2026, 3, 29), berlin(2026, 3, 30)
        )
        == H
    )
    assert (
        BusinessCalendar({"sun": "02:15-02:45"}, "Europe/Berlin").elapsed(
            berlin(2026, 10, 25), berlin(2026, 10, 26)
        )
        == H
    )
    office = BusinessCalendar({"mon-fri": "09:00-17:00"}, "Europe/Berlin")
    assert office.add(berlin(2026, 3, 27, 16, 0), 2 * H) == berlin(2026, 3, 30, 10, 0)
    assert office.add(berlin(2026, 3, 27, 16, 0), 2 * H) == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)


def test_instants_are_utc_and_aware() -> None:
    office = BusinessCalendar(OFFICE)
    local = datetime(2026, 3, 2, 11, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert office.add(local, H).tzinfo is UTC
    assert office.add(local, H) == sh(2026, 3, 2, 13, 30)
    assert office.elapsed(local.replace(microsecond=500_000), sh(2026, 3, 2, 11, 30, 10)) == 9
    with pytest.raises(ValueError, match="aware"):
        office.add(datetime(2026, 3, 2, 11, 30), H)
    with pytest.raises(ValueError, match="negative"):
        office.add(local, -1)
    with pytest.raises(ValueError, match="no working hours"):
        BusinessCalendar({"mon-sun": "closed"}).add(local, 1)


def test_walks_dates_not_minutes() -> None:
    office = BusinessCalendar(OFFICE, holidays="CN")
    start = sh(2026, 1, 5, 9, 0)
    office.add(start, 30 * 24 * H)
    assert office._day.cache_info().misses < 200  # 30 days of 8.5 hours a week: ~120 dates
    office.add(start, 365 * 24 * H)  # loads the dates (and the holidays of the years) once
    began = time.perf_counter()
    end = office.add(start, 365 * 24 * H)
    assert time.perf_counter() - began < 0.010
    assert office.elapsed(start, end) == 365 * 24 * H


# -- the definition -------------------------------------------------------------------------------------
APP = """
app: repair
timezone: Asia/Shanghai
calendars:
  office:
    hours:
      mon,wed: "08:30-12:00,13:00-17:30"
      tue,thu-fri: "08:30-17:30"
      sat: closed
    holidays: CN
    extra_holidays: [2026-12-31]
entities:
  ticket:
    fields:
      summary: {type: text}
"""


def test_a_loaded_calendar(write_definitions) -> None:
    root = write_definitions({"repair/app.yaml": APP})
    compiled, problems = compile_app_folder(root / "repair", {}, root)
    assert problems == [] and compiled is not None
    office = calendar_for(compiled.app, "office")
    assert calendar_for(compiled.app, "office") is office
    assert office.add(sh(2026, 12, 30, 17, 0), H) == sh(2027, 1, 4, 9, 0)  # Dec 31 and Jan 1 off
    assert office.elapsed(sh(2026, 3, 2), sh(2026, 3, 7)) == 8 * H + 9 * H + 8 * H + 9 * H + 9 * H
    always = calendar_for(compiled.app, "24x7")
    assert always.add(sh(2026, 3, 7, 23, 0), 2 * H) == sh(2026, 3, 8, 1, 0)
    assert always.elapsed(sh(2026, 3, 8, 1, 0), sh(2026, 3, 7, 23, 0)) == 0 and always.is_open(sh(2026, 3, 8))
    with pytest.raises(KeyError, match="no calendar 'night'"):
        calendar_for(compiled.app, "night")


def hours_problems(hours: str) -> list[str]:
    text = APP.replace(
        '      mon,wed: "08:30-12:00,13:00-17:30"\n      tue,thu-fri: "08:30-17:30"\n      sat: closed\n',
        hours,
    )
    return [str(p) for p in validate(parse_yaml(textwrap.dedent(text).lstrip("\n"), "app.yaml"))]


def test_the_schema_checks_hours() -> None:
    assert (
        hours_problems('      "tue, thu": "09:00-12:00"\n      sat-mon: "20:00-08:00"\n      wed: \n') == []
    )
    assert hours_problems('      mon-fri: "09:00-12:00"\n      fri: "09:00-10:00"\n') == [
        "app.yaml:7:7: fri already has hours (from mon-fri); name each day once"
    ]
    assert hours_problems(
        '      mon: "08:00-08:00"\n      tue: "24:00-08:00"\n      wed;thu: "09:00-10:00"\n'
    ) == [
        "app.yaml:6:13: '08:00-08:00' starts and ends at the same time; a whole day is 00:00-24:00",
        "app.yaml:7:13: '24:00-08:00' is not a time range; write HH:MM-HH:MM, several separated by commas, "
        'e.g. "08:30-12:00,13:00-17:30" (a range may cross midnight: "20:00-08:00")',
        "app.yaml:8:7: 'wed;thu' is not a day or day range; write e.g. mon-fri, sat (mon, tue, wed, thu, fri, sat, sun)",
    ]


# -- against a slow reference -----------------------------------------------------------------------------
STEP = 5  # minutes: random ranges start and end on these, so 5-minute blocks are wholly open or closed
DAY = 24 * 60


class Reference:
    """Business time by looking at the wall clock every five minutes."""

    def __init__(
        self, week: list[list[tuple[int, int]]], zone: str, holidays: set[date], workdays: set[date]
    ) -> None:
        """``week``: per weekday, ranges as (start, end) in steps of five minutes, as generated."""
        minutes = [[(a * STEP, b * STEP) for a, b in ranges] for ranges in week]
        self.week = [[(a, b if b > a else b + DAY) for a, b in ranges] for ranges in minutes]
        self.zone = ZoneInfo(zone)
        self.holidays, self.workdays = holidays, workdays

    def hours(self, day: date) -> list[tuple[int, int]]:
        own = self.week[day.weekday()]
        if day in self.holidays:
            return []
        if day in self.workdays and not (day.weekday() < 5 and own):
            return next((ranges for ranges in self.week[:5] if ranges), []) or own
        return own

    def is_open(self, t: int) -> bool:
        local = datetime.fromtimestamp(t, self.zone)
        minute, day = local.hour * 60 + local.minute, local.date()
        today = any(a <= minute < b for a, b in self.hours(day))
        return today or any(minute < b - DAY for _, b in self.hours(day - timedelta(days=1)))

    def blocks(self, t: int):
        while True:
            following = (t // (STEP * 60) + 1) * STEP * 60
            yield t, following, self.is_open(t)
            t = following

    def elapsed(self, start: int, end: int) -> int:
        total = 0
        for s, e, is_open in self.blocks(start):
            if s >= end:
                return total
            total += (min(e, end) - s) if is_open else 0
        raise AssertionError  # pragma: no cover

    def add(self, start: int, seconds: int) -> int:
        if seconds == 0:
            return start
        for s, e, is_open in self.blocks(start):
            if is_open:
                if e - s >= seconds:
                    return s + seconds
                seconds -= e - s
        raise AssertionError  # pragma: no cover


def hhmm(step: int) -> str:
    return f"{step * STEP // 60:02d}:{step * STEP % 60:02d}"


ranges = st.tuples(st.integers(0, DAY // STEP - 1), st.integers(0, DAY // STEP)).filter(
    lambda r: r[0] != r[1] % (DAY // STEP)
)
weeks = st.lists(st.lists(ranges, max_size=3), min_size=7, max_size=7).filter(lambda week: any(week))
# Around the changes of clocks in Berlin and New York, and a plain summer week.
starts = st.tuples(
    st.sampled_from(
        [date(2026, 3, 8), date(2026, 3, 29), date(2026, 6, 15), date(2026, 10, 25), date(2026, 11, 1)]
    ),
    st.integers(-3 * 86400, 3 * 86400),
)
zones = st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York"])
offsets = st.lists(st.integers(-2, 12), max_size=3)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(week=weeks, zone=zones, start=starts, holidays=offsets, workdays=offsets, data=st.data())
def test_agrees_with_the_reference(week, zone, start, holidays, workdays, data) -> None:
    base, shift = start
    begin = int(datetime(base.year, base.month, base.day, tzinfo=ZoneInfo(zone)).timestamp()) + shift
    day = datetime.fromtimestamp(begin, ZoneInfo(zone)).date()
    off = {day + timedelta(days=n) for n in holidays}
    worked = {day + timedelta(days=n) for n in workdays} - off
    hours = {
        name: ",".join(f"{hhmm(a)}-{hhmm(b)}" for a, b in r) or "closed"
        for name, r in zip(DAYS, week, strict=True)
    }
    calendar = BusinessCalendar(hours, zone, extra_holidays=[d.isoformat() for d in off],
                                extra_workdays=[d.isoformat() for d in worked])  # fmt: skip
    reference = Reference(week, zone, off, worked)
    weekly = sum((b if b > a else b + DAY // STEP) - a for r in week for a, b in r) * STEP * 60
    seconds = data.draw(st.integers(0, min(weekly * 2, 4 * 86400)), label="seconds")
    span = data.draw(st.integers(0, 4 * 86400), label="span")

    def instant(t: int) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    deadline = calendar.add(instant(begin), seconds)
    assert deadline == instant(reference.add(begin, seconds))
    assert calendar.elapsed(instant(begin), deadline) == seconds
    assert calendar.elapsed(instant(begin), instant(begin + span)) == reference.elapsed(begin, begin + span)
    assert calendar.is_open(instant(begin)) == reference.is_open(begin)
    assert calendar.is_open(instant(begin + span)) == reference.is_open(begin + span)


@settings(max_examples=40, deadline=None)
@given(start=starts, seconds=st.integers(0, 90 * 86400), zone=zones)
def test_elapsed_undoes_add(start, seconds, zone) -> None:
    calendar = BusinessCalendar(
        {"mon-fri": "08:30-12:00,13:00-17:30", "sat": "22:00-02:00"}, zone, holidays="CN"
    )
    base, shift = start
    begin = datetime(base.year, base.month, base.day, tzinfo=UTC) + timedelta(
        seconds=shift, microseconds=shift % 7
    )
    deadline = calendar.add(begin, seconds)
    assert calendar.elapsed(begin, deadline) == seconds
    assert seconds == 0 or calendar.add(begin, seconds - 1) < deadline


@settings(max_examples=30, deadline=None)
@given(start=starts, seconds=st.integers(0, 30 * 86400), span=st.integers(-86400, 30 * 86400))
def test_24x7_is_the_round_the_clock_calendar(start, seconds, span) -> None:
    generic = BusinessCalendar({"mon-sun": "00:00-24:00"}, "Europe/Berlin")
    base, shift = start
    begin = datetime(base.year, base.month, base.day, tzinfo=UTC) + timedelta(seconds=shift)
    always = RoundTheClock()
    assert always.add(begin, seconds) == generic.add(begin, seconds) == begin + timedelta(seconds=seconds)
    end = begin + timedelta(seconds=span)
    assert always.elapsed(begin, end) == generic.elapsed(begin, end) == max(span, 0)
