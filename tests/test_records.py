"""The records service: create, get, update, list with every check, numbering, versions, audit."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from engine.actors import SYSTEM, Actor
from engine.errors import Conflict, Forbidden, NotFound, StaleVersion, ValidationFailed
from engine.queries import BadQuery
from tests.conftest import add_user

APP = """
app: repair
timezone: Asia/Shanghai
roles:
  reporter: {label: 报修人}
  dispatcher: {label: 值班组长}
  technician: {label: 维修技师}
entities:
  device:
    label: 设备
    title: "{code} {name}"
    fields:
      code: {type: text, required: true, unique: true}
      name: {type: text, required: true}
      line: {type: select, options: {a: A线, b: B线}}
  ticket:
    label: 维修工单
    number: "MX{created:%Y%m%d}-{seq:4}"
    fields:
      summary: {type: text, required: true, max_length: 20}
      device: {type: link, entity: device, required: true}
      category: {type: select, options: {mechanical: 机械, network: 网络, system: 系统}}
      urgency: {type: select, required: true, default: normal, options: {high: 紧急, normal: 一般}}
      server_ip: {type: text, pattern: '^\\d+\\.\\d+\\.\\d+\\.\\d+$'}
      packet_loss: {type: decimal, min: 0, max: 100}
      due: {type: date, required_if: 'urgency == "high"'}
      tags: {type: tags}
      assignee: {type: user, role: technician}
      est_cost: {type: decimal, scale: 2}
      double_cost: {type: computed, expr: "est_cost * 2"}
      remarks: {type: textarea, disabled: true}
    validations:
      - when: category == "system" and is_empty(server_ip)
        fields: [server_ip]
        message: 请补充服务器IP以便远程诊断
    workflow:
      initial: pending
      states: {pending: {label: 待受理}, dispatched: {label: 已派单}, closed: {label: 已关闭, final: true}}
      transitions:
        dispatch: {from: pending, to: dispatched, requires: [assignee]}
    permissions:
      reporter: {create: true, read: own, update: {own: true, states: [pending]}}
      dispatcher: {create: true, read: all, update: all}
      technician: {read: assigned, update: assigned, hide: [est_cost]}
