"""Daily rollups (engine/rollups.py): every figure a rollup gives equals the figure computed from
the rows, on the hand-built tickets of tests/test_dashboards.py and after random creates, updates
and transitions (and concurrent writers); the stored rollup equals a recount from the rows; a role
that reads some rows only, a stale rollup and a list the rollup cannot tell are computed from the
rows."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from engine import migrations, packs, rollups, workflow
from engine.actors import SYSTEM, Actor
from engine.dashboards import Dashboards, Filters
from engine.demo import load_demo
from engine.errors import RecordError
from tests.test_api_support import add_user, make_api
from tests.test_dashboards import DEFINITION, NOW, USERS, at, build

MANAGER = "mia"
ROOT = Path(__file__).resolve().parent.parent
# the measures of the cards the rollup answers here: tickets and top_sites (records), cost, secret,
# by_line (created -> closed), csat (rating), frt (created -> dispatched); the records per day of
# the created and backlog_trend trends
ROLLED = sorted(["", "", "cost", "secret", "created_at>entered_closed_at", "rating", "created_at>entered_dispatched_at",
                 "days", "days"])  # fmt: skip


@pytest.fixture
def desk(db_url, write_definitions, open_instance, monkeypatch):
    instance = open_instance(write_definitions({"desk/app.yaml": DEFINITION}), db_url)
    api = make_api(instance, USERS, app="desk")
    monkeypatch.setattr("engine.records.utcnow", lambda: NOW)
    return api


def actor(api: Any, name: str) -> Actor:
    return Actor(api.users[name], name, frozenset(USERS.get(name, ["service"])))


def plain(value: Any) -> Any:
    """A figure's JSON with numbers compared as numbers (SQLite's 200.0, PostgreSQL's 200)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return round(float(value), 3)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def figures(service: Dashboards, who: Actor, query: dict | None = None, now: dt.datetime = NOW) -> dict[str, Any]:
    ops = service.get("ops", who)
    found = service.compute(ops, who, Filters.parse(ops, query or {}), now=now)
    return {f.name: plain(f.to_json(lambda entity, drill: [entity, drill.params()])) for f in found}


@pytest.fixture
def served(monkeypatch) -> list[str]:
    """The cards the rollup answered (by entity and measure), in order."""
    seen: list[str] = []
    rows, days = rollups.Plan.rows, rollups.Plan.days

    def spy_rows(self: rollups.Plan, *args: Any) -> Any:
        seen.append(self.measure.name)
        return rows(self, *args)

    def spy_days(self: rollups.Plan, *args: Any) -> Any:
        seen.append("days")
        return days(self, *args)

    monkeypatch.setattr(rollups.Plan, "rows", spy_rows)
    monkeypatch.setattr(rollups.Plan, "days", spy_days)
    return seen


def stored(api: Any) -> dict[tuple, tuple[int, int]]:
    table = api.instance.schema.system["kiln_rollups"]
    with api.instance.engine.connect() as conn:
        rows = conn.execute(select(table.c.measure, table.c.day, table.c.key, table.c.n, table.c.total)).all()
    return {(m, day, key): (n, total) for m, day, key, n, total in rows if n or total}


def recounted(api: Any) -> dict[tuple, tuple[int, int]]:
    instance = api.instance
    with instance.engine.begin() as conn:
        rollups.rebuild(conn, instance.schema, instance.records("desk").app)
    return stored(api)


QUERIES = [
    {},
    {"category": ["hw"]},
    {"site.line": ["b"]},
    {"category": ["sw", "net"], "site.line": ["a", "b"]},
    {"created_at.from": "2026-03-03", "created_at.to": "2026-03-03"},  # T4, 07:30 on 03-04, is not of 03-03
    {"created_at.from": "2026-03-02", "category": ["hw"]},
]


def test_the_rollup_gives_the_figures_of_the_rows(desk, served) -> None:
    build(desk)
    records = desk.instance.records("desk")
    mia = actor(desk, MANAGER)
    for query in QUERIES:
        served.clear()
        fast = figures(Dashboards(records), mia, query)
        assert served, query  # not a test of the rows against themselves
        assert fast == figures(Dashboards(records, use_rollups=False), mia, query), query
    served.clear()
    figures(Dashboards(records), mia)
    assert sorted(served) == ROLLED
    assert fast["tickets"]["value"] == 2.0 and fast["cost"]["value"] == 100.5  # 03-02 on: T1 hw; T3 hw has no cost


def test_a_role_that_reads_some_rows_is_never_answered_from_the_rollup(desk, served) -> None:
    build(desk)
    records = desk.instance.records("desk")
    rita = actor(desk, "rita")
    cards = figures(Dashboards(records), rita)
    assert served == []
    assert cards["tickets"]["value"] == 2 and cards["csat"]["value"] == 5  # T1 and T3 only
    assert cards == figures(Dashboards(records, use_rollups=False), rita)


