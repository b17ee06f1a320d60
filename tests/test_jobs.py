"""The time scan and the job queue (engine/scan.py, engine/jobs.py): ``run.py jobs run-due`` as a
command, scheduled rules once per instant (also after downtime and with two scans at once), the
Huey consumer really running the scan and the deliveries on SQLite and on Redis, ``run.py worker``,
and a served instance whose own consumer escalates a due clock."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from engine import jobs, scan
from engine.actors import Actor
from engine.instance import Instance
from tests.conftest import add_user
from tests.test_serve import ROOT, serve, stop, wait_healthy

SH = ZoneInfo("Asia/Shanghai")
REDIS = "redis://127.0.0.1:6379/15"
APP = """
app: ops
timezone: Asia/Shanghai
roles: {agent: {label: 坐席}}
entities:
  ticket:
    label: 工单
    number: "T{seq:4}"
    fields:
      summary: {type: text, required: true}
      reminders: {type: integer, default: 0}
    workflow:
      initial: pending
      states: {pending: {label: 待受理}, done: {label: 已完成, final: true}}
      transitions: {finish: {from: pending, to: done}}
    permissions:
      agent: {create: true, read: all, update: all}
    rules:
      - name: 受理通知
        on: created
        when: contains(summary, "通知")
        do: [{notify: {to: created_by, channels: [in_app]}}]
      - name: 每日催办
        on: schedule("0 9 * * *")
        when: state == "pending"
        do: [{set: {reminders: reminders + 1}}]
    sla:
      - name: pending_15m
        start: created
        stop: left(pending)
        target: 15m
        escalations:
          - after: 15m
            do: [{mark: red}, {notify: {to: created_by, channels: [in_app]}}]
      - name: doomed                              # its escalation always fails (summary is required)
        applies_if: contains(summary, "失败")
        start: created
        stop: left(pending)
        target: 1h
        escalations:
          - after: 10m
            do: [{set: {summary: ""}}]
