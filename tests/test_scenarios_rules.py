"""The rule scenarios of SCENARIOS.md through the JSON API, as users drive them: S2, S5, S12,
S14, S22 and S23 on tests/fixtures/rules_repair.yaml. The clock of the records service is fixed
where the time of day matters (S12) or a record must be old (S14)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from apps.web import create_app
from engine import accounts
from tests.conftest import add_user, service_clock
from tests.test_api_support import Api

pytestmark = pytest.mark.anyio
DEFINITION = (Path(__file__).parent / "fixtures" / "rules_repair.yaml").read_text(encoding="utf-8")
DAY = dt.datetime(2026, 3, 4, 2, 0, tzinfo=dt.UTC)  # 10:00 in Shanghai
NIGHT = dt.datetime(2026, 3, 4, 14, 30, tzinfo=dt.UTC)  # 22:30 in Shanghai
USERS = {
    "rita": (["reporter"], []), "dan": (["dispatcher"], []), "tom": (["technician"], []),
    "alice": (["technician"], ["it_senior"]), "bob": (["technician"], ["it_senior"]),
    "nick": (["technician"], ["night_shift"]), "nina": (["technician"], ["night_shift"]),
}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[dt.datetime]:
    """The records service's clock: set ``clock[0]``."""
    return service_clock(monkeypatch, DAY)


@pytest.fixture
def api(db_url, write_definitions, open_instance, clock) -> Api:
    instance = open_instance(write_definitions({"repair/app.yaml": DEFINITION}), db_url)
    users = {name: add_user(instance, name, "repair", roles, teams) for name, (roles, teams) in USERS.items()}
    tokens = {name: accounts.create_token(instance.engine, name) for name in users}
    return Api(instance, create_app(instance), users, tokens)


async def post(api: Api, who: str, path: str, body: dict, status: int = 201, **headers: str) -> dict:
    async with api.client() as c:
        r = await c.post(f"/api/v1/repair/{path}", json=body, headers={**api.auth(who), **headers})
    assert r.status_code == status, r.text
    return r.json()


async def patch(api: Api, who: str, path: str, body: dict, version: int) -> dict:
    async with api.client() as c:
        r = await c.patch(f"/api/v1/repair/{path}", json=body, headers={**api.auth(who), "If-Match": str(version)})
    assert r.status_code == 200, r.text
    return r.json()


async def get(api: Api, who: str, path: str) -> dict:
    async with api.client() as c:
        r = await c.get(f"/api/v1/repair/{path}", headers=api.auth(who))
    assert r.status_code == 200, r.text
    return r.json()


async def trail(api: Api, path: str) -> list[dict]:
    """The history of a record, as the dispatcher sees it."""
    return (await get(api, "dan", f"{path}/history"))["items"]


async def device(api: Api, code: str) -> int:
    return (await post(api, "dan", "device", {"code": code}))["id"]


def rows(api: Api, table: str) -> list[dict]:
    from sqlalchemy import select

    t = api.instance.schema.table(table)
    with api.instance.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()]


async def test_s2_server_fault_of_high_urgency_goes_to_the_least_loaded_it_senior(api: Api):
    d = await device(api, "SRV-1")
    await post(api, "dan", "ticket", {"summary": "内存告警", "device": d, "assignee": "alice"})
    first = await post(api, "rita", "ticket", {"summary": "服务器宕机", "device": d, "category": "server", "urgency": "high"})
    assert first["assignee"] == "bob"  # alice already has an open ticket
    second = await post(api, "rita", "ticket", {"summary": "服务器宕机", "device": d, "category": "server", "urgency": "high"})
    assert second["assignee"] == "alice"  # one each: the tie goes to the first username
    normal = await post(api, "rita", "ticket", {"summary": "服务器慢", "device": d, "category": "server"})
    assert normal["assignee"] is None
    history = await trail(api, f"ticket/{first['id']}")
    assert [(e["action"], e["rule"], e["changes"]) for e in history][-1] == ("update", "服务器故障自动派单", {"assignee": [None, "bob"]})


async def test_s5_uploading_the_report_moves_the_ticket_on(api: Api):
    d = await device(api, "M-5")
    ticket = await post(api, "dan", "ticket", {"summary": "皮带松动", "device": d, "assignee": "tom"})
    ticket = await post(api, "dan", f"ticket/{ticket['id']}/transitions/dispatch", {}, 200, **{"If-Match": str(ticket["version"])})
    ticket = await post(api, "tom", f"ticket/{ticket['id']}/transitions/accept", {}, 200, **{"If-Match": str(ticket["version"])})
    assert ticket["state"] == "in_progress"
    async with api.client() as c:
        r = await c.post("/api/v1/files", files={"file": ("report.pdf", b"%PDF-1.4 ok", "application/pdf")}, headers=api.auth("tom"))
    assert r.status_code == 201, r.text
    done = await patch(api, "tom", f"ticket/{ticket['id']}", {"report": r.json()["id"]}, ticket["version"])
    assert done["state"] == "awaiting_check" and done["entered_awaiting_check_at"] is not None
    history = await trail(api, f"ticket/{ticket['id']}")
    assert [(e["action"], e["actor"], e["rule"]) for e in history][-2:] == [
        ("update", "tom", None), ("transition:finish", "system", "报告上传自动待验收"),
    ]  # fmt: skip


