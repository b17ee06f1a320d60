"""SLA clocks (engine/sla.py) through the JSON API, the pages and the time scan, as users drive them:
S4 (remind the handler at 30 min, escalate to their manager at 1 h, in office hours), S18 (red
after 15 min in 待受理, the workspace banner, an SMS after 30 min in 已派单), S21 (the seven
breakpoints, counted per day), pause and resume, the first matching entry, and catch-up after
downtime. Time moves with the records service's clock and ``scan.run_due`` (the code of
``run.py jobs run-due --now``; tests/test_jobs.py runs the command itself)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, update

from apps.web import create_app
from engine import accounts, scan, sla
from tests.conftest import add_user, service_clock
from tests.test_api_support import Api

pytestmark = pytest.mark.anyio
DEFINITION = (Path(__file__).parent / "fixtures" / "sla_desk.yaml").read_text(encoding="utf-8")
SH = ZoneInfo("Asia/Shanghai")
USERS = {"sam": ["service"], "rita": ["reporter"], "tom": ["technician"], "ted": ["technician"], "mia": ["supervisor"],
         "sue": ["supervisor"]}  # fmt: skip


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SH)


WEDNESDAY = local(2026, 3, 4, 10, 0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[dt.datetime]:
    """The records service's clock: set ``clock[0]``."""
    return service_clock(monkeypatch, WEDNESDAY)


def open_api(instance, users: dict[str, list[str]], app: str) -> Api:
    ids = {name: add_user(instance, name, app, roles) for name, roles in users.items()}
    tokens = {name: accounts.create_token(instance.engine, name) for name in ids}
    return Api(instance, create_app(instance), ids, tokens)


@pytest.fixture
def api(db_url, write_definitions, open_instance, clock) -> Api:
    instance = open_instance(write_definitions({"desk/app.yaml": DEFINITION}), db_url)
    api = open_api(instance, USERS, "desk")
    users = instance.schema.system["kiln_users"]
    with instance.engine.begin() as conn:  # mia manages tom
        conn.execute(update(users).where(users.c.id == api.users["tom"]).values(manager_id=api.users["mia"]))
    return api


async def call(
    api: Api,
    who: str,
    method: str,
    path: str,
    body: dict | None = None,
    status: int = 200,
    app: str = "desk",
    **headers: str,
) -> dict:
    async with api.client() as c:
        r = await c.request(method, f"/api/v1/{app}/{path}", json=body, headers={**api.auth(who), **headers})
    assert r.status_code == status, r.text
    return r.json()


async def create(api: Api, who: str = "sam", **values: object) -> dict:
    return await call(api, who, "POST", "ticket", {"summary": "电梯异响", **values}, 201)


async def move(api: Api, who: str, ticket: dict, transition: str) -> dict:
    return await call(
        api,
        who,
        "POST",
        f"ticket/{ticket['id']}/transitions/{transition}",
        {},
        200,
        **{"If-Match": str(ticket["version"])},
    )


def pages(api: Api, who: str) -> httpx.AsyncClient:
    """A browser session of ``who`` on the pages."""
    transport = httpx.ASGITransport(app=api.app)
    return httpx.AsyncClient(
        transport=transport, base_url="http://test", cookies={"kiln_session": api.session_cookie(who)}
    )


def clocks(ticket: dict) -> dict[str, dict]:
    return {c["name"]: c for c in ticket["sla"]}


def outbox(api: Api, record_id: int) -> list[tuple[str, str, str]]:
    """(clock event, channel, recipient username) of the record's SLA notifications."""
    t = api.instance.schema.system["kiln_outbox"]
    names = {v: k for k, v in api.users.items()}
    with api.instance.engine.connect() as conn:
        rows = conn.execute(
            select(t).where(t.c.record_id == record_id, t.c.event_key.like("%/sla:%")).order_by(t.c.id)
        ).mappings()
        return [
            (
                re.search(r"sla:(\w+)@.*/(level:\d+)", r["event_key"]).group(1, 2),
                r["channel"],
                names.get(int(r["recipient"])),
            )
            for r in rows
        ]


def fired(report: scan.Report) -> list[tuple[int, str, str]]:
    return [(f.record_id, f.clock, f.what) for f in report.fired]


