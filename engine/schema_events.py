"""The small grammars inside definition values: events, cron schedules (and durations).

``on: field_set(report)``, ``target: 1h30m`` and ``schedule("0 8 * * mon-fri")`` are plain strings
to YAML and Cerberus; these parsers give them meaning, so that :mod:`engine.references` can check
the names they contain and the runtime (rules, SLA, dashboards) reads them the same way.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from engine.cron import cron_problem
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
