"""Creates with 20 rules on the entity against creates with none, at 1,000,000 existing tickets
(issue 4's target: the rules keep at least 70% of the throughput).

The million tickets of the ``list`` benchmark (data/bench/list-N.db) are copied to a scratch file,
which is driven through ``Records.create`` (each create its own transaction, as in ``creates``) with
the plain definition or with the definition plus the 20 rules below, in turns (plain, rules, plain,
rules), the median of each kind reported. A third kind, the plain definition with the values the
acting rules give already in each create's input (:data:`RULES_GIVE`), measures what writing that
data costs with no rule to decide it: what the rules' own work costs is the rest. Adding rules
changes no table, so both definitions run on the same tables and the same million rows. Each run
starts from a fresh copy: the creates of earlier runs would fill the count's 7-day window (1,530
tickets a run over 100 devices), so that from the second run with rules on r07's condition held (one
more acting rule, and a count reading 50 index entries instead of a few): the runs would not measure
the same thing, and the later ones not the rule mix described here.

The rules are what a pack writes: most listen to ``created`` (``entered(pending)`` too, the
initial state) and test the new ticket; five of them hold for it and act (three tags, an urgency
raised, a field set; all written as one update, each with its audit entry), the others' conditions
are false, among them one that counts the device's tickets of the last 7 days with ``count(...)``
(an indexed query over the million rows, run for every create); the change of urgency fires the
``updated`` rule, whose condition is false; and three wait for events a create does not raise
(``field_set``, ``transition``, ``entered(closed)``), so their event test is all they cost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import listpage
from benchmarks.common import TICKET_APP, Result, write_app
from benchmarks.databases import fresh_database
from benchmarks.web import base_database
from engine import migrations
from engine.actors import SYSTEM
from engine.instance import Instance

RULES = """
    rules:
      - {name: r01 机械类标签, on: created, when: 'category == "mechanical"', do: [{add_tag: 机械}]}
      - {name: r02 网络类标签, on: created, when: 'category == "network"', do: [{add_tag: 网络}]}
      - {name: r03 高成本标签, on: created, when: 'est_cost > 100', do: [{add_tag: 高成本}]}
      - {name: r04 超高成本标红, on: created, when: 'est_cost > 10000', do: [{mark: red}]}
      - {name: r05 轴承升级, on: created, when: 'contains(summary, "轴承")', do: [{set: {urgency: high}}]}
      - {name: r06 紧急电气, on: created, when: 'category == "electrical" and urgency == "high"', do: [{add_tag: 紧急电气}]}
      - name: r07 重复故障
        on: created
        when: 'count(ticket, device == this.device and category == this.category, within="7d") >= 50'
        do: [{add_tag: 重复故障}]
      - {name: r08 夜间报修, on: created, when: 'time_between(created_at, "23:59", "00:00")', do: [{add_tag: 夜间}]}
      - {name: r09 系统类缺IP, on: created, when: 'category == "system" and is_empty(server_ip)', do: [{add_tag: 缺IP}]}
      - {name: r10 网络丢包, on: created, when: 'category == "network" and packet_loss >= 20', do: [{add_tag: 丢包}]}
      - {name: r11 丢包严重, on: created, when: 'packet_loss >= 50', do: [{mark: red}]}
      - {name: r12 待受理紧急, on: 'entered(pending)', when: 'urgency == "high" and est_cost > 5000', do: [{add_tag: 待受理紧急}]}
      - {name: r13 待受理指派, on: 'entered(pending)', when: 'is_empty(assignee)', do: [{add_tag: 待派}]}
      - {name: r14 成本估算, on: created, when: 'est_cost >= 50 and est_cost <= 500', do: [{set: {packet_loss: 0}}]}
      - {name: r15 摘要过长, on: created, when: 'len(summary) > 100', do: [{add_tag: 长描述}]}
      - {name: r16 派单后标签, on: 'field_set(assignee)', do: [{add_tag: 已派}]}
      - {name: r17 派单事件, on: 'transition(dispatch)', do: [{add_tag: 已派单}]}
      - {name: r18 关闭归档, on: 'entered(closed)', do: [{add_tag: 已归档}]}
      - {name: r19 修改紧急, on: updated, when: 'changed(urgency) and urgency == "high" and est_cost > 1000', do: [{mark: red}]}
      - {name: r20 电气标签, on: created, when: 'category in ["electrical", "system"]', do: [{add_tag: 电气系统}]}