async def test_s4_urgent_ticket_reminds_at_30_minutes_and_escalates_at_1_hour_in_office_hours(
    api: Api, clock
):
    clock[0] = local(2026, 3, 6, 17, 0)  # a Friday, half an hour before the office closes
    ticket = await create(api, urgency="high", assignee="tom")
    first = clocks(ticket)["first_response"]
    assert dt.datetime.fromisoformat(first["due_at"]) == local(2026, 3, 9, 9, 0)  # Monday 08:30 + 30 min
    assert ("first_response", "level 1") not in [
        (c, w) for _, c, w in fired(scan.run_due(api.instance, local(2026, 3, 6, 17, 29)))
    ]
    report = scan.run_due(api.instance, local(2026, 3, 6, 17, 30))  # 30 minutes of office time
    assert (ticket["id"], "first_response", "level 1") in fired(report)
    assert outbox(api, ticket["id"]) == [(("first_response", "level:1"), "in_app", "tom")]
    ticket = await call(api, "sam", "GET", f"ticket/{ticket['id']}")
    assert "red" in ticket["flags"] and ticket["escalated"] is False
    for saturday_hour in (9, 15, 23):  # the weekend is not office time: nothing more
        assert not [
            f
            for f in fired(scan.run_due(api.instance, local(2026, 3, 7, saturday_hour, 0)))
            if f[1] == "first_response"
        ]
    assert not fired(scan.run_due(api.instance, local(2026, 3, 9, 8, 59)))
    report = scan.run_due(api.instance, local(2026, 3, 9, 9, 0))
    assert fired(report) == [
        (ticket["id"], "first_response", "breached"),
        (ticket["id"], "first_response", "level 2"),
    ]
    assert outbox(api, ticket["id"])[1:] == [
        (("first_response", "level:2"), "in_app", "mia")
    ]  # tom's manager
    ticket = await call(api, "sam", "GET", f"ticket/{ticket['id']}")
    assert ticket["escalated"] is True
    assert dt.datetime.fromisoformat(clocks(ticket)["first_response"]["breached_at"]) == local(
        2026, 3, 9, 9, 0
    )
    history = await call(api, "sam", "GET", f"ticket/{ticket['id']}/history")
    rules = [
        (e["action"], e["rule"]) for e in history["items"] if e["rule"] and "first_response" in e["rule"]
    ]
    assert rules == [
        ("notify", "SLA first_response level 1"), ("sla_breach", "SLA first_response"),
        ("notify", "SLA first_response level 2"), ("update", "SLA first_response level 2"),
    ]  # fmt: skip
    notifications = api.instance.schema.system["kiln_notifications"]
    with api.instance.engine.connect() as conn:  # delivered in the same scan, in the app
        users = set(
            conn.execute(
                select(notifications.c.user_id).where(notifications.c.record_id == ticket["id"])
            ).scalars()
        )
    assert users == {api.users["tom"], api.users["mia"]}


async def test_s4_answered_in_time_meets_the_clock_and_nothing_fires(api: Api, clock):
    ticket = await create(api, urgency="high", assignee="tom")
    clock[0] = WEDNESDAY + dt.timedelta(minutes=10)
    ticket = await move(api, "sam", ticket, "dispatch")
    clock[0] = WEDNESDAY + dt.timedelta(minutes=20)
    ticket = await move(api, "tom", ticket, "accept")
    first = clocks(ticket)["first_response"]
    assert dt.datetime.fromisoformat(first["met_at"]) == clock[0] and first["breached_at"] is None
    assert (
        clocks(ticket)["pending_15m"]["met_at"] is not None
        and clocks(ticket)["dispatched_30m"]["met_at"] is not None
    )
    report = scan.run_due(api.instance, WEDNESDAY + dt.timedelta(days=3))
    assert [f for f in fired(report) if f[1] != "resolution"] == []
    assert [e for e, _, _ in outbox(api, ticket["id"]) if e[0] == "first_response"] == []


async def test_a_clock_met_late_before_any_scan_is_breached(api: Api, clock):
    ticket = await create(api, assignee="tom")
    clock[0] = WEDNESDAY + dt.timedelta(minutes=20)  # no scan ran: nobody saw 10:15 pass
    ticket = await move(api, "sam", ticket, "dispatch")
    pending = clocks(ticket)["pending_15m"]
    assert dt.datetime.fromisoformat(pending["met_at"]) == clock[0]
    assert dt.datetime.fromisoformat(pending["breached_at"]) == WEDNESDAY + dt.timedelta(minutes=15)
    assert clocks(ticket)["first_response"]["breached_at"] is None  # running, not due yet


