"""`run.py serve [--host H] [--port P] [--workers N] [--queue URL] [--first-run]`, and `python run.py` alone.

``python run.py`` with no arguments is ``serve --first-run``: on a fresh instance (no app folder
in the definitions folder) it installs the service-ticket pack with its demo data, creates the
tables and an ``admin`` user whose generated password is printed once (stored only as a hash),
then serves. Later runs say that the admin exists and how to reset its password.

The server refuses to start while the definitions have database changes that are not applied
(it prints the plan and ``python run.py migrate``), and on definition errors (FILE:LINE:COL,
exit 1). Only the first run migrates by itself: later schema changes are the operator's call.

Jobs (engine/jobs.py): with the default SQLite queue the consumer that runs the minute scan and
the deliveries runs in threads of this process; with ``--queue redis://...`` the web processes
only enqueue, and ``run.py worker`` processes consume.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import uvicorn

from apps.cli.common import fail, print_problems
from apps.cli.market import migrate_and_load_demo, print_demo
from engine import accounts, migrations, packs
from engine.errors import DefinitionError
from engine.instance import Instance
from engine.jobs import Jobs, QueueError
from engine.loader import app_folders

FIRST_PACK = "service_ticket"
ADMIN = "admin"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="web processes (default: %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("KILN_THREADS") or 2),
        help="requests a web process works on at once (default: %(default)s; more only helps when the database is remote)",
    )  # fmt: skip
    parser.add_argument(
        "--access-log", action="store_true", default=os.environ.get("KILN_ACCESS_LOG") == "1",
        help="log every request to stdout (off by default: it cost a fifth of a list page's time; changes are in the audit trail)",
    )  # fmt: skip
    parser.add_argument(
        "--queue", default=os.environ.get("KILN_QUEUE") or None,
        help="job queue URL: default the SQLite queue beside the database, with its consumer in this process; "
        "redis://HOST:PORT/DB for `run.py worker` consumers",
    )  # fmt: skip
    parser.add_argument(
        "--first-run", action="store_true",
        help="on a fresh instance install the service-ticket pack with demo data and an admin user (what `python run.py` does)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    definitions = Path(args.definitions)
    fresh = args.first_run and not app_folders(definitions)
    if fresh and not first_install(args):
        return 1
    try:
        instance = Instance.open(definitions, args.db)
    except DefinitionError as exc:
        print_problems(exc, args.definitions)
        return 1
    try:
        pending = migrations.pending(instance.engine, instance.compiled)
        if pending is not None:
            print(pending.render(), file=sys.stderr)
            return fail(migrations.START_HINT)
        if not instance.compiled.apps:
            print(f"no apps in {definitions}; install one: python run.py market install {FIRST_PACK} --demo", flush=True)
        if args.first_run:
            ensure_admin(instance)
    except BaseException:
        instance.close()
        raise
    try:
        jobs = Jobs.open(instance, args.queue, args.db).attach()
    except QueueError as exc:
        instance.close()
        return fail(str(exc))
    url = f"http://{args.host}:{args.port}/"
    # The survey links in notifications (engine/surveys.py) point here unless KILN_BASE_URL says
    # where users reach this server (a proxy, a domain name): it is read by every process.
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    os.environ.setdefault("KILN_BASE_URL", f"http://{shown}:{args.port}")
    print(f"Kiln is serving {url}  (stop with Ctrl+C)", flush=True)
    if args.first_run:
        print(f"log in at {url}login as {ADMIN}, or as a demo user", flush=True)
    # With the SQLite queue the consumer (the minute scan, deliveries) runs in threads here,
    # started before the server and stopped after it, letting a running task finish. uvicorn
    # raises the stop signal again once it has shut down; as an exception here it lets the
    # consumer stop too, instead of ending the process in the middle of a task.
    consumer = jobs.start() if jobs.embedded else None
    previous = signal.signal(signal.SIGTERM, _stopped)
    os.environ["KILN_THREADS"] = str(args.threads)
    try:
        if args.workers > 1:
            # Each worker process builds its own app from the environment (see apps.web.app_from_env).
            os.environ["KILN_DB"], os.environ["KILN_DEFINITIONS"] = args.db, str(definitions)
            os.environ["KILN_QUEUE"] = args.queue or ""
            uvicorn.run(
                "apps.web:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
                access_log=args.access_log,
            )  # fmt: skip
            return 0
        from apps.web import create_app

        uvicorn.run(create_app(instance), host=args.host, port=args.port, access_log=args.access_log)
        return 0
    except Stopped:
        return 0
    finally:
        if consumer is not None:
            jobs.stop(consumer)
        instance.close()
        signal.signal(signal.SIGTERM, previous)


class Stopped(Exception):
    """SIGTERM, after the web server has shut down."""


def _stopped(signum: int, frame: object) -> None:
    raise Stopped()


def first_install(args: argparse.Namespace) -> bool:
    print(f"fresh instance: installing the {FIRST_PACK} pack with demo data into {args.definitions}", flush=True)
    try:
        done = packs.install(FIRST_PACK, Path(args.definitions))
    except packs.PackError as exc:
        fail(str(exc))
        return False
    result = migrate_and_load_demo(args.definitions, args.db, done)
    if result is None:
        return False
    print_demo(result)
    return True


def ensure_admin(instance: Instance) -> None:
    """Create the ``admin`` user when the instance has no administrator yet."""
    if accounts.admin_exists(instance.engine):
        print(f"an admin user exists; to reset its password: python run.py user add {ADMIN} --admin --password NEW", flush=True)
        return
    _, password = accounts.add_user(instance.engine, ADMIN, None, admin=True, display_name="Administrator")
    print(f"created the instance administrator: user {ADMIN}, password {password}", flush=True)
    print("  (shown once and stored only as a hash; reset it with: python run.py user add admin --admin --password NEW)", flush=True)