"""

NOW = dt.datetime(2026, 2, 18, 1, 0, tzinfo=dt.UTC)  # 09:00 in Shanghai


@pytest.fixture
def repair(db_url, write_definitions, open_instance):
    instance = open_instance(write_definitions({"repair/app.yaml": APP}), db_url)
    records = instance.records("repair")
    device = records.create("device", {"code": "D-001", "name": "灌装机", "line": "a"}, SYSTEM, now=NOW)
    users = {
        name: add_user(instance, name, "repair", roles)
        for name, roles in {"rita": ["reporter"], "ron": ["reporter"], "dan": ["dispatcher"], "tom": ["technician"]}.items()
    }
    return instance, records, device, users


def actor(instance, users, name, roles):
    return Actor(users[name], name, frozenset(roles))


def test_create_numbers_states_defaults_and_audit(repair):
    instance, records, device, users = repair
    rita = actor(instance, users, "rita", ["reporter"])
    ticket = records.create("ticket", {"summary": "轴承异响", "device": device["id"], "est_cost": "12.5"}, rita, now=NOW)
    assert ticket["number"] == "MX20260218-0001"
    assert ticket["state"] == "pending"
    assert ticket["entered_pending_at"] == NOW.isoformat()
    assert ticket["entered_dispatched_at"] is None
    assert ticket["version"] == 1
    assert ticket["urgency"] == "normal"  # default
    assert ticket["est_cost"] == "12.50"
    assert Decimal(ticket["double_cost"]) == Decimal("25")  # computed
    assert ticket["created_by"] == "rita"
    assert "remarks" not in ticket  # disabled: gone from the API
    history = records.history("ticket", ticket["id"], rita)
    assert [h["action"] for h in history] == ["create"]
    assert history[0]["actor"] == "rita"
    assert history[0]["changes"]["summary"] == [None, "轴承异响"]
    second = records.create("ticket", {"summary": "漏油", "device": device["id"]}, rita, now=NOW)
    assert second["number"] == "MX20260218-0002"
    # The counter restarts with a new date prefix (16:00 UTC is past midnight in Shanghai).
    next_day = records.create("ticket", {"summary": "停机", "device": device["id"]}, rita, now=NOW.replace(hour=16))
    assert next_day["number"] == "MX20260219-0001"


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"device": 0}, "summary", "required"),
        ({"summary": "x" * 21}, "summary", "at most 20 characters"),
        ({"summary": "a", "server_ip": "10.0.0"}, "server_ip", "does not match the expected format"),
        ({"summary": "a", "packet_loss": 150}, "packet_loss", "at most 100"),
        ({"summary": "a", "packet_loss": -1}, "packet_loss", "at least 0"),
        ({"summary": "a", "category": "hardware"}, "category", "expected one of: mechanical, network, system"),
        ({"summary": "a", "urgncy": "high"}, "urgncy", "did you mean 'urgency'?"),
        ({"summary": "a", "number": "X"}, "number", "set by the system"),
        ({"summary": "a", "state": "closed"}, "state", "only through a transition"),
        ({"summary": "a", "remarks": "x"}, "remarks", "disabled"),
        ({"summary": "a", "double_cost": 1}, "double_cost", "computed"),
        ({"summary": "a", "est_cost": "1.234"}, "est_cost", "at most 2 decimal places"),
        ({"summary": "a", "urgency": "high"}, "due", "required"),
        ({"summary": "a", "category": "system"}, "server_ip", "请补充服务器IP以便远程诊断"),
        ({"summary": "a", "assignee": "nobody"}, "assignee", "no such user: nobody"),
        ({"summary": "a", "assignee": "rita"}, "assignee", "must have the role technician"),
        ({"summary": "a", "due": "18/02/2026"}, "due", "expected a date"),
    ],
)
def test_create_refuses_bad_values_and_writes_nothing(repair, values, field, message):
    instance, records, device, users = repair
    values = {"device": device["id"], **values}
    if values["device"] == 0:
        values["device"] = device["id"]
    with pytest.raises(ValidationFailed) as info:
        records.create("ticket", values, SYSTEM, now=NOW)
    assert field in info.value.fields
    assert message in info.value.fields[field]
    assert info.value.status == 422
    _assert_no_tickets(instance)


def _assert_no_tickets(instance):
    table = instance.schema.entity("repair", "ticket").main
    audit = instance.schema.system["kiln_audit"]
    sequences = instance.schema.system["kiln_sequences"]
    with instance.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(audit).where(audit.c.entity == "ticket")).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(sequences)).scalar_one() == 0


def test_link_to_missing_record_is_refused(repair):
    instance, records, device, users = repair
    with pytest.raises(ValidationFailed) as info:
        records.create("ticket", {"summary": "a", "device": 999}, SYSTEM, now=NOW)
    assert info.value.fields == {"device": "no device record with id 999"}


def test_unique_field(repair):
    instance, records, device, users = repair
    with pytest.raises(ValidationFailed) as info:
        records.create("device", {"code": "D-001", "name": "again"}, SYSTEM, now=NOW)
    assert info.value.fields == {"code": "already used by another record"}


def test_update_checks_version_and_audits(repair):
    instance, records, device, users = repair
    dan = actor(instance, users, "dan", ["dispatcher"])
    ticket = records.create("ticket", {"summary": "异响", "device": device["id"], "tags": ["机械"]}, dan, now=NOW)
    later = NOW + dt.timedelta(minutes=5)
    updated = records.update(
        "ticket", ticket["id"], {"assignee": "tom", "tags": ["机械", "紧急"], "est_cost": 6000}, version=1, actor=dan, now=later
    )
    assert updated["version"] == 2
    assert updated["assignee"] == "tom"
    assert updated["tags"] == ["机械", "紧急"]
    assert updated["updated_at"] == later.isoformat()
    with pytest.raises(StaleVersion):
        records.update("ticket", ticket["id"], {"summary": "stale"}, version=1, actor=dan, now=later)
    assert records.get("ticket", ticket["id"], dan)["summary"] == "异响"
    history = records.history("ticket", ticket["id"], dan)
    assert [h["action"] for h in history] == ["create", "update"]
    assert history[1]["changes"] == {
        "assignee": [None, "tom"], "tags": [["机械"], ["机械", "紧急"]], "est_cost": [None, "6000.00"],
        "double_cost": [None, "12000"],
    }  # fmt: skip
    assert history[1]["actor"] == "dan"


def test_more_values_than_one_statement_holds_are_stored_in_order(repair):
    instance, records, device, users = repair
    many = [f"标签{i:02d}" for i in range(75)]  # three multi-row INSERTs of 32, 32 and 11
    ticket = records.create("ticket", {"summary": "异响", "device": device["id"], "tags": many}, SYSTEM, now=NOW)
    assert records.get("ticket", ticket["id"], SYSTEM)["tags"] == many
    fewer = records.update("ticket", ticket["id"], {"tags": many[40:]}, version=1, actor=SYSTEM, now=NOW)
    assert fewer["tags"] == many[40:] and records.get("ticket", ticket["id"], SYSTEM)["tags"] == many[40:]
    assert records.count("ticket", SYSTEM, filters={"tags": "标签74"}) == (1, False)


MULTI_APP = """
app: crew
timezone: Asia/Shanghai
entities:
  job:
    label: 作业
    fields:
      title: {type: text, required: true}
      tags: {type: tags}
      skills: {type: multiselect, options: {weld: 焊接, wire: 布线, paint: 喷涂}}