async def test_the_first_matching_entry_of_a_name_applies(api: Api):
    urgent = await create(api, urgency="high")
    normal = await create(api)
    assert dt.datetime.fromisoformat(clocks(urgent)["first_response"]["due_at"]) == WEDNESDAY + dt.timedelta(
        hours=1
    )
    assert dt.datetime.fromisoformat(clocks(normal)["first_response"]["due_at"]) == WEDNESDAY + dt.timedelta(
        hours=4
    )  # 24x7
    report = scan.run_due(api.instance, WEDNESDAY + dt.timedelta(minutes=45))
    assert (normal["id"], "first_response", "level 1") not in fired(report)  # the fallback has no escalations


async def test_s18_pending_over_15_minutes_is_red_in_lists_with_a_banner(api: Api, clock):
    ticket = await create(api, "rita")
    other = await create(api, "sam")
    assert not fired(scan.run_due(api.instance, WEDNESDAY + dt.timedelta(minutes=14)))
    clock[0] = WEDNESDAY + dt.timedelta(minutes=5)
    other = await call(
        api,
        "sam",
        "PATCH",
        f"ticket/{other['id']}",
        {"assignee": "tom"},
        **{"If-Match": str(other["version"])},
    )
    other = await move(api, "sam", other, "dispatch")  # out of 待受理 in time
    report = scan.run_due(api.instance, WEDNESDAY + dt.timedelta(minutes=15))
    assert fired(report) == [
        (ticket["id"], "pending_15m", "breached"),
        (ticket["id"], "pending_15m", "level 1"),
    ]
    listed = await call(api, "sam", "GET", "ticket?flag=red")
    assert [t["id"] for t in listed["items"]] == [ticket["id"]] and "red" in listed["items"][0]["flags"]

    async with pages(api, "sam") as c:
        page = (await c.get("/a/desk/ticket")).text
        workspace = (await c.get("/")).text
        red_list = (await c.get("/a/desk/ticket?flag=red")).text
    row = next(
        line for line in page.splitlines() if f'/a/desk/ticket/{ticket["id"]}"' in line and "<td>" in line
    )
    assert "flag-red" in row
    assert "flag-red" not in next(
        line for line in page.splitlines() if f'/a/desk/ticket/{other["id"]}"' in line and "<td>" in line
    )
    assert 'href="/a/desk/ticket?flag=red"' in workspace and "1 条工单已超时/标红" in workspace
    assert ticket["number"] in red_list and other["number"] not in red_list
    async with pages(api, "ted") as c:  # sees no flagged ticket
        assert "flag=red" not in (await c.get("/")).text
    async with pages(api, "rita") as c:  # her own ticket only
        alerts = (await c.get("/", headers={"Accept": "application/json"})).json()["alerts"]
    assert [(a["entity"], a["count"], a["href"]) for a in alerts] == [
        ("ticket", 1, "/a/desk/ticket?flag=red")
    ]

    clock[0] = WEDNESDAY + dt.timedelta(minutes=20)
    ticket = await call(
        api,
        "sam",
        "PATCH",
        f"ticket/{ticket['id']}",
        {"assignee": "tom"},
        **{"If-Match": str(ticket["version"])},
    )
    ticket = await move(api, "sam", ticket, "dispatch")  # handled: no longer late, no longer red
    assert ticket["flags"] == {} and clocks(ticket)["pending_15m"]["met_at"] is not None
    async with pages(api, "sam") as c:
        assert "flag=red" not in (await c.get("/")).text

    # 已派单 30 minutes without acceptance: an SMS to the area supervisors
    report = scan.run_due(api.instance, WEDNESDAY + dt.timedelta(minutes=35))
    assert (other["id"], "dispatched_30m", "level 1") in fired(report)
    assert sorted(outbox(api, other["id"])) == [
        (("dispatched_30m", "level:1"), "sms", "mia"),
        (("dispatched_30m", "level:1"), "sms", "sue"),
    ]


