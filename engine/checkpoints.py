"""SQLite checkpoints in the background, so that no writer waits for one.

In WAL mode a commit appends the pages it changed to the WAL file; a checkpoint copies them back
into the database file and fsyncs it. SQLite runs a checkpoint inside the commit that takes the
WAL past ``wal_autocheckpoint`` pages: inside that writer's transaction, and so inside Kiln's
write lock (:class:`engine.db.WriteLock`). Over a million tickets such a checkpoint copies a few
hundred scattered index pages and waits 30-50 ms for their fsync, while every other writer of
every process queues behind it; a ticket with rules dirties more of those pages (the count's
index, the tags' index) and paid for more of these waits (docs/benchmarks.md).

Here each process that writes to a SQLite file runs one thread with a connection of its own,
which checkpoints every half second in ``PASSIVE`` mode: it copies the pages no reader still
needs and blocks neither readers nor writers. The writers' own checkpoints stay as the backstop
(:data:`engine.db.WAL_AUTOCHECKPOINT` pages): under sustained writes they still restart the WAL,
finding most of it copied already. Durability is SQLite's ``synchronous=NORMAL`` either way.
"""

from __future__ import annotations

import os
import sqlite3
import threading

INTERVAL = 0.5  # seconds between two checkpoints of one process


class Checkpointer:
    """The checkpointing thread of one database file in this process: started by a write
    transaction (:meth:`start`), stopped when its engine is disposed (:meth:`stop`; an engine used
    again after that starts it again)."""

    def __init__(self, database: str, interval: float = INTERVAL) -> None:
        self.database = database
        self.interval = interval
        self._guard = threading.Lock()
        self._pid: int | None = None  # the process the thread runs in, None when it does not
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Start the thread unless it runs; cheap enough to call at every write transaction."""
        if self._pid == os.getpid():
            return
        with self._guard:
            if self._pid == os.getpid():
                return
            # A forked child inherits the object but not the thread: it starts its own.
            self._pid, self._stopping = os.getpid(), threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stopping,), name=f"kiln-checkpoints {self.database}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._guard:
            if self._pid != os.getpid() or self._thread is None:
                return
            self._pid = None
            self._stopping.set()
            thread = self._thread
        thread.join(timeout=10)

    def _run(self, stopping: threading.Event) -> None:
        try:
            conn = sqlite3.connect(self.database, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:  # the file went away before the first turn
            return
        try:
            conn.execute("PRAGMA busy_timeout=0")  # another process's checkpoint runs: skip this turn
            while not stopping.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # busy, or the file is being replaced: the next turn tries again
                    continue
        finally:
            conn.close()
