"""SQLite's checkpoints run in a thread of the writing process, not in a writer's commit
(engine/checkpoints.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from engine import db
from engine.actors import SYSTEM

APP = """
app: shop
entities:
  note:
    fields:
      text: {type: text, required: true}
"""


def _in_database_file(path: Path) -> int:
    """Notes in the database file itself: ``immutable`` reads it without its WAL, so what is
    there was copied by a checkpoint (-1 while one is copying: the read takes no lock)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM shop__note").fetchone()[0]
    except sqlite3.DatabaseError:
        return -1
    finally:
        conn.close()


def _checkpoint_threads(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"kiln-checkpoints {path}"]


def test_committed_pages_reach_the_database_file_while_the_writers_leave_them_in_the_wal(
    write_definitions, open_instance, tmp_path: Path
) -> None:
    path = tmp_path / "shop.db"
    instance = open_instance(write_definitions({"shop/app.yaml": APP}), f"sqlite:///{path}")
    with instance.engine.connect() as conn:  # the migration's pages: copied now, to start clean
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == db.WAL_AUTOCHECKPOINT
    records = instance.records("shop")
    for i in range(20):
        records.create("note", {"text": f"note {i}"}, SYSTEM)
    assert len(_checkpoint_threads(path)) == 1  # started by the first write, once
    deadline = time.monotonic() + 10
    while _in_database_file(path) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    # No connection closed and no writer reached its own threshold: the thread copied them.
    assert _in_database_file(path) == 20
    assert records.get("note", 20, SYSTEM)["text"] == "note 19"


def test_the_thread_ends_with_its_engine_and_a_reused_engine_starts_it_again(write_definitions, open_instance, tmp_path):
    path = tmp_path / "shop.db"
    instance = open_instance(write_definitions({"shop/app.yaml": APP}), f"sqlite:///{path}")
    records = instance.records("shop")
    records.create("note", {"text": "first"}, SYSTEM)
    assert len(_checkpoint_threads(path)) == 1
    instance.engine.dispose()
    assert _checkpoint_threads(path) == []
    records.create("note", {"text": "second"}, SYSTEM)  # a disposed engine can still be used
    assert len(_checkpoint_threads(path)) == 1


def test_an_engine_that_only_reads_starts_no_thread(write_definitions, open_instance, tmp_path) -> None:
    path = tmp_path / "shop.db"
    instance = open_instance(write_definitions({"shop/app.yaml": APP}), f"sqlite:///{path}")
    instance.engine.dispose()  # the migration wrote through this engine: start from none
    assert _checkpoint_threads(path) == []
    assert instance.records("shop").list("note", SYSTEM).items == []
    assert _checkpoint_threads(path) == []