async def test_s12_bearing_noise_at_night_is_dispatched_to_the_night_shift(api: Api, clock: list[dt.datetime]):
    d = await device(api, "M-12")
    clock[0] = NIGHT
    first = await post(api, "rita", "ticket", {"summary": "主轴轴承异响", "device": d})
    second = await post(api, "rita", "ticket", {"summary": "停机风险", "device": d})
    assert (first["state"], first["assignee"]) == ("dispatched", "nick")
    assert (second["state"], second["assignee"]) == ("dispatched", "nina")  # round robin
    queued = [r for r in rows(api, "kiln_outbox") if r["record_id"] == first["id"]]
    assert [(r["channel"], int(r["recipient"]), r["status"]) for r in queued] == [
        ("sms", api.users["nick"], "pending"), ("in_app", api.users["nick"], "pending"),
    ]  # fmt: skip
    assert queued[0]["payload"]["body"] == f"{first['number']} 主轴轴承异响：请立即处理"
    history = await trail(api, f"ticket/{first['id']}")
    assert [(e["action"], e["rule"]) for e in history] == [
        ("create", None), ("update", "夜班直派"), ("transition:dispatch", "夜班直派"), ("notify", "夜班直派"),
    ]  # fmt: skip
    clock[0] = DAY
    day = await post(api, "rita", "ticket", {"summary": "主轴轴承异响", "device": d})
    assert (day["state"], day["assignee"]) == ("pending", None)
    assert not [r for r in rows(api, "kiln_outbox") if r["record_id"] == day["id"]]


async def test_s14_third_same_fault_of_a_device_in_7_days_warns(api: Api, clock: list[dt.datetime]):
    d = await device(api, "M-14")
    clock[0] = DAY - dt.timedelta(days=8)
    await post(api, "rita", "ticket", {"summary": "漏油", "device": d, "category": "mechanical"})
    clock[0] = DAY
    await post(api, "rita", "ticket", {"summary": "漏油", "device": d, "category": "mechanical"})
    other = await post(api, "rita", "ticket", {"summary": "断网", "device": d, "category": "network"})
    second = await post(api, "rita", "ticket", {"summary": "漏油", "device": d, "category": "mechanical"})
    assert (second["tags"], second["urgency"], other["tags"]) == ([], "normal", [])  # 2 in 7 days
    third = await post(api, "rita", "ticket", {"summary": "漏油", "device": d, "category": "mechanical"})
    assert third["tags"] == ["重复故障"] and third["urgency"] == "high"
    visits = await get(api, "dan", "visit_task")
    assert [(v["device"], v["note"]) for v in visits["items"]] == [(d, "安排技术拜访")]
    history = await trail(api, f"ticket/{third['id']}")
    assert [(e["action"], e["rule"]) for e in history[1:]] == [
        ("update", "重复故障预警"), ("update", "重复故障预警"),  # the tag, then urgency
        ("create:visit_task", "重复故障预警"),  # the visit it asked for
        ("create:rca_task", "单日多次故障停产"),  # the fourth of the day (S22): its root-cause task
    ]
    assert visits["items"][0]["created_by"] is None  # created by the system, for the rule
    visit_history = await trail(api, f"visit_task/{visits['items'][0]['id']}")
    assert visit_history[0]["rule"] == "重复故障预警"


async def test_s22_a_machine_with_more_than_3_tickets_a_day_pauses_its_plan(api: Api):
    m, other = await device(api, "M-22"), await device(api, "M-23")
    plan = await post(api, "dan", "production_plan", {"machine": m})
    other_plan = await post(api, "dan", "production_plan", {"machine": other})
    for i, category in enumerate(["mechanical", "network", "server"]):
        await post(api, "rita", "ticket", {"summary": f"故障{i}", "device": m, "category": category})
    assert (await get(api, "dan", f"production_plan/{plan['id']}"))["status"] == "running"
    await post(api, "rita", "ticket", {"summary": "故障3", "device": m, "category": "mechanical"})
    assert (await get(api, "dan", f"production_plan/{plan['id']}"))["status"] == "paused"
    assert (await get(api, "dan", f"production_plan/{other_plan['id']}"))["status"] == "running"
    tasks = (await get(api, "dan", "rca_task"))["items"]
    assert [(t["device"], t["team"], t["note"]) for t in tasks] == [(m, "equipment", "根因分析")]
    history = await trail(api, f"production_plan/{plan['id']}")
    assert (history[-1]["rule"], history[-1]["changes"]) == ("单日多次故障停产", {"status": ["running", "paused"]})


async def test_s23_a_damaged_packaging_tag_starts_a_supplier_deduction(api: Api):
    case = await post(api, "dan", "after_sale", {"summary": "外箱压坏", "supplier": "ACME"})
    assert (await get(api, "dan", "supplier_deduction"))["items"] == []
    case = await patch(api, "dan", f"after_sale/{case['id']}", {"tags": ["包装破损"]}, case["version"])
    await patch(api, "dan", f"after_sale/{case['id']}", {"tags": ["包装破损", "已拍照"]}, case["version"])
    deductions = (await get(api, "dan", "supplier_deduction"))["items"]
    assert [(x["after_sale"], x["supplier"], x["reason"]) for x in deductions] == [(case["id"], "ACME", "包装破损")]
    tagged_at_once = await post(api, "dan", "after_sale", {"summary": "破损", "supplier": "B", "tags": ["包装破损"]})
    deductions = (await get(api, "dan", "supplier_deduction"))["items"]
    assert len(deductions) == 2 and deductions[0]["after_sale"] == tagged_at_once["id"]  # newest first