def test_lists_the_rollup_cannot_tell_are_read_from_the_rows(desk, served) -> None:
    build(desk)
    records = desk.instance.records("desk")
    mia = actor(desk, MANAGER)
    entity = records.entity("ticket")
    card = next(c for c in records.app.dashboards[0].cards if c.name == "tickets")
    with desk.instance.engine.connect() as conn:
        for where in ['created_at >= "2026-03-03T06:00:00+08:00"', 'state == "closed"', 'summary == "T1"', 'category != "hw"']:
            assert rollups.plan_for(records, conn, entity, card, where, (), NOW) is None, where
        assert rollups.plan_for(records, conn, entity, card, '(site.line in ["a"]) and (category == "hw")', (), NOW) is not None
    # a rollup whose shape is not the definition's (never built, or built for another) is not read
    with desk.instance.engine.begin() as conn:
        builds = desk.instance.schema.system["kiln_rollup_builds"]
        conn.execute(delete(builds))
    assert figures(Dashboards(records), mia)["tickets"]["value"] == 5 and served == []
    migrations.apply(desk.instance.engine, desk.instance.compiled)  # migrate builds it again
    figures(Dashboards(records), mia)
    assert served


def random_changes(api: Any, rnd: random.Random, count: int, who: str = "dan") -> None:
    """Creates, updates and transitions at random times over five days, some of them given a
    time before the record's creation (a clock behind): every field the rollup reads changes."""
    records = api.instance.records("desk")
    me = actor(api, who)
    sites = [r["id"] for r in records.list("site", me, limit=10).items]
    mine: list[int] = []
    steps = {"pending": "dispatch", "dispatched": "accept", "in_progress": "finish", "awaiting_check": "confirm"}
    for _ in range(count):
        when = at(1, 0) + dt.timedelta(minutes=rnd.randrange(5 * 24 * 60))
        roll = rnd.random()
        if roll < 0.4 or not mine:
            values = {"summary": "r", "category": rnd.choice(["hw", "sw", "net", None]), "site": rnd.choice([*sites, None]),
                      "rating": rnd.choice([None, 1, 3, 5]), "cost": rnd.choice([None, "10.25", "3"])}  # fmt: skip
            mine.append(records.create("ticket", values, me, now=when)["id"])
            continue
        record_id = rnd.choice(mine)
        current = records.get("ticket", record_id, me)
        if roll < 0.7:
            change = rnd.choice([{"category": rnd.choice(["hw", "sw", None])}, {"site": rnd.choice([*sites, None])},
                                 {"rating": rnd.choice([None, 2, 4])}, {"cost": rnd.choice([None, "7.50"])}])  # fmt: skip
            records.update("ticket", record_id, change, current["version"], me, now=when)
            continue
        name = "rework" if current["state"] == "awaiting_check" and rnd.random() < 0.3 else steps.get(current["state"])
        if name:
            try:
                workflow.transition(records, "ticket", record_id, name, {}, None, SYSTEM, now=when)
            except RecordError:
                pass


def test_the_rollup_equals_a_recount_after_random_changes(desk, served) -> None:
    build(desk)
    rnd = random.Random(6)
    records = desk.instance.records("desk")
    mia = actor(desk, MANAGER)
    for _ in range(3):
        random_changes(desk, rnd, 40)
        for query in QUERIES[:4]:
            assert figures(Dashboards(records), mia, query) == figures(Dashboards(records, use_rollups=False), mia, query)
    assert served
    before = stored(desk)
    assert before and recounted(desk) == before