"""


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SH)


@pytest.fixture
def ops(db_url, write_definitions, open_instance) -> Instance:
    instance = open_instance(write_definitions({"ops/app.yaml": APP}), db_url)
    add_user(instance, "amy", "ops", ["agent"])
    return instance


def create(instance: Instance, at: dt.datetime, summary: str = "门禁坏了") -> dict:
    actor = Actor(1, "amy", roles=frozenset({"agent"}))
    return instance.records("ops").create("ticket", {"summary": summary}, actor, at)


def get(instance: Instance, record_id: int) -> dict:
    return instance.records("ops").get("ticket", record_id, Actor(1, "amy", roles=frozenset({"agent"})))


def notified(instance: Instance) -> int:
    table = instance.schema.system["kiln_notifications"]
    with instance.engine.connect() as conn:
        return len(conn.execute(select(table.c.id)).all())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def wait_for(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


# -- run-due -----------------------------------------------------------------------------------


def test_run_due_command_prints_what_it_did_and_does_nothing_twice(ops: Instance, db_url: str):
    ticket = create(ops, local(2026, 3, 4, 10, 0))
    definitions = str(ops.definitions)
    args = ("jobs", "run-due", "--db", db_url, "--definitions", definitions)
    early = run_cli(*args, "--now", "2026-03-04T10:10:00+08:00")
    assert early.returncode == 0, early.stderr
    assert "sla:" not in early.stdout
    first = run_cli(*args, "--now", "2026-03-04T10:15:00+08:00")
    assert first.returncode == 0, first.stderr
    assert (
        f"sla: ops/ticket {ticket['id']} pending_15m breached (due 2026-03-04T02:15:00+00:00)" in first.stdout
    )
    assert f"sla: ops/ticket {ticket['id']} pending_15m level 1" in first.stdout
    assert "delivery: claimed 1, sent 1" in first.stdout
    again = run_cli(*args, "--now", "2026-03-04T10:15:00+08:00", "--json")
    report = json.loads(again.stdout)
    assert (report["sla"], report["scheduled"], report["delivered"]["claimed"]) == ([], [], 0)
    assert "red" in get(ops, ticket["id"])["flags"]
    bad = run_cli(*args, "--now", "2026-03-04 10:15")
    assert bad.returncode == 1 and "no UTC offset" in bad.stderr


def test_scheduled_rules_run_once_per_instant_and_catch_up_after_downtime(ops: Instance):
    ticket = create(ops, local(2026, 3, 4, 8, 0))
    scan.run_due(ops, local(2026, 3, 4, 8, 59, 30))  # the first scan: only its own minute
    report = scan.run_due(ops, local(2026, 3, 4, 9, 0))
    assert [(s.rule, s.at, s.records) for s in report.scheduled] == [("每日催办", local(2026, 3, 4, 9, 0), 1)]
    assert scan.run_due(ops, local(2026, 3, 4, 9, 0)).scheduled == []
    assert scan.run_due(ops, local(2026, 3, 4, 9, 30)).scheduled == []
    assert get(ops, ticket["id"])["reminders"] == 1
    report = scan.run_due(ops, local(2026, 3, 7, 9, 30))  # down for three days: each 09:00 once
    assert [s.at for s in report.scheduled] == [local(2026, 3, d, 9, 0) for d in (5, 6, 7)]
    assert scan.run_due(ops, local(2026, 3, 6, 9, 0)).scheduled == []  # an earlier --now: nothing twice
    history = ops.records("ops").history("ticket", ticket["id"], Actor(1, "amy", roles=frozenset({"agent"})))
    assert [e["rule"] for e in history if e["action"] == "update"] == ["每日催办"] * 4
    assert get(ops, ticket["id"])["reminders"] == 4


def test_two_scans_at_once_fire_each_level_and_each_schedule_once(ops: Instance):
    tickets = [create(ops, local(2026, 3, 4, 8, 0) + dt.timedelta(seconds=i)) for i in range(25)]
    scan.run_due(ops, local(2026, 3, 4, 8, 0))  # the first scan, so the window below is (08:00, 09:05]
    reports: list[scan.Report] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            reports.append(scan.run_due(ops, local(2026, 3, 4, 9, 5)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(r.errors == [] for r in reports)
    fired = [(f.record_id, f.what) for r in reports for f in r.fired]
    assert sorted(fired) == sorted((t["id"], what) for t in tickets for what in ("breached", "level 1"))
    assert [(s.rule, s.records) for r in reports for s in r.scheduled] == [("每日催办", 25)]
    outbox = ops.schema.system["kiln_outbox"]
    with ops.engine.connect() as conn:
        assert len(conn.execute(select(outbox.c.id).where(outbox.c.event_key.like("%/sla:%"))).all()) == 25
    assert {get(ops, t["id"])["reminders"] for t in tickets} == {1}


def test_a_clock_whose_actions_fail_is_set_aside_and_the_others_fire(ops: Instance):
    good = [create(ops, local(2026, 3, 4, 8, 0)) for _ in range(3)]
    bad = create(ops, local(2026, 3, 4, 8, 0), summary="注定失败")
    report = scan.run_due(ops, local(2026, 3, 4, 8, 20))
    assert len(report.errors) == 1 and "doomed" in report.errors[0] and "summary" in report.errors[0]
    assert sorted(f.record_id for f in report.fired if f.what == "level 1") == sorted(
        [t["id"] for t in good] + [bad["id"]]
    )
    assert get(ops, bad["id"])["summary"] == "注定失败"  # the failed action changed nothing
    clocks = ops.schema.system["kiln_sla_clocks"]
    with ops.engine.connect() as conn:
        retry = conn.execute(select(clocks.c.next_check_at).where(clocks.c.name == "doomed")).scalar_one()
    assert retry == local(2026, 3, 4, 8, 25)  # looked at again 5 minutes later
    again = scan.run_due(ops, local(2026, 3, 4, 8, 25))
    assert len(again.errors) == 1 and again.fired == []  # still failing, still alone


# -- the queue ---------------------------------------------------------------------------------


def test_queue_urls(tmp_path: Path):
    assert jobs.default_queue(f"sqlite:///{tmp_path}/kiln.db") == f"sqlite:///{tmp_path}/kiln-jobs.db"
    assert jobs.default_queue("postgresql://db.example/kiln") == "sqlite:///data/kiln-jobs.db"
    huey = jobs.make_huey(None, f"sqlite:///{tmp_path}/kiln.db")
    assert huey.storage.filename == f"{tmp_path}/kiln-jobs.db"
    assert jobs.queue_name(f"sqlite:///{tmp_path}/a.db") != jobs.queue_name(f"sqlite:///{tmp_path}/b.db")
    assert jobs.make_huey("memory:", f"sqlite:///{tmp_path}/a.db").name == jobs.queue_name(
        f"sqlite:///{tmp_path}/a.db"
    )
    with pytest.raises(jobs.QueueError, match="unknown queue 'amqp://x'"):
        jobs.make_huey("amqp://x", f"sqlite:///{tmp_path}/a.db")


def redis_available() -> bool:
    try:
        import redis

        client = redis.Redis.from_url(REDIS)
        client.ping()
        client.flushdb()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - no server here: the Redis tests skip
        return False


@pytest.fixture(params=["sqlite", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        if not redis_available():
            pytest.skip("no Redis server at 127.0.0.1:6379")
        return REDIS
    return f"sqlite:///{tmp_path}/queue/kiln-jobs.db"


def test_the_consumer_runs_the_minute_scan(ops: Instance, db_url: str, queue: str):
    """A ticket 20 minutes old is due: the consumer's first periodic scan escalates it."""
    ticket = create(ops, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20))
    runner = jobs.Jobs.open(ops, queue, db_url).attach()
    consumer = runner.start()
    try:
        wait_for(lambda: "red" in get(ops, ticket["id"])["flags"])
        wait_for(lambda: notified(ops) == 1)  # delivered by the same scan
    finally:
        runner.stop(consumer)
    assert get(ops, ticket["id"])["sla"][0]["breached_at"] is not None


