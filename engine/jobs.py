"""The job queue: Huey, with the time scan every minute and delivery after commits (docs/sla.md).

One :class:`Jobs` per instance holds a Huey of its own and two tasks:

- ``kiln_scan``, periodic every minute: :func:`engine.scan.run_due` at the current time (SLA
  clocks, scheduled rules, delivery). Safe to run in several consumers at once: the scan claims
  its work in the database.
- ``kiln_deliver``: :func:`engine.scan.deliver`, enqueued after each commit that queued
  notifications (:meth:`Jobs.attach` hooks the records service), so they leave within seconds
  rather than at the next minute.

The queue (``--queue URL``): by default SQLite, a file beside the SQLite database
(``data/kiln.db`` -> ``data/kiln-jobs.db``; ``data/kiln-jobs.db`` for a PostgreSQL database), with
the consumer inside ``run.py serve``; or Redis (``redis://host:port/db``), whose consumers are
``run.py worker`` processes. The queue is named after the database URL, so instances sharing a
Redis server (or a queue file) do not share jobs. ``memory:`` is an in-process queue for tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path

from huey import MemoryHuey, RedisHuey, SqliteHuey, crontab
from huey.api import Huey
from huey.consumer import Consumer
from sqlalchemy.engine import make_url

from engine import scan
from engine.db import normalise_url
from engine.instance import Instance

log = logging.getLogger(__name__)

JOBS_FILE_SUFFIX = "-jobs.db"
DEFAULT_JOBS_FILE = Path("data") / "kiln-jobs.db"
SHUTDOWN_TIMEOUT = 30.0  # seconds a stopping consumer waits for the task it runs
POLL = 2.0  # seconds between polls of an idle SQLite queue, at most


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class QueueError(ValueError):
    """A queue URL that names no queue Kiln knows."""


def default_queue(db_url: str) -> str:
    """The SQLite queue beside a SQLite database (or in ``data/`` for another database)."""
    url = make_url(normalise_url(db_url))
    database = url.database or ""
    if (
        url.get_backend_name() == "sqlite"
        and database
        and database != ":memory:"
        and not database.startswith("file:")
    ):
        path = Path(database)
        return f"sqlite:///{path.with_name(path.stem + JOBS_FILE_SUFFIX)}"
    return f"sqlite:///{DEFAULT_JOBS_FILE}"


def queue_name(db_url: str) -> str:
    """The queue's name, after the database: instances sharing a Redis server (or a queue file)
    never take each other's jobs."""
    return "kiln." + hashlib.sha256(normalise_url(db_url).encode()).hexdigest()[:12]


def make_huey(queue_url: str | None, db_url: str) -> Huey:
    """The Huey of a queue URL: ``sqlite:///FILE`` (default: :func:`default_queue`),
    ``redis://...`` / ``rediss://...``, or ``memory:``."""
    url = queue_url or default_queue(db_url)
    name = queue_name(db_url)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name=name, filename=str(path), results=False)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(name=name, url=url, results=False)
    if url == "memory:":
        return MemoryHuey(name=name, results=False)
    raise QueueError(f"unknown queue '{url}'; use sqlite:///FILE, redis://HOST:PORT/DB or memory:")


class EmbeddedConsumer(Consumer):
    """A consumer that leaves the process's signals alone: inside ``serve`` the web server owns
    them and stops the consumer itself."""

    def _set_signal_handlers(self) -> None:
        pass


class Jobs:
    """The Huey of one instance with Kiln's tasks registered on it."""

    def __init__(self, instance: Instance, huey: Huey) -> None:
        self.instance = instance
        self.huey = huey
        self.scan = huey.periodic_task(crontab(minute="*"), name="kiln_scan")(self.run_scan)
        self.deliver = huey.task(name="kiln_deliver")(self.run_delivery)

    @classmethod
    def open(cls, instance: Instance, queue_url: str | None, db_url: str) -> Jobs:
        return cls(instance, make_huey(queue_url, db_url))

    @property
    def embedded(self) -> bool:
        """True for the queues whose consumer runs inside ``serve`` (SQLite, memory)."""
        return not isinstance(self.huey, RedisHuey)

    # -- the tasks -----------------------------------------------------------------------------

    def run_scan(self) -> scan.Report:
        report = scan.run_due(self.instance, utcnow())
        if report.did_something or report.errors:
            for line in report.lines():
                log.info("%s", line)
        return report

    def run_delivery(self) -> dict[str, int]:
        return scan.deliver(self.instance, utcnow())

    # -- producing -----------------------------------------------------------------------------

    def attach(self) -> Jobs:
        """Wake the deliverer after every commit that queued notifications."""
        self.instance.outbox_listeners.append(self.wake_deliverer)
        return self

    def wake_deliverer(self) -> None:
        try:
            self.deliver()
        except Exception:  # noqa: BLE001 - the change is committed; the minute scan delivers anyway
            log.exception("could not enqueue the delivery job; the next scan delivers")

    # -- consuming -----------------------------------------------------------------------------

    def consumer(self, workers: int = 1, embedded: bool = True, periodic: bool = True) -> Consumer:
        """A thread consumer (with the minute scan unless ``periodic`` is off); ``embedded``
        leaves signals alone."""
        kind = EmbeddedConsumer if embedded else Consumer
        # SIGTERM (a service manager's stop) lets the running task finish; Ctrl+C stops at once
        # (an interrupted scan's transaction rolls back, and the next scan does its work). An idle
        # SQLite queue is polled at least every POLL seconds, so a delivery job waits no longer.
        return kind(
            self.huey, workers=workers, periodic=periodic, worker_type="thread", max_delay=POLL,
            shutdown_timeout=SHUTDOWN_TIMEOUT, graceful_signal="TERM",
        )  # fmt: skip

    def start(self, workers: int = 1, periodic: bool = True) -> Consumer:
        """Start a consumer in threads of this process (``serve`` with the SQLite queue)."""
        consumer = self.consumer(workers, periodic=periodic)
        consumer.start()
        return consumer

    def stop(self, consumer: Consumer) -> None:
        """Stop a started consumer, letting the task it runs finish."""
        consumer.stop(graceful=True)
        self.huey.notify_interrupted_tasks()