"""


DEVICES = 100  # the devices of the list benchmark's database
VALUES = {"summary": "轴承异响，停机风险", "device": 1, "category": "mechanical", "est_cost": "120.50"}  # of every create
# What the five acting rules give such a ticket, for the creates that bring it in their input with no
# rules: what writing the rules' data costs by itself, without the rules that decide it.
RULES_GIVE = {"tags": ["机械", "高成本", "待派"], "urgency": "high", "packet_loss": "0"}


def rules_app() -> str:
    return TICKET_APP.rstrip("\n") + "\n" + RULES.strip("\n") + "\n"


def measure(definitions: Path, url: str, count: int, given: dict | None = None) -> float:
    """Creates per second through the service on ``url`` with the definitions of ``definitions``
    (migrated first: a definition with rules differs from one without only in its hash); each
    create's values are :data:`VALUES` and ``given``."""
    values = {**VALUES, **(given or {})}
    instance = Instance.open(definitions, url, env={})
    try:
        migrations.apply(instance.engine, instance.compiled)
        records = instance.records("bench")
        for i in range(30):  # warm caches and the connection pool
            records.create("ticket", {**values, "device": 1 + i % DEVICES}, SYSTEM)
        # The migration may have built an index over the million rows (the count's, which the
        # plain definition drops again): checkpoint its pages now, or the creates timed next would
        # copy them into the database file.
        with instance.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        start = time.perf_counter()
        for i in range(count):
            # The tickets spread over the devices, as faults do: a device's 7-day count stays small.
            records.create("ticket", {**values, "device": 1 + i % DEVICES}, SYSTEM, now=dt.datetime.now(dt.UTC))
        return count / (time.perf_counter() - start)
    finally:
        instance.close()