async def test_a_paused_clock_excludes_the_pause_and_moves_its_due_time_out(api: Api, clock):
    ticket = await create(api, assignee="tom")
    ticket = await move(api, "sam", ticket, "dispatch")
    ticket = await move(api, "tom", ticket, "accept")  # resolution starts: 2 h
    clock[0] = WEDNESDAY + dt.timedelta(minutes=30)
    ticket = await move(api, "tom", ticket, "finish")  # 待验收: paused
    resolution = clocks(ticket)["resolution"]
    assert resolution["paused"] is True
    assert not [
        f
        for f in fired(scan.run_due(api.instance, WEDNESDAY + dt.timedelta(hours=3)))
        if f[1] == "resolution"
    ]
    clock[0] = WEDNESDAY + dt.timedelta(hours=3)
    ticket = await move(api, "sam", ticket, "reopen")  # back to work after 2 h 30 min paused
    resolution = clocks(ticket)["resolution"]
    assert resolution["paused"] is False
    assert dt.datetime.fromisoformat(resolution["due_at"]) == WEDNESDAY + dt.timedelta(hours=4, minutes=30)
    assert not [
        f
        for f in fired(scan.run_due(api.instance, WEDNESDAY + dt.timedelta(hours=4, minutes=29)))
        if f[1] == "resolution"
    ]
    report = scan.run_due(api.instance, WEDNESDAY + dt.timedelta(hours=4, minutes=30))
    assert [f for f in fired(report) if f[1] == "resolution"] == [
        (ticket["id"], "resolution", "breached"),
        (ticket["id"], "resolution", "level 1"),
    ]
    clock[0] = WEDNESDAY + dt.timedelta(hours=5)
    ticket = await move(api, "tom", ticket, "finish")
    ticket = await move(api, "sam", ticket, "confirm")  # met while paused: met, the pause closed
    resolution = clocks(ticket)["resolution"]
    assert resolution["met_at"] is not None and resolution["paused"] is False


async def test_after_downtime_one_scan_fires_every_passed_level_once(api: Api):
    ticket = await create(api, urgency="high", assignee="tom")
    later = WEDNESDAY + dt.timedelta(days=30)
    report = scan.run_due(api.instance, later)
    assert sorted(f[1:] for f in fired(report)) == [
        ("first_response", "breached"), ("first_response", "level 1"), ("first_response", "level 2"),
        ("pending_15m", "breached"), ("pending_15m", "level 1"),
    ]  # fmt: skip
    assert sorted(e for e, _, _ in outbox(api, ticket["id"])) == [
        ("first_response", "level:1"),
        ("first_response", "level:2"),
    ]
    assert scan.run_due(api.instance, later).fired == []  # the same instant again: nothing
    assert scan.run_due(api.instance, later + dt.timedelta(days=365)).fired == []
    table = api.instance.schema.system[sla.TABLE]
    with api.instance.engine.connect() as conn:
        assert set(
            conn.execute(select(table.c.next_check_at).where(table.c.record_id == ticket["id"])).scalars()
        ) == {None}


BREAKPOINTS = """
app: plant
timezone: Asia/Shanghai
roles: {desk: {label: 客服}}
entities:
  order:
    label: 工单
    fields:
      summary: {type: text, required: true}
    workflow:
      initial: created
      states:
        created: {label: 已创建}
        assigned: {label: 已派单}
        accepted: {label: 已接单}
        responded: {label: 已响应}
        on_site: {label: 已到场}
        processed: {label: 已处理}
        verified: {label: 已验收}
        archived: {label: 已归档, final: true}
      transitions:
        assign: {from: created, to: assigned}
        accept: {from: assigned, to: accepted}
        respond: {from: accepted, to: responded}
        arrive: {from: responded, to: on_site}
        process: {from: on_site, to: processed}
        verify: {from: processed, to: verified}
        reject: {from: verified, to: processed}
        archive: {from: verified, to: archived}
    permissions:
      desk: {create: true, read: all, update: all}
    sla:
      - {name: created_not_assigned, start: created, stop: left(created), target: 10m}
      - {name: assigned_not_accepted, start: entered(assigned), stop: left(assigned), target: 10m}
      - {name: accepted_not_responded, start: entered(accepted), stop: left(accepted), target: 10m}
      - {name: responded_not_on_site, start: entered(responded), stop: left(responded), target: 10m}
      - {name: on_site_not_processed, start: entered(on_site), stop: left(on_site), target: 10m}
      - {name: processed_not_verified, start: entered(processed), stop: left(processed), target: 10m}
      - {name: verified_not_archived, start: entered(verified), stop: left(verified), target: 10m}
"""
STEPS = ("assign", "accept", "respond", "arrive", "process", "verify", "archive")
STALLS = ("created_not_assigned", "assigned_not_accepted", "accepted_not_responded", "responded_not_on_site",
          "on_site_not_processed", "processed_not_verified", "verified_not_archived")  # fmt: skip


