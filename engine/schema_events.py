"""The small grammars inside definition values: events, cron schedules (and durations).

``on: field_set(report)``, ``target: 1h30m`` and ``schedule("0 8 * * mon-fri")`` are plain strings
to YAML and Cerberus; these parsers give them meaning, so that :mod:`engine.references` can check
the names they contain and the runtime (rules, SLA, dashboards) reads them the same way.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from engine.expressions.durations import parse_duration  # one reading of durations everywhere

__all__ = ["DURATION_HELP", "RULE_EVENTS", "SLA_EVENTS", "Event", "cron_problem", "parse_duration", "parse_event"]

# Events a rule's ``on:`` may name; the argument says what kind of name goes in the parentheses.
RULE_EVENTS: dict[str, str | None] = {
    "created": None,
    "updated": None,
    "field_set": "field",
    "entered": "state",
    "left": "state",
    "transition": "transition",
    "approved": "approval",
    "schedule": "cron",
}
# Events that can start or stop an SLA clock (one record's own history; no schedules).
SLA_EVENTS = ("created", "entered", "left", "transition", "field_set", "approved")

_EVENT = re.compile(r"^\s*([a-z_]+)\s*(?:\(\s*(.*?)\s*\))?\s*$")


@dataclass(frozen=True)
class Event:
    kind: str
    arg: str | None = None

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}({self.arg})"


def parse_event(text: str) -> Event | str:
    """An Event, or a message saying why ``text`` is not one."""
    match = _EVENT.match(text)
    forms = "created, updated, field_set(F), entered(S), left(S), transition(T), approved(A) or schedule(\"cron\")"
    if not match:
        return f"'{text}' is not an event; write one of {forms}"
    kind, arg = match.group(1), match.group(2)
    if kind not in RULE_EVENTS:
        close = difflib.get_close_matches(kind, RULE_EVENTS, n=1)
        return f"unknown event '{kind}'" + (f"; did you mean '{close[0]}'?" if close else f"; write one of {forms}")
    needs = RULE_EVENTS[kind]
    if needs is None and arg is not None:
        return f"event '{kind}' takes no argument"
    if needs is not None and not arg:
        return f"event '{kind}' needs a {needs}: {kind}(...)"
    if needs == "cron":
        if len(arg) < 2 or arg[0] != arg[-1] or arg[0] not in "\"'":
            return f'write the schedule in quotes: schedule("{arg.strip(chr(34) + chr(39))}")'
        arg = arg[1:-1]
    return Event(kind, arg)


DURATION_HELP = "write e.g. 30m, 2h, 1h30m or 7d"

_CRON_FIELDS = (
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
    for text, (name, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
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
