"""A time-scan batch's deferred writes (engine/deferred.py, engine/sla.py's batch path): levels
that only notify and mark write their claims, outbox rows, marks and audit entries a statement per
table, with the same result as one by one; anything else goes one by one after them."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, select

from engine import deferred, scan, sla
from engine.accounts import actor_for
from engine.actors import SYSTEM
from engine.instance import Instance
from tests.conftest import add_user

START = dt.datetime(2026, 3, 4, 2, 0, tzinfo=dt.UTC)
APP = """
app: desk
roles: {agent: {}}
entities:
  ticket:
    fields:
      summary: {type: text}
      assignee: {type: user}
      escalated: {type: boolean, default: false}
    workflow:
      initial: open
      states: {open: {}, done: {final: true}}
      transitions: {finish: {from: open, to: done}}
    permissions:
      agent: {create: true, read: all, update: all}
    sla:
      - name: remind
        start: created
        stop: left(open)
        target: 2h
        escalations:
          - after: 30m
            do: [{notify: {to: assignee, channels: [in_app]}}, {mark: red}]
      - name: escalate
        applies_if: summary == "both"
        start: created
        stop: left(open)
        target: 4h
        escalations:
          - after: 30m
            do: [{set: {escalated: true}}]
"""


def tickets(instance: Instance, summaries: list[str]) -> tuple[list[int], int]:
    tom = add_user(instance, "tom", "desk", ["agent"])
    records = instance.records("desk")
    agent = actor_for(instance.engine, "tom", "desk")
    ids = [records.create("ticket", {"summary": s, "assignee": "tom"}, agent, now=START)["id"] for s in summaries]
    return ids, tom


def test_a_batch_of_notify_and_mark_levels_writes_what_one_by_one_would(db_url, write_definitions, open_instance, monkeypatch):
    instance = open_instance(write_definitions({"desk/app.yaml": APP}), db_url)
    ids, _ = tickets(instance, ["a", "b", "c", "both"])
    marks = instance.schema.system["kiln_marks"]
    with instance.engine.begin() as conn:  # "b" is red already: no second mark, no audit entry for it
        conn.execute(insert(marks).values(app="desk", entity="ticket", record_id=ids[1], color="red", marked_at=START, rule="x"))
    calls = []
    real = sla._fire_batch
    monkeypatch.setattr(sla, "_fire_batch", lambda *a: calls.append(len(out := real(*a))) or out)
    report = scan.run_due(instance, START + dt.timedelta(minutes=31), deliver_outbox=False)
    assert not report.errors
    assert sorted((f.record_id, f.clock, f.what) for f in report.fired) == sorted(
        [(i, "remind", "level 1") for i in ids] + [(ids[3], "escalate", "level 1")]
    )
    assert calls == [3]  # "both" has two clocks due, one of which sets a field: one by one
    records = instance.records("desk")
    system = instance.schema.system
    with instance.engine.connect() as conn:
        outbox = conn.execute(select(system["kiln_outbox"].c.record_id)).scalars().all()
        red = conn.execute(select(marks.c.record_id).where(marks.c.color == "red")).scalars().all()
        clocks = conn.execute(select(system[sla.TABLE])).mappings().all()
        history = {i: [(e["action"], e["rule"]) for e in records.history("ticket", i, SYSTEM)] for i in ids}
    assert sorted(outbox) == sorted(ids) and sorted(red) == sorted(ids)
    assert all(c["escalation_level"] == 1 for c in clocks) and all(c["next_check_at"] > START + dt.timedelta(minutes=31) for c in clocks)
    level = "SLA remind level 1"
    assert history[ids[0]] == [("create", None), ("notify", level), ("mark", level)]
    assert history[ids[1]] == [("create", None), ("notify", level)]  # already red
    assert history[ids[3]][0] == ("create", None) and ("update", "SLA escalate level 1") in history[ids[3]]
    assert records.get("ticket", ids[3], SYSTEM)["escalated"] is True
    again = scan.run_due(instance, START + dt.timedelta(minutes=40), deliver_outbox=False)
    assert again.fired == []  # each level once


def test_deferring_holds_rows_until_the_end_and_never_nests(db_url, write_definitions, open_instance):
    instance = open_instance(write_definitions({"desk/app.yaml": APP}), db_url)
    audit = instance.schema.system["kiln_audit"]
    from engine import audit as audit_module

    with instance.engine.begin() as conn:
        with deferred.deferring(conn):
            for n in range(3):
                audit_module.record_change(
                    conn, audit, app="desk", entity="ticket", record_id=n, action="x", actor=SYSTEM, at=START, changes={"n": [None, n]}
                )  # fmt: skip
            assert conn.execute(select(audit)).first() is None  # held
            with pytest.raises(RuntimeError):
                with deferred.deferring(conn):
                    pass
        assert deferred.of(conn) is None
        rows = conn.execute(select(audit.c.record_id, audit.c.changes).order_by(audit.c.id)).all()
    assert [(r, c) for r, c in rows] == [(0, {"n": [None, 0]}), (1, {"n": [None, 1]}), (2, {"n": [None, 2]})]