async def test_s21_seven_breakpoint_types_counted_per_day(db_url, write_definitions, open_instance, clock):
    instance = open_instance(write_definitions({"plant/app.yaml": BREAKPOINTS}), db_url)
    api = open_api(instance, {"kim": ["desk"]}, "plant")

    async def step_to(order: dict, transition: str) -> dict:
        path = f"order/{order['id']}/transitions/{transition}"
        return await call(
            api, "kim", "POST", path, {}, 200, app="plant", **{"If-Match": str(order["version"])}
        )

    async def walk(stalled: int, day: dt.datetime) -> int:
        """One order through all seven states, 5 min in each but 20 min in state ``stalled``."""
        clock[0] = day
        order = await call(api, "kim", "POST", "order", {"summary": "x"}, 201, app="plant")
        for i, step in enumerate(STEPS):
            clock[0] += dt.timedelta(minutes=20 if i == stalled else 5)
            scan.run_due(instance, clock[0])  # the minute job runs all along
            order = await step_to(order, step)
        assert order["state"] == "archived" and all(c["met_at"] for c in order["sla"])
        return order["id"]

    for stalled in range(7):  # each breakpoint type once on the first day
        await walk(stalled, local(2026, 3, 4, 9, 0) + dt.timedelta(hours=stalled))
    await walk(0, local(2026, 3, 5, 9, 0))  # and created-not-assigned twice on the next
    await walk(0, local(2026, 3, 5, 11, 0))
    await walk(99, local(2026, 3, 5, 14, 0))  # no stall at all
    # A rejected verification: the processed clock starts again and can breach again.
    clock[0] = local(2026, 3, 5, 16, 0)
    order = await call(api, "kim", "POST", "order", {"summary": "y"}, 201, app="plant")
    for step in STEPS[:6]:
        order = await step_to(order, step)
    clock[0] += dt.timedelta(minutes=1)
    order = await step_to(order, "reject")
    processed = next(c for c in order["sla"] if c["name"] == "processed_not_verified")
    assert processed["met_at"] is None and dt.datetime.fromisoformat(processed["started_at"]) == clock[0]
    scan.run_due(instance, clock[0] + dt.timedelta(minutes=11))

    records = instance.records("plant")
    with instance.engine.connect() as conn:
        counts = sla.breaches(
            conn, records, records.entity("order"), local(2026, 3, 4, 0, 0), local(2026, 3, 6, 0, 0)
        )
    day1, day2 = dt.date(2026, 3, 4), dt.date(2026, 3, 5)
    assert counts == {
        **{(day1, name): 1 for name in STALLS},
        (day2, "created_not_assigned"): 2,
        (day2, "processed_not_verified"): 1,
    }


async def test_a_clock_stops_on_an_approval(db_url, write_definitions, open_instance):
    from tests.test_workflow_support import APP, make_flow

    sla_entry = "      - {name: approval_wait, start: entered(dispatched), stop: approved(director_approval), target: 1h}\n"
    definition = APP.replace("    label: 服务工单\n", "    label: 服务工单\n    sla:\n" + sla_entry, 1)
    flow = make_flow(open_instance(write_definitions({"svc/app.yaml": definition}), db_url))
    async with flow.client() as c:
        ticket = await flow.create(c, "dan", est_cost=6000)
        ticket = await flow.step(c, "dan", ticket, "dispatch", assignee="tom")
        assert [(k["name"], k["met_at"]) for k in ticket["sla"]] == [("approval_wait", None)]
        url = f"/api/v1/svc/ticket/{ticket['id']}/approvals/director_approval"
        r = await c.post(url, json={"decision": "approve"}, headers=flow.auth("sue"))
        assert r.status_code == 200, r.text
        ticket = (await c.get(f"/api/v1/svc/ticket/{ticket['id']}", headers=flow.auth("dan"))).json()
    assert ticket["sla"][0]["met_at"] is not None