def test_a_commit_that_queued_notifications_wakes_the_deliverer(ops: Instance, db_url: str, queue: str):
    runner = jobs.Jobs.open(ops, queue, db_url).attach()
    consumer = runner.start(periodic=False)  # no minute scan: only the delivery job can send it
    try:
        create(ops, dt.datetime.now(dt.UTC), summary="请通知我")
        wait_for(lambda: notified(ops) == 1)
        create(ops, dt.datetime.now(dt.UTC), summary="安静")  # nothing queued: no job
    finally:
        runner.stop(consumer)
    assert runner.huey.pending_count() == 0


def test_worker_command_consumes_the_redis_queue(ops: Instance, db_url: str):
    if not redis_available():
        pytest.skip("no Redis server at 127.0.0.1:6379")
    ticket = create(ops, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20))
    command = [
        sys.executable,
        "run.py",
        "worker",
        "--queue",
        REDIS,
        "--db",
        db_url,
        "--definitions",
        str(ops.definitions),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "red" in get(ops, ticket["id"])["flags"], timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)  # finishes the running task, then exits
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Kiln worker on redis://" in output


def test_serve_runs_the_consumer_that_escalates_a_due_clock(ops: Instance, db_url: str, tmp_path: Path):
    ticket = create(ops, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20))
    queue = f"sqlite:///{tmp_path}/jobs/kiln-jobs.db"
    env_queue = () if db_url.startswith("sqlite") else ("--queue", queue)  # PostgreSQL: keep data/ clean
    process, port = serve(ops.definitions, db_url, *env_queue)
    try:
        wait_healthy(process, port)
        wait_for(lambda: "red" in get(ops, ticket["id"])["flags"], timeout=60)
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    if db_url.startswith("sqlite"):
        assert (Path(db_url[len("sqlite:///") :]).parent / "kiln-jobs.db").exists()


def test_the_sla_benchmark_runs_on_tiny_sizes():
    from benchmarks import sla as sla_bench

    results = sla_bench.run({"sla_clocks": 300, "sla_due": 20, "pg": "none"})
    assert [r.unit for r in results[:3]] == ["ms (median)", "s", "s"]
    assert all(r.value > 0 for r in results[:3])
