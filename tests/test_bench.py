"""The benchmark suite runs (on tiny sizes): its fixture apps compile and its figures come out."""

from __future__ import annotations

import os

import pytest

from benchmarks import compile as compile_bench
from benchmarks import creates, listpage


def test_twenty_entity_app_compiles(tmp_path):
    from benchmarks.common import write_app
    from engine.compiler import compile_definitions

    compiled = compile_definitions(write_app(tmp_path, compile_bench.twenty_entities(), "big"), env={})
    assert len(compiled.apps["big"].app.entities) == 20


def test_creates_and_list_benchmarks_run(tmp_path):
    results = creates.run({"creates": 20, "pg": "none"})
    assert results[0].value > 0 and results[0].unit == "creates/s"
    results = listpage.run({"rows": 3000, "cache": tmp_path, "list_pg": False, "runs": 3})
    assert [r.unit for r in results] == ["ms (median)"] * 4
    assert all(r.value > 0 for r in results)


def test_web_benchmark_runs(tmp_path):
    """Both servers come up, the logged-in list page, the hand-written page and API creates are
    driven for about a second each (skipped where a server cannot start here)."""
    from benchmarks import web

    options = {"rows": 3000, "cache": tmp_path, "web_seconds": 1, "web_warmup": 0, "web_concurrency": 2, "web_workers": 1}
    try:
        results = web.run(options)
    except web.ServerStartError as exc:
        pytest.skip(f"the web benchmark's server cannot start here: {exc}")
    assert [r.unit for r in results] == ["pages/s", "pages/s", "creates/s"]
    assert "hand-written" in results[1].name
    assert all(r.value > 0 for r in results)
    assert "50 rows" in results[0].note and "50 rows" in results[1].note


def test_rules_benchmark_runs(tmp_path):
    """Creates with and without the 20 rules, as throughput and as CPU per create in turns; and
    in turns on PostgreSQL where the tests have one."""
    from benchmarks import rules

    pg = os.environ.get("KILN_TEST_PG")
    options = {
        "rows": 3000, "cache": tmp_path, "rule_creates": 20, "rule_rounds": 1, "rule_cpu_rounds": 1, "rule_cpu_batch": 10,
        "pg": pg or "none", "rule_pg_rounds": 1, "rule_pg_batch": 10,
    }  # fmt: skip
    results = rules.run(options)
    postgresql = ["creates/s", "creates/s", "%"] if pg else []
    assert [r.unit for r in results] == ["creates/s", "creates/s", "%", "%", "ms", "ms", "%", *postgresql]
    assert all(r.value > 0 for r in results)


def test_the_rules_benchmark_data_kind_gives_what_the_rules_give(tmp_path):
    """The third kind of the rules benchmark stands for the rules' data: a ticket created with
    RULES_GIVE in its input and no rules stores what the 20 rules give one created without it."""
    from decimal import Decimal

    from benchmarks import rules
    from benchmarks.common import TICKET_APP, write_app
    from engine import migrations
    from engine.actors import SYSTEM
    from engine.instance import Instance

    made = {}
    for kind, app, given in (("ruled", rules.rules_app(), {}), ("given", TICKET_APP, rules.RULES_GIVE)):
        instance = Instance.open(write_app(tmp_path / kind, app), f"sqlite:///{tmp_path / kind}.db", env={})
        try:
            migrations.apply(instance.engine, instance.compiled)
            records = instance.records("bench")
            device = records.create("device", {"code": "D0001", "name": "设备1"}, SYSTEM)
            made[kind] = records.create("ticket", {**rules.VALUES, "device": device["id"], **given}, SYSTEM)
        finally:
            instance.close()
    for ticket in made.values():
        assert (sorted(ticket["tags"]), ticket["urgency"], Decimal(ticket["packet_loss"])) == (
            sorted(rules.RULES_GIVE["tags"]), "high", Decimal(rules.RULES_GIVE["packet_loss"])
        )
