"""Record creates per second through the service: each its own transaction, with validation,
numbering and audit (target: at least 1,000 per second on SQLite)."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

from benchmarks.common import TICKET_APP, Result, write_app
from benchmarks.databases import fresh_database
from engine import migrations
from engine.actors import SYSTEM
from engine.instance import Instance


def measure(url: str, definitions: Path, count: int) -> float:
    instance = Instance.open(definitions, url, env={})
    try:
        migrations.apply(instance.engine, instance.compiled)
        records = instance.records("bench")
        device = records.create("device", {"code": "D-1", "name": "灌装机", "line": "a"}, SYSTEM)
        values = {"summary": "轴承异响，停机风险", "device": device["id"], "category": "mechanical", "est_cost": "120.50"}
        for _ in range(50):  # warm caches and the connection pool
            records.create("ticket", values, SYSTEM)
        start = time.perf_counter()
        for _ in range(count):
            records.create("ticket", values, SYSTEM, now=dt.datetime.now(dt.UTC))
        return count / (time.perf_counter() - start)
    finally:
        instance.close()


def run(options: dict) -> list[Result]:
    results = []
    count = int(options.get("creates", 3000))
    with tempfile.TemporaryDirectory() as tmp:
        definitions = write_app(Path(tmp) / "definitions", TICKET_APP)
        for backend in ("sqlite", "postgresql"):
            with fresh_database(backend, Path(tmp), options) as url:
                if url is None:
                    results.append(Result(f"creates/s through the service, {backend}", 0, "skipped", note="no server"))
                    continue
                rate = measure(url, definitions, count)
                target = ">= 1,000/s" if backend == "sqlite" else ""
                results.append(Result(f"creates/s through the service ({count} creates), {backend}", rate, "creates/s", target))
    return results
