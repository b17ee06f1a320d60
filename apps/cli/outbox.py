"""`run.py outbox [--json] [--status S] [--limit N] [--retry ID | --deliver] [--now ISO]`.

Without an action: the outbox rows newest first (id, status, attempts, channel, recipient, record,
next attempt, last error), ``--status`` to see one status only, ``--json`` as JSON lines' list.
``--retry ID`` queues a failed (or waiting) row again, due now, attempts counted afresh.
``--deliver`` runs one delivery batch now (engine.delivery.deliver_due: what the job runs) and
prints what it did. ``--now`` gives the instant for both (ISO 8601), as ``jobs run-due --now`` does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from apps.cli.common import fail, open_database, print_problems
from engine import delivery, outbox
from engine.accounts import tables
from engine.db import read, write
from engine.errors import DefinitionError
from engine.instance import Instance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=outbox.STATUSES, help="only rows with this status")
    parser.add_argument("--limit", type=int, default=50, help="rows to list (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--retry", type=int, metavar="ID", help="queue a failed row again, due now")
    action.add_argument(
        "--deliver", action="store_true", help="deliver the due rows now (one batch) and say what happened"
    )
    parser.add_argument("--now", help="the instant for --deliver and --retry (ISO 8601, default: now)")


def run(args: argparse.Namespace) -> int:
    now = dt.datetime.now(dt.UTC)
    if args.now:
        try:
            now = dt.datetime.fromisoformat(args.now)
        except ValueError:
            return fail(
                f"--now {args.now!r} is not an ISO 8601 date and time, e.g. 2026-03-04T10:00:00+08:00"
            )
        now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    if args.deliver:
        return _deliver(args, now)
    engine = open_database(args.db)
    if engine is None:
        return 1
    table = tables()["kiln_outbox"]
    try:
        if args.retry is not None:
            with write(engine) as conn:
                if not outbox.retry(conn, table, args.retry, now):
                    return fail(
                        f"no failed or waiting outbox row {args.retry} (see: python run.py outbox --status failed)"
                    )
            print(
                f"outbox row {args.retry} queued again; it goes with the next delivery (python run.py outbox --deliver)"
            )
            return 0
        with read(engine) as conn:
            rows = outbox.rows(conn, table, args.status, None, max(1, args.limit))
            names = outbox.recipient_names(conn, tables()["kiln_users"], rows)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([_json(r, names) for r in rows], ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no outbox rows" + (f" with status {args.status}" if args.status else ""))
        return 0
    for r in rows:
        when = (
            f" next {r['next_attempt_at']:%Y-%m-%d %H:%M:%S}"
            if r["next_attempt_at"] and r["status"] != outbox.SENT
            else ""
        )
        sent = f" sent {r['sent_at']:%Y-%m-%d %H:%M:%S}" if r["sent_at"] else ""
        print(
            f"{r['id']:>6} {r['status']:<8} {r['attempts']:>2} {r['channel']:<9} {_recipient(r, names)} "
            f"{_record(r)}{when}{sent}"
        )
        if r["last_error"]:
            print(f"{'':>6} error: {r['last_error']}")
    return 0


def _deliver(args: argparse.Namespace, now: dt.datetime) -> int:
    try:
        instance = Instance.open(args.definitions, args.db)
    except DefinitionError as exc:
        print_problems(exc, args.definitions)
        return 1
    try:
        stats = delivery.deliver_due(instance, now)
    finally:
        instance.close()
    print(
        f"claimed {stats.claimed}: sent {stats.sent}, to retry {stats.retried}, failed {stats.failed}"
        + (f", given back {stats.released}" if stats.released else "")
    )
    return 0


def _recipient(row: dict[str, Any], names: dict[int, str]) -> str:
    recipient = str(row["recipient"])
    return names.get(int(recipient), f"user {recipient}") if recipient.isdigit() else recipient


def _record(row: dict[str, Any]) -> str:
    return f"{row['app']}/{row['entity']}" + (f"/{row['record_id']}" if row["record_id"] is not None else "")


def _json(row: dict[str, Any], names: dict[int, str]) -> dict[str, Any]:
    out = {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}
    out["recipient_name"] = _recipient(row, names)
    return out