def fresh_copy(source: Path, copy: Path) -> None:
    """``copy`` as ``source`` is (the creates must not grow the shared cache, nor one run's
    creates change what the next measures)."""
    for suffix in ("-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, copy)


def cpu_per_create(definitions: dict[str, Path], copies: dict[str, Path], rounds: int, batch: int) -> dict[str, float]:
    """CPU time per create (ms) of each definition, each on its own copy of the tickets, all open
    in this process and driven in turns, batch by batch; the median of ``rounds`` batches each.
    This machine's speed drifts between runs by more than the difference measured: turns of a
    few hundred creates see the same drift, and CPU time leaves out the waits of other processes.
    The time is the creating thread's: each instance's checkpoint thread (engine/checkpoints.py)
    runs beside it, copying the WAL of its last turn while the other instance takes its turn, so
    the process's CPU time would count one kind's checkpoints in the other's turns."""
    instances = {}
    try:
        for kind, folder in definitions.items():
            instance = instances[kind] = Instance.open(folder, f"sqlite:///{copies[kind]}", env={})
            migrations.apply(instance.engine, instance.compiled)
            with instance.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        spent = in_turns(instances, rounds, batch, time.thread_time)
        return {kind: statistics.median(times) / batch * 1000 for kind, times in spent.items()}
    finally:
        for instance in instances.values():
            instance.close()


def pg_turns(definitions: dict[str, Path], options: dict, rows: int, rounds: int, batch: int) -> dict[str, float] | None:
    """Creates per second of each definition on PostgreSQL, each on its own schema of ``rows``
    tickets, all open in this process and driven in turns, batch by batch (wall time: the
    server's work counts); the median of ``rounds`` batches each. None without a server."""
    with contextlib.ExitStack() as stack:
        instances = {}
        for kind, folder in definitions.items():
            url = stack.enter_context(fresh_database("postgresql", folder, options))
            if url is None:
                return None
            instance = instances[kind] = Instance.open(folder, url, env={})
            stack.callback(instance.close)
            migrations.apply(instance.engine, instance.compiled)
            listpage.fill(instance, rows)
        spent = in_turns(instances, rounds, batch, time.perf_counter)
        return {kind: batch / statistics.median(times) for kind, times in spent.items()}


def in_turns(instances: dict[str, Instance], rounds: int, batch: int, clock: Callable[[], float]) -> dict[str, list[float]]:
    """Each instance's ``clock`` time for ``batch`` creates, ``rounds`` times, the instances in
    turns; a first turn warms caches, pools and prepared statements, uncounted."""
    spent: dict[str, list[float]] = {kind: [] for kind in instances}
    for turn in range(rounds + 1):
        for kind, instance in instances.items():
            records = instance.records("bench")
            start = clock()
            for i in range(batch):
                records.create("ticket", {**VALUES, "device": 1 + i % DEVICES}, SYSTEM, now=dt.datetime.now(dt.UTC))
            if turn:
                spent[kind].append(clock() - start)
    return spent


def run(options: dict) -> list[Result]:
    rows = int(options.get("rows", 1_000_000))
    count = int(options.get("rule_creates", 1500))
    rounds = int(options.get("rule_rounds", 6))  # this virtual machine swings by a fifth from run to run
    cache = Path(options.get("cache", "data/bench"))
    with tempfile.TemporaryDirectory(prefix="kiln-rules-") as name:
        tmp = Path(name)
        plain = write_app(tmp / "plain", TICKET_APP)
        ruled = write_app(tmp / "ruled", rules_app())
        source = base_database(plain, cache, rows)
        copy = tmp / "rules.db"
        url = f"sqlite:///{copy}"
        without, with_rules, data_only = [], [], []
        for _ in range(rounds):
            kinds = ((plain, None, without), (ruled, None, with_rules), (plain, RULES_GIVE, data_only))
            for definitions, given, rates in kinds:
                fresh_copy(source, copy)
                rates.append(measure(definitions, url, count, given))
        copies = {"plain": copy, "ruled": tmp / "rules-cpu.db"}
        for path in copies.values():
            fresh_copy(source, path)
        turns = int(options.get("rule_cpu_rounds", 10))
        cpu = cpu_per_create({"plain": plain, "ruled": ruled}, copies, turns, int(options.get("rule_cpu_batch", 300)))
        pg_rounds = int(options.get("rule_pg_rounds", 12))
        pg = pg_turns({"plain": plain, "ruled": ruled}, options, rows, pg_rounds, int(options.get("rule_pg_batch", 300)))
    base, ruled_rate, data_rate = statistics.median(without), statistics.median(with_rules), statistics.median(data_only)
    share = ruled_rate / base * 100 if base else 0.0
    # Each round measures both kinds minutes apart: the median of the rounds' own shares follows
    # this machine's drift less than the share of the two medians does.
    paired = statistics.median(r / b * 100 for r, b in zip(with_rules, without, strict=True) if b)
    label = f"{rows:,} records, sqlite, median of {rounds}"
    runs = {kind: ", ".join(f"{r:,.0f}" for r in rates) for kind, rates in (("plain", without), ("ruled", with_rules), ("data", data_only))}
    spread = f"runs {runs['plain']} / {runs['ruled']}"
    results = [
        Result(f"rules: creates/s, no rules, {label}", base, "creates/s"),
        Result(f"rules: creates/s, 20 rules, {label}", ruled_rate, "creates/s", note=spread),
        Result("rules: throughput kept with 20 rules", share, "%", ">= 70%", note=f"median of the rounds' own shares {paired:.1f}%"),
        Result(
            "rules: kept with the rules' values as input, no rules", data_rate / base * 100 if base else 0.0, "%",
            note=f"{data_rate:,.0f} creates/s, runs {runs['data']}: the data the rules write, without the rules",
        ),  # fmt: skip
        Result("rules: CPU per create in one process, in turns, no rules", cpu["plain"], "ms", note=f"median of {turns} turns"),
        Result("rules: CPU per create in one process, in turns, 20 rules", cpu["ruled"], "ms", note=f"median of {turns} turns"),
        Result("rules: kept with 20 rules, by CPU per create", cpu["plain"] / cpu["ruled"] * 100, "%"),
    ]
    if pg is not None:
        pg_label = f"{rows:,} records, postgresql, in turns, median of {pg_rounds}"
        results += [
            Result(f"rules: creates/s, no rules, {pg_label}", pg["plain"], "creates/s"),
            Result(f"rules: creates/s, 20 rules, {pg_label}", pg["ruled"], "creates/s"),
            Result("rules: throughput kept with 20 rules, postgresql", pg["ruled"] / pg["plain"] * 100, "%", ">= 70%"),
        ]
    return results
