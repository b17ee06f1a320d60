"""`run.py worker [--queue URL] [--threads N]`: a Huey consumer for the instance's job queue.

Runs the every-minute time scan and the deliveries the web processes enqueue, until stopped
(SIGTERM lets the running task finish; Ctrl+C stops at once, and an interrupted scan's work is
rolled back for the next one). Use it with ``serve --queue redis://...``, one or more per host;
with the default SQLite queue ``serve`` runs its own consumer, and a worker beside it is allowed
but not needed. Several consumers never run one piece of work twice: the scan claims its work in
the database.
"""

from __future__ import annotations

import argparse
import logging
import os

from apps.cli.common import fail
from apps.cli.jobs import open_instance
from engine.jobs import Jobs, QueueError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue",
        default=os.environ.get("KILN_QUEUE") or None,
        help="job queue URL (default: the SQLite queue beside the database)",
    )
    parser.add_argument("--threads", type=int, default=2, help="worker threads (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    instance = open_instance(args)
    if instance is None:
        return 1
    try:
        jobs = Jobs.open(instance, args.queue, args.db).attach()
    except QueueError as exc:
        instance.close()
        return fail(str(exc))
    print(
        f"Kiln worker on {args.queue or 'the SQLite queue'} with {args.threads} thread(s)  (stop with Ctrl+C)",
        flush=True,
    )
    try:
        jobs.consumer(workers=args.threads, embedded=False).run()
    finally:
        instance.close()
    return 0
