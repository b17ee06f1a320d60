"""Cron schedules (``schedule("0 8 * * mon-fri")``): checking one, and matching a local time.

Five fields, minute hour day-of-month month day-of-week, each ``*``, a value, a range, a list,
with ``/step``; months and weekdays also by name. As in cron, when both day fields are
restricted a day matching either one matches.
"""

from __future__ import annotations

import datetime as dt

CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a 5-field cron schedule, or None when it is one."""
    parts = expression.split()
    if len(parts) != 5:
        return f"'{expression}' is not a cron schedule: it needs 5 fields (minute hour day month weekday), e.g. \"0 8 * * mon-fri\""
    for text, (name, low, high, names) in zip(parts, CRON_FIELDS, strict=True):
        for item in text.split(","):
            problem = _cron_item(item.lower(), low, high, names)
            if problem:
                return f"cron {name} '{text}': {problem}"
    return None


def _cron_item(item: str, low: int, high: int, names: dict[str, int]) -> str | None:
    body, _, step = item.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return f"step '/{step}' must be a positive number"
    if body == "*":
        return None
    bounds = body.split("-")
    if len(bounds) > 2:
        return f"'{body}' is not a value or a range"
    values = []
    for bound in bounds:
        value = names.get(bound, int(bound) if bound.isdigit() else None)
        if value is None or not low <= value <= high:
            return f"'{bound}' is not between {low} and {high}" + (f" (or {', '.join(names)})" if names else "")
        values.append(value)
    if len(values) == 2 and values[0] > values[1]:
        return f"range '{body}' runs backwards"
    return None


def cron_sets(expression: str) -> list[set[int]]:
    """The 5 fields of a cron schedule (already checked by ``run.py check``) as sets of values."""
    sets = []
    for text, (_, low, high, names) in zip(expression.split(), CRON_FIELDS, strict=True):
        values: set[int] = set()
        for item in text.lower().split(","):
            body, _, step = item.partition("/")
            if body == "*":
                start, stop = low, high
            else:
                bounds = [names.get(b, int(b) if b.isdigit() else low) for b in body.split("-")]
                start, stop = bounds[0], bounds[-1] if len(bounds) > 1 or not step else high  # "5/15": from 5 on
            values.update(range(start, stop + 1, int(step or 1)))
        sets.append(values)
    if 7 in sets[4]:  # Sunday is 0 or 7
        sets[4].add(0)
    return sets


def cron_matches(sets: list[set[int]], expression: str, local: dt.datetime) -> bool:
    minute, hour, day, month, weekday = sets
    if local.minute not in minute or local.hour not in hour or local.month not in month:
        return False
    day_field, weekday_field = expression.split()[2:5:2]
    day_ok, weekday_ok = local.day in day, (local.weekday() + 1) % 7 in weekday
    if day_field != "*" and weekday_field != "*":  # cron: either of two restricted day fields
        return day_ok or weekday_ok
    return day_ok and weekday_ok
