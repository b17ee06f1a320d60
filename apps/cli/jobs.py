"""`run.py jobs run-due [--now ISO8601] [--json]`: the time scan, run once, synchronously.

Runs exactly the code of the every-minute job (engine/scan.py) at ``--now`` (default: the current
time): SLA breaches and escalations, scheduled rules, then delivery of the outbox; prints what it
did, one line per thing. The SLA arithmetic treats ``--now`` as the current time. Running it twice
at the same instant does nothing the second time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from apps.cli.common import fail, print_problems, subcommand_options
from engine import migrations, scan
from engine.errors import DefinitionError
from engine.instance import Instance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="run-due")
    due = sub.add_parser(
        "run-due", help="run all time-driven work due at an instant", description=__doc__.split("\n\n")[1]
    )
    subcommand_options(due)
    due.add_argument(
        "--now",
        default=None,
        help="the instant, ISO 8601 with an offset (e.g. 2026-03-06T09:30:00+08:00); default: now",
    )
    due.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_now(text: str | None) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC)
    try:
        now = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--now '{text}' is not an ISO 8601 instant; write e.g. 2026-03-06T09:30:00+08:00"
        ) from None
    if now.tzinfo is None:
        raise ValueError(f"--now '{text}' has no UTC offset; write e.g. {text}+08:00 or {text}Z")
    return now


def open_instance(args: argparse.Namespace) -> Instance | None:
    """The instance of ``--definitions`` and ``--db``, or None after saying why it cannot run
    (definition errors, or database changes not applied yet)."""
    try:
        instance = Instance.open(args.definitions, args.db)
    except DefinitionError as exc:
        print_problems(exc, args.definitions)
        return None
    pending = migrations.pending(instance.engine, instance.compiled)
    if pending is not None:
        instance.close()
        print(pending.render(), file=sys.stderr)
        fail(migrations.START_HINT)
        return None
    return instance


def run(args: argparse.Namespace) -> int:
    try:
        now = parse_now(args.now)
    except ValueError as exc:
        return fail(str(exc))
    instance = open_instance(args)
    if instance is None:
        return 1
    try:
        report = scan.run_due(instance, now)
    finally:
        instance.close()
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        for line in report.lines():
            print(line)
    return 1 if report.errors else 0