"""


def test_a_record_with_several_multi_valued_fields_is_written_whole(db_url, write_definitions, open_instance):
    """Two child tables and the audit entry: on PostgreSQL one statement after the row, on SQLite
    one per table; either way every value is there, in order, and filterable."""
    instance = open_instance(write_definitions({"crew/app.yaml": MULTI_APP}), db_url)
    records = instance.records("crew")
    job = records.create("job", {"title": "管道", "tags": ["急", "夜班"], "skills": ["wire", "weld"]}, SYSTEM, now=NOW)
    assert (job["tags"], job["skills"]) == (["急", "夜班"], ["wire", "weld"])
    stored = records.get("job", job["id"], SYSTEM)
    assert (stored["tags"], stored["skills"]) == (["急", "夜班"], ["wire", "weld"])
    assert records.history("job", job["id"], SYSTEM)[0]["changes"]["skills"] == [None, ["wire", "weld"]]
    job = records.update("job", job["id"], {"tags": ["夜班"], "skills": ["paint"]}, version=1, actor=SYSTEM, now=NOW)
    assert (job["tags"], job["skills"]) == (["夜班"], ["paint"])
    assert records.count("job", SYSTEM, filters={"skills": "paint"}) == (1, False)
    assert records.count("job", SYSTEM, filters={"tags": "急"}) == (0, False)


def test_sqlite_child_tables_are_without_rowid_and_older_rowid_ones_still_work(db_url, write_definitions, open_instance):
    if not db_url.startswith("sqlite"):
        pytest.skip("a SQLite table option")
    instance = open_instance(write_definitions({"crew/app.yaml": MULTI_APP}), db_url)
    with instance.engine.begin() as conn:
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'crew__job__skills'").scalar_one()
        assert ddl.rstrip().endswith("WITHOUT ROWID")  # one b-tree, not a table and its key
        # a database made before: the same table with a rowid
        conn.exec_driver_sql("DROP TABLE crew__job__skills")
        conn.exec_driver_sql(ddl.rstrip().removesuffix("WITHOUT ROWID"))
        conn.exec_driver_sql("CREATE INDEX ix_crew__job__skills_value ON crew__job__skills (value, record_id)")
    records = instance.records("crew")
    job = records.create("job", {"title": "旧库", "skills": ["paint", "weld"]}, SYSTEM, now=NOW)
    job = records.update("job", job["id"], {"skills": ["wire"]}, version=1, actor=SYSTEM, now=NOW)
    assert records.get("job", job["id"], SYSTEM)["skills"] == ["wire"]
    assert records.count("job", SYSTEM, filters={"skills": "wire"}) == (1, False)


def test_update_revalidates_and_changes_nothing_on_error(repair):
    instance, records, device, users = repair
    ticket = records.create("ticket", {"summary": "异响", "device": device["id"]}, SYSTEM, now=NOW)
    with pytest.raises(ValidationFailed) as info:
        records.update("ticket", ticket["id"], {"category": "system"}, version=1, actor=SYSTEM)
    assert info.value.fields == {"server_ip": "请补充服务器IP以便远程诊断"}
    again = records.get("ticket", ticket["id"], SYSTEM)
    assert again["category"] is None and again["version"] == 1
    assert len(records.history("ticket", ticket["id"], SYSTEM)) == 1


def test_row_scopes_hidden_fields_and_update_states(repair):
    instance, records, device, users = repair
    rita, ron = actor(instance, users, "rita", ["reporter"]), actor(instance, users, "ron", ["reporter"])
    tom, dan = actor(instance, users, "tom", ["technician"]), actor(instance, users, "dan", ["dispatcher"])
    mine = records.create("ticket", {"summary": "rita's", "device": device["id"], "est_cost": 100}, rita, now=NOW)
    records.create("ticket", {"summary": "ron's", "device": device["id"]}, ron, now=NOW)
    assert [t["summary"] for t in records.list("ticket", rita).items] == ["rita's"]
    assert records.count("ticket", rita) == (1, False)
    with pytest.raises(NotFound):
        records.get("ticket", mine["id"], ron)
    with pytest.raises(NotFound):
        records.update("ticket", mine["id"], {"summary": "mine now"}, version=1, actor=ron)
    assert records.list("ticket", tom).items == []
    records.update("ticket", mine["id"], {"assignee": "tom"}, version=1, actor=dan)
    seen = records.get("ticket", mine["id"], tom)
    assert "est_cost" not in seen and seen["summary"] == "rita's"
    with pytest.raises(BadQuery):
        records.list("ticket", tom, where="est_cost > 50")
    # Reporters may update their own tickets only while pending.
    table = instance.schema.entity("repair", "ticket").main
    with instance.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == mine["id"]).values(state="dispatched"))
    with pytest.raises(Forbidden):
        records.update("ticket", mine["id"], {"summary": "late"}, version=2, actor=rita)


def test_keyset_pages_filters_search_and_where(repair):
    instance, records, device, users = repair
    other = records.create("device", {"code": "D-002", "name": "包装机", "line": "b"}, SYSTEM, now=NOW)
    for i in range(57):
        records.create(
            "ticket",
            {"summary": f"故障 {i:02d}", "device": device["id"] if i % 2 else other["id"], "category": "network" if i % 3 else "mechanical",
             "tags": ["夜班"] if i % 5 == 0 else []},
            SYSTEM, now=NOW + dt.timedelta(minutes=i % 7),
        )  # fmt: skip
    for sort in ("-id", "id", "-created_at", "summary", "-summary", "category"):
        seen, cursor = [], None
        while True:
            page = records.list("ticket", SYSTEM, sort=sort, limit=10, cursor=cursor)
            seen.extend(page.items)
            cursor = page.next_cursor
            if not cursor:
                break
        key = sort.lstrip("-")
        expected = sorted(seen, key=lambda t: (t[key], t["id"]), reverse=sort.startswith("-"))
        assert [t["id"] for t in seen] == [t["id"] for t in expected], sort
        assert len({t["id"] for t in seen}) == 57
        # And back again, page by page, from the last page's ``prev_cursor``.
        back, before = [], page.prev_cursor
        while before:
            previous = records.list("ticket", SYSTEM, sort=sort, limit=10, before=before)
            back = previous.items + back
            before = previous.prev_cursor
        assert [t["id"] for t in back + page.items] == [t["id"] for t in seen], sort
    assert records.count("ticket", SYSTEM, filters={"category": "mechanical"}) == (19, False)
    assert records.count("ticket", SYSTEM, filters={"tags": "夜班"}) == (12, False)
    assert records.count("ticket", SYSTEM, filters={"device": other["id"]}) == (29, False)
    assert records.count("ticket", SYSTEM, search="故障 1") == (10, False)
    assert records.count("ticket", SYSTEM, where='category == "network" and device.line == "b"') == (19, False)
    assert records.count("ticket", SYSTEM, cap=10) == (10, True)
    with pytest.raises(BadQuery):
        records.list("ticket", SYSTEM, where="nonsense ==")
    with pytest.raises(BadQuery):
        records.list("ticket", SYSTEM, cursor="garbage!")


def test_the_list_statement_kept_per_shape_reads_what_the_general_query_reads(repair):
    """A reader of every row with column filters gets its pages from a statement kept per shape
    (engine/queries.py: Query._reused_page); a ``where`` takes the general path. Both walk the
    same rows in the same order, for every sort (nullable columns too), several values, an empty
    value and a creator who does not exist, and the kept statement serves new values."""
    instance, records, device, users = repair
    for i in range(41):
        records.create(
            "ticket",
            {"summary": f"故障 {i:02d}", "device": device["id"], "category": [None, "network", "mechanical", "system"][i % 4],
             "server_ip": "10.0.0.1", "est_cost": None if i % 3 == 0 else str(i * 10 % 70), "urgency": "high" if i % 5 == 0 else "normal",
             "due": "2026-03-01" if i % 5 == 0 else None},
            SYSTEM, now=NOW + dt.timedelta(minutes=i % 6),
        )  # fmt: skip
    filter_sets = [
        {}, {"category": "network"}, {"category": ["network", "system"]}, {"category": ""}, {"urgency": "high", "state": "pending"},
        {"created_by": "nobody"}, {"device": str(device["id"])},
    ]  # fmt: skip
    for filters in filter_sets:
        for sort in ("-id", "id", "-created_at", "est_cost", "-est_cost", "category", "-due"):
            walks = []
            for where in (None, "id > 0"):
                seen, cursor = [], None
                while True:
                    page = records.list("ticket", SYSTEM, filters=filters, sort=sort, limit=4, cursor=cursor, where=where)
                    seen += [t["id"] for t in page.items]
                    cursor = page.next_cursor
                    if not cursor:
                        break
                walks.append(seen)
            assert walks[0] == walks[1], (filters, sort)
    assert records.list("ticket", SYSTEM, filters={"category": "network"}).items
    assert records.list("ticket", SYSTEM, filters={"created_by": "nobody"}).items == []
    assert records.query._pages, "the reader of every row went the kept statements' way"
    reporter = actor(instance, users, "rita", ["reporter"])
    assert records.list("ticket", reporter, filters={"category": "network"}).items == []


def test_concurrent_creates_never_share_a_number(repair):
    instance, records, device, users = repair
    numbers: list[str] = []
    errors: list[Exception] = []

    def work() -> None:
        try:
            for _ in range(15):
                numbers.append(records.create("ticket", {"summary": "并发", "device": device["id"]}, SYSTEM, now=NOW)["number"])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(numbers) == 90
    assert sorted(numbers) == [f"MX20260218-{i:04d}" for i in range(1, 91)]


@pytest.mark.parametrize("value", ["1e30", "12345678901234567", "0.1234567890123456789012345678901", "-1e16"])
def test_decimals_beyond_the_column_are_refused(repair, value):
    instance, records, device, users = repair
    with pytest.raises(ValidationFailed) as info:
        records.create("ticket", {"summary": "a", "device": device["id"], "est_cost": value}, SYSTEM, now=NOW)
    assert set(info.value.fields) == {"est_cost"}
    _assert_no_tickets(instance)


def test_a_deadlock_the_database_breaks_is_a_conflict_to_retry(repair):
    """Two changes locking the same rows in opposite order: PostgreSQL aborts one of them; the
    caller gets a 409 conflict (engine.errors.Conflict), not a 500, and nothing of it is kept."""
    instance, records, device, users = repair
    if instance.engine.dialect.name != "postgresql":
        pytest.skip("SQLite lets one writer in at a time: no deadlock to break")
    other = records.create("device", {"code": "D2", "name": "二号机"}, SYSTEM)
    table = records.tables(records.entity("device")).main
    ready = threading.Barrier(2)
    outcomes: list[str] = []

    def change(first: int, second: int) -> None:
        try:
            with records.transaction() as conn:
                conn.execute(table.update().where(table.c.id == first).values(name=f"by {first}"))
                ready.wait(timeout=10)
                conn.execute(table.update().where(table.c.id == second).values(name=f"by {first}"))
            outcomes.append("done")
        except Conflict as exc:
            outcomes.append(f"conflict: {exc.message}")

    threads = [threading.Thread(target=change, args=pair) for pair in ((device["id"], other["id"]), (other["id"], device["id"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["conflict: the change met a concurrent one and was not made; try again", "done"]
    names = {records.get("device", i, SYSTEM)["name"] for i in (device["id"], other["id"])}
    assert len(names) == 1  # the rows hold the surviving change's values only