def test_concurrent_writers_lose_no_count(desk) -> None:
    build(desk)
    for name in ("w1", "w2", "w3"):
        desk.users[name] = add_user(desk.instance, name, "desk", ["service"])
    errors: list[BaseException] = []

    def writer(name: str, seed: int) -> None:
        try:
            random_changes(desk, random.Random(seed), 25, who=name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name, i)) for i, name in enumerate(("dan", "w1", "w2", "w3"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    before = stored(desk)
    assert recounted(desk) == before


def test_every_count_links_to_as_many_records_after_random_changes(desk) -> None:
    """The backlog at each day's end is read from counts since it (engine/dashboards_sql.py): its
    list, and those of every counted group and bucket, hold exactly as many records, with reopened
    tickets and transitions given a time before the record's creation among them."""
    build(desk)
    random_changes(desk, random.Random(11), 120)
    records = desk.instance.records("desk")
    entity = records.entity("ticket")
    for name in (MANAGER, "rita"):
        who = actor(desk, name)
        found = Dashboards(records).compute(records.app.dashboards[0], who, now=NOW)
        cards = {f.name: f for f in found}
        points = [(p.value, p.drill) for n in ("created", "closed", "backlog_trend") for p in cards[n].series]
        points += [(p.value, p.drill) for n in ("tickets", "top_sites") for p in cards[n].groups]
        points += [(cards[n].value, cards[n].drill) for n in ("tickets", "backlog")]
        assert sum(v for v, _ in points) > (100 if name == MANAGER else 10)
        with desk.instance.engine.connect() as conn:
            for value, drill in points:
                assert drill is not None
                assert records.query.count(conn, entity, who, drill.spec(entity, NOW), cap=10**6)[0] == value, drill


def test_a_transition_timed_before_the_creation_enters_at_the_creation(desk) -> None:
    """A clock behind the creating server's: the state is entered when the record was created, so
    the backlog (created before an instant, less closed before it) still counts its list."""
    build(desk)
    records = desk.instance.records("desk")
    mia = actor(desk, MANAGER)
    late = records.create("ticket", {"summary": "T6", "category": "hw"}, actor(desk, "dan"), now=at(3, 10))["id"]
    for name in ("dispatch", "accept", "finish", "confirm"):
        workflow.transition(records, "ticket", late, name, {}, None, SYSTEM, now=at(2, 10))
    record = records.get("ticket", late, mia)
    assert record["entered_closed_at"] == record["created_at"]
    trend = next(f for f in Dashboards(records).compute(records.app.dashboards[0], mia, now=NOW) if f.name == "backlog_trend")
    assert [p.value for p in trend.series] == [1, 1, 2]  # as without T6: closed when it was created
    entity = records.entity("ticket")
    with desk.instance.engine.connect() as conn:
        for point in trend.series:
            assert records.query.count(conn, entity, mia, point.drill.spec(entity, NOW))[0] == point.value


def test_the_demo_data_is_rolled_up(tmp_path, db_url, open_instance, served) -> None:
    """The demo writes states and times to the rows directly, then recounts the rollup: the pack's
    dashboards give the rows' figures."""
    done = packs.install("service_ticket", tmp_path / "definitions")
    instance = open_instance(tmp_path / "definitions", db_url)
    load_demo(instance, "service_ticket", done.pack.demo_file)
    records = instance.records("service_ticket")
    admin = Actor(None, "admin", is_admin=True)
    now = dt.datetime.now(dt.UTC)
    for dashboard in records.app.dashboards:
        fast = Dashboards(records).compute(dashboard, admin, now=now)
        slow = Dashboards(records, use_rollups=False).compute(dashboard, admin, now=now)

        def shown(found: list) -> list:
            return [plain(f.to_json(lambda entity, drill: [entity, drill.params()])) for f in found]

        assert shown(fast) == shown(slow), dashboard.name
    assert served


def test_migrate_rollups_recounts_rows_written_outside(desk, tmp_path) -> None:
    """Rows written straight into the table are not seen by the rollup until ``migrate --rollups``."""
    build(desk)
    instance = desk.instance
    table = instance.schema.entity("desk", "ticket").main
    with instance.engine.begin() as conn:
        conn.execute(table.update().values(category="net"))
    records = instance.records("desk")
    mia = actor(desk, MANAGER)
    assert figures(Dashboards(records), mia)["tickets"]["groups"][0]["key"] == "hw"  # the rollup missed it
    folder = tmp_path / "definitions"
    (folder / "desk").mkdir(parents=True, exist_ok=True)
    (folder / "desk" / "app.yaml").write_text(DEFINITION, encoding="utf-8")
    done = subprocess.run([sys.executable, "run.py", "migrate", "--rollups", "--db", str(instance.engine.url.render_as_string(hide_password=False)),
                           "--definitions", str(folder)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rollups recounted: desk: ticket" in done.stderr
    cards = figures(Dashboards(records), mia)
    assert [(g["key"], g["value"]) for g in cards["tickets"]["groups"]] == [("net", 5.0)]
    assert cards == figures(Dashboards(records, use_rollups=False), mia)


def test_a_field_hidden_from_a_role_that_reads_every_row_is_refused_as_from_the_rows(
    db_url, write_definitions, open_instance, monkeypatch, served
) -> None:
    hidden = DEFINITION.replace("      manager: {read: all}\n    sla:", "      manager: {read: all, hide: [cost, category]}\n    sla:")
    assert hidden != DEFINITION
    instance = open_instance(write_definitions({"desk/app.yaml": hidden}), db_url)
    api = make_api(instance, USERS, app="desk")
    monkeypatch.setattr("engine.records.utcnow", lambda: NOW)
    build(api)
    records = instance.records("desk")
    mia = actor(api, MANAGER)
    ops = records.app.dashboards[0]
    cards = {f.name: f for f in Dashboards(records).compute(ops, mia, Filters.parse(ops, {"category": ["hw"]}), now=NOW)}
    assert cards["cost"].error and cards["cost"].value is None  # a hidden field is never summed
    assert cards["created"].error and cards["tickets"].error  # nor filtered on
    assert cards["by_line"].value is None and served == []
