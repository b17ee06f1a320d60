"""Dashboards (engine/dashboards.py) through the JSON API, on hand-built tickets whose every figure
is worked out by hand below: tickets crossing midnight in Asia/Shanghai, a reworked (reopened)
ticket, a paused SLA clock, the row scope of a reporter, the dashboard's filters, and every number's
``list`` link opening exactly the records it counts."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from engine import scan, workflow
from engine.actors import SYSTEM, Actor
from engine.dashboards import Dashboards, Filters
from tests.test_api_support import Api, make_api

pytestmark = pytest.mark.anyio
SH = ZoneInfo("Asia/Shanghai")
H = 3600

DEFINITION = """
app: desk
timezone: Asia/Shanghai
roles:
  reporter: {label: 业主}
  service: {label: 客服}
  manager: {label: 经理}
entities:
  site:
    label: 站点
    title: "{code}"
    fields:
      code: {type: text, required: true, unique: true}
      line: {type: select, options: {a: A线, b: B线}}
    permissions:
      reporter: {read: all}
      service: {create: true, read: all, update: all}
      manager: {read: all}
  ticket:
    label: 工单
    number: "T{seq:4}"
    title: "{number} {summary}"
    fields:
      summary: {type: text, required: true}
      category: {type: select, options: {hw: 硬件, sw: 软件, net: 网络}}
      site: {type: link, entity: site}
      rating: {type: rating, max: 5}
      cost: {type: decimal, scale: 2}
      secret: {type: decimal}
    workflow:
      initial: pending
      states:
        pending: {label: 待受理}
        dispatched: {label: 已派单}
        in_progress: {label: 处理中}
        awaiting_check: {label: 待验收}
        closed: {label: 已关闭, final: true}
      transitions:
        dispatch: {from: pending, to: dispatched}
        accept: {from: dispatched, to: in_progress}
        finish: {from: in_progress, to: awaiting_check}
        rework: {from: awaiting_check, to: in_progress}
        confirm: {from: awaiting_check, to: closed}
    permissions:
      reporter: {create: true, read: own, hide: [secret]}
      service: {create: true, read: all, update: all}
      manager: {read: all}
    sla:
      - {name: first_response, start: created, stop: entered(dispatched), target: 1h}
      - {name: resolution, start: created, stop: entered(closed), pause_in: [awaiting_check], target: 6h}
dashboards:
  ops:
    label: {zh: 运维看板, en: Operations}
    roles: [reporter, service, manager]
    filters: [category, site.line, created_at]
    cards:
      - {name: tickets, type: count, entity: ticket, group_by: category}
      - {name: cost, type: sum, entity: ticket, field: cost}
      - {name: by_line, type: avg_duration, entity: ticket, from: created_at, to: entered_closed_at, group_by: site.line}
      - {name: p50, type: percentile_duration, entity: ticket, from: created_at, to: entered_closed_at, percentile: 50}
      - {name: p90, type: percentile_duration, entity: ticket, from: created_at, to: entered_closed_at, group_by: site.line}
      - {name: top_sites, type: top, entity: ticket, group_by: site, limit: 5}
      - {name: created, type: trend, entity: ticket, by: day, last: 3d}
      - {name: closed, type: trend, entity: ticket, metric: closed_count, by: day, last: 3d}
      - {name: backlog_trend, kpi: backlog_trend, entity: ticket, last: 3d}
      - {name: breakpoints, type: breaches, entity: ticket, by: sla}
      - {name: stalls, type: breaches, entity: ticket, by: state}
      - {name: latest, type: list, entity: ticket, fields: [number, summary], limit: 2}
      - {name: frt, kpi: first_response_time, entity: ticket}
      - {name: resolution, kpi: resolution_time, entity: ticket}
      - {name: fcr, kpi: first_contact_resolution, entity: ticket}
      - {name: backlog, kpi: backlog, entity: ticket}
      - {name: csat, kpi: csat, entity: ticket, group_by: site.line}
      - {name: frr, kpi: first_response_rate, entity: ticket, within: 2h}
      - {name: breach_rate, kpi: breakpoint_rate, entity: ticket}
      - {name: secret, type: sum, entity: ticket, field: secret}
"""

NOW = dt.datetime(2026, 3, 4, 12, 0, tzinfo=SH)  # a Wednesday noon
USERS = {"rita": ["reporter"], "ron": ["reporter"], "dan": ["service"], "mia": ["manager"]}


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=SH)


def build(api: Api) -> None:
    """Five tickets (times are Asia/Shanghai):

    T1 rita, hw, site S1 (line a): created 03-02 23:30, dispatched 03-03 00:20 (50 min), accepted
       00:40, finished 02:00, confirmed 03:30 (4 h); rating 5, cost 100.50.
    T2 ron, sw, S2 (line b): created 03-03 09:00, dispatched 12:00 (3 h, late), accepted 12:30,
       finished 13:00, reworked 14:00 (reopened), finished 15:00, confirmed 15:30 (6.5 h; the
       resolution clock paused 13:00-14:00 and 15:00-15:30: 5 h of its 6 h); rating 3, cost 200.
    T3 rita, hw, S1: created 03-03 23:59, dispatched 03-04 00:10 (11 min); open.
    T4 ron, net, S2: created 03-04 07:30 (23:30 UTC the day before); pending.
    T5 dan, sw, S1: created 03-01 10:00, dispatched 10:30, accepted 11:00, finished 12:00,
       confirmed 13:00 (3 h); rating 4, cost 50.25.
    """
    records = api.instance.records("desk")
    actors = {name: Actor(api.users[name], name, frozenset(roles)) for name, roles in USERS.items()}
    dan = actors["dan"]
    s1 = records.create("site", {"code": "S1", "line": "a"}, dan, now=at(1, 8))["id"]
    s2 = records.create("site", {"code": "S2", "line": "b"}, dan, now=at(1, 8))["id"]

    def ticket(by: str, when: dt.datetime, summary: str, category: str, site: int, **values: object) -> int:
        return records.create("ticket", {"summary": summary, "category": category, "site": site, **values}, actors[by], now=when)["id"]

    def move(record_id: int, *steps: tuple[str, dt.datetime]) -> None:
        for name, when in steps:
            workflow.transition(records, "ticket", record_id, name, {}, None, SYSTEM, now=when)

    t5 = ticket("dan", at(1, 10), "T5", "sw", s1, rating=4, cost="50.25")
    move(t5, ("dispatch", at(1, 10, 30)), ("accept", at(1, 11)), ("finish", at(1, 12)), ("confirm", at(1, 13)))
    t1 = ticket("rita", at(2, 23, 30), "T1", "hw", s1, rating=5, cost="100.50")
    move(t1, ("dispatch", at(3, 0, 20)), ("accept", at(3, 0, 40)), ("finish", at(3, 2)), ("confirm", at(3, 3, 30)))
    t2 = ticket("ron", at(3, 9), "T2", "sw", s2, rating=3, cost="200")
    move(t2, ("dispatch", at(3, 12)), ("accept", at(3, 12, 30)), ("finish", at(3, 13)), ("rework", at(3, 14)),
         ("finish", at(3, 15)), ("confirm", at(3, 15, 30)))  # fmt: skip
    t3 = ticket("rita", at(3, 23, 59), "T3", "hw", s1)
    move(t3, ("dispatch", at(4, 0, 10)))
    ticket("ron", at(4, 7, 30), "T4", "net", s2)
    scan.run_due(api.instance, NOW, deliver_outbox=False)  # the breaches the time scan records


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api(db_url, write_definitions, open_instance, monkeypatch) -> Api:
    instance = open_instance(write_definitions({"desk/app.yaml": DEFINITION}), db_url)
    api = make_api(instance, USERS, app="desk")
    build(api)
    monkeypatch.setattr("engine.records.utcnow", lambda: NOW)
    return api


async def dashboard(api: Api, user: str, query: str = "") -> dict[str, dict]:
    async with api.client(api.auth(user)) as http:
        response = await http.get(f"/api/v1/desk/dashboards/ops{query}")
    assert response.status_code == 200, response.text
    return {card["name"]: card for card in response.json()["cards"]}


async def listed(api: Api, user: str, url: str) -> list[str]:
    """The summaries on the list page a number links to (its JSON twin)."""
    path, _, query = url.partition("?")
    async with api.client({"Cookie": f"kiln_session={api.session_cookie(user)}", "Accept": "application/json"}) as http:
        response = await http.get(f"{path}?{query}&limit=100" if query else f"{path}?limit=100")
    assert response.status_code == 200, (url, response.text)
    return sorted(item["summary"] for item in response.json()["items"])


def groups(card: dict) -> dict:
    return {g["key"]: g["value"] for g in card["groups"]}


async def test_every_figure_computed_by_hand(api: Api) -> None:
    cards = await dashboard(api, "mia")
    assert cards["tickets"]["value"] == 5 and groups(cards["tickets"]) == {"hw": 2, "sw": 2, "net": 1}
    assert cards["cost"]["value"] == pytest.approx(350.75)  # 100.50 + 200 + 50.25
    # created -> closed: T1 4 h and T5 3 h on line a, T2 6.5 h on line b
    assert cards["by_line"]["value"] == pytest.approx((4 + 6.5 + 3) * H / 3)
    assert groups(cards["by_line"]) == {"a": pytest.approx(3.5 * H), "b": pytest.approx(6.5 * H)}
    # nearest rank over [3 h, 4 h, 6.5 h]: p50 is the 2nd (ceil(1.5)), p90 the 3rd (ceil(2.7))
    assert cards["p50"]["value"] == pytest.approx(4 * H)
    assert groups(cards["p90"]) == {"a": pytest.approx(4 * H), "b": pytest.approx(6.5 * H)}
    top = cards["top_sites"]["groups"]
    assert [(g["label"], g["value"]) for g in top] == [("S1", 3), ("S2", 2)]
    # local days 03-02, 03-03, 03-04: T4 at 07:30 on 03-04 is 23:30 UTC on 03-03, T3 at 23:59 on 03-03
    assert [p["value"] for p in cards["created"]["series"]] == [1, 2, 1]
    assert [p["label"] for p in cards["created"]["series"]] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert [p["value"] for p in cards["closed"]["series"]] == [0, 2, 0]  # T1 03:30 and T2 15:30 on 03-03
    # open at 03-03 00:00: T1; at 03-04 00:00: T3; at noon: T3, T4
    assert [p["value"] for p in cards["backlog_trend"]["series"]] == [1, 1, 2]
    # first_response: T2 met late, T4 overdue since 08:30; resolution: T3 overdue since 05:59;
    # T2's resolution clock paused 1.5 h, so 6.5 h on the wall is 5 h of its 6 h: not breached
    breaches = cards["breakpoints"]
    assert groups(breaches) == {"first_response": 2, "resolution": 1}
    assert {g["key"]: g["started"] for g in breaches["groups"]} == {"first_response": 5, "resolution": 5}
    assert breaches["value"] == 3 and breaches["rate"] == pytest.approx(0.3)
    assert groups(cards["stalls"]) == {"pending": 1, "dispatched": 1, "in_progress": 0, "awaiting_check": 0}
    assert [i["summary"] for i in cards["latest"]["items"]] == ["T4", "T3"]
    # KPIs: first response over the 4 dispatched (50 min, 3 h, 11 min, 30 min)
    assert cards["frt"]["value"] == pytest.approx((50 + 180 + 11 + 30) * 60 / 4)
    assert cards["resolution"]["value"] == pytest.approx((4 + 6.5 + 3) * H / 3)
    assert cards["fcr"]["value"] == pytest.approx(2 / 3)  # T2 was reworked
    assert cards["backlog"]["value"] == 2
    assert cards["csat"]["value"] == pytest.approx(4.0) and groups(cards["csat"]) == {"a": 4.5, "b": 3}
    assert cards["frr"]["value"] == pytest.approx(3 / 5)  # T1, T3, T5 within 2 h; T2 late; T4 not yet
    assert cards["breach_rate"]["rate"] == pytest.approx(3 / 10)


async def test_every_number_links_to_exactly_its_records(api: Api) -> None:
    cards = await dashboard(api, "mia")
    expected = {
        cards["tickets"]["list"]: ["T1", "T2", "T3", "T4", "T5"],
        cards["by_line"]["list"]: ["T1", "T2", "T5"],
        cards["breakpoints"]["list"]: ["T2", "T3", "T4"],
        cards["fcr"]["numerator_list"]: ["T1", "T5"],
        cards["frr"]["numerator_list"]: ["T1", "T3", "T5"],
        cards["backlog"]["list"]: ["T3", "T4"],
        cards["csat"]["list"]: ["T1", "T2", "T5"],
    }
    for url, summaries in expected.items():
        assert await listed(api, "mia", url) == summaries, url
    checks = [
        (cards["tickets"]["groups"], {"hw": ["T1", "T3"], "sw": ["T2", "T5"], "net": ["T4"]}),
        (cards["by_line"]["groups"], {"a": ["T1", "T5"], "b": ["T2"]}),
        (cards["breakpoints"]["groups"], {"first_response": ["T2", "T4"], "resolution": ["T3"]}),
        (cards["stalls"]["groups"], {"pending": ["T4"], "dispatched": ["T3"], "in_progress": [], "awaiting_check": []}),
    ]
    for points, by_key in checks:
        for point in points:
            assert await listed(api, "mia", point["list"]) == by_key[point["key"]], point
    for point, summaries in zip(cards["created"]["series"], [["T1"], ["T2", "T3"], ["T4"]], strict=True):
        assert await listed(api, "mia", point["list"]) == summaries
    for point, summaries in zip(cards["backlog_trend"]["series"], [["T1"], ["T3"], ["T3", "T4"]], strict=True):
        assert await listed(api, "mia", point["list"]) == summaries
    for point in cards["top_sites"]["groups"]:
        assert len(await listed(api, "mia", point["list"])) == point["value"]


async def test_the_filters_change_every_card(api: Api) -> None:
    cards = await dashboard(api, "mia", "?category=hw")
    assert cards["tickets"]["value"] == 2 and groups(cards["tickets"]) == {"hw": 2}
    assert [p["value"] for p in cards["created"]["series"]] == [1, 1, 0]
    assert await listed(api, "mia", cards["tickets"]["list"]) == ["T1", "T3"]
    cards = await dashboard(api, "mia", "?site.line=b")
    assert cards["tickets"]["value"] == 2 and cards["csat"]["value"] == 3
    assert await listed(api, "mia", cards["tickets"]["list"]) == ["T2", "T4"]
    # a local day: T4 (07:30 on 03-04, 03-03 in UTC) is not of 03-03
    cards = await dashboard(api, "mia", "?created_at.from=2026-03-03&created_at.to=2026-03-03")
    assert cards["tickets"]["value"] == 2
    assert await listed(api, "mia", cards["tickets"]["list"]) == ["T2", "T3"]
    async with api.client(api.auth("mia")) as http:
        bad = await http.get("/api/v1/desk/dashboards/ops?created_at.from=yesterday")
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == {"created_at": "invalid date"}


async def test_a_reporter_sees_figures_over_their_own_rows_only(api: Api) -> None:
    cards = await dashboard(api, "rita")
    assert cards["tickets"]["value"] == 2 and groups(cards["tickets"]) == {"hw": 2}  # T1 and T3
    assert [p["value"] for p in cards["created"]["series"]] == [1, 1, 0]
    assert groups(cards["breakpoints"]) == {"first_response": 0, "resolution": 1}
    assert cards["csat"]["value"] == 5
    assert "error" in cards["secret"] and cards["secret"]["value"] is None  # a hidden field is never summed
    assert await listed(api, "rita", cards["tickets"]["list"]) == ["T1", "T3"]


async def test_dashboards_are_listed_per_role_and_unknown_ones_are_404(api: Api) -> None:
    async with api.client(api.auth("mia")) as http:
        listing = (await http.get("/api/v1/desk/dashboards")).json()
        missing = await http.get("/api/v1/desk/dashboards/nope")
    assert [d["name"] for d in listing["items"]] == ["ops"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_filters_are_read_as_the_list_reads_them(api: Api) -> None:
    service = Dashboards(api.instance.records("desk"))
    ops = service.get("ops", Actor(None, "admin", is_admin=True))
    filters = Filters.parse(ops, {"category": ["hw", "sw"], "site.line": ["b"], "created_at.from": "2026-03-03"})
    drill = filters.drill(service.records, service.records.entity("ticket"))
    assert drill.filters == (("category", ("hw", "sw")),)
    assert drill.where == '(site.line in ["b"]) and (created_at >= "2026-03-03T00:00:00+08:00")'


async def page_client(api: Api, user: str):
    return api.client({"Cookie": f"kiln_session={api.session_cookie(user)}"})


async def test_the_page_shows_every_card_links_and_refreshes_by_htmx(api: Api) -> None:
    async with await page_client(api, "mia") as http:
        full = await http.get("/a/desk/dashboards/ops?category=hw")
        fragment = await http.get("/a/desk/-/dashboards/ops?category=hw", headers={"HX-Request": "true"})
        english = await http.get("/a/desk/dashboards/ops?locale=en", headers={"Accept-Language": "en"})
        csv = await http.get("/a/desk/dashboards/ops/tickets.csv?category=hw")
        xlsx = await http.get("/a/desk/dashboards/ops/created.xlsx")
        first = await http.get("/a/desk/dashboards")
    assert full.status_code == 200 and "/static/vendor/chart.umd.min.js" in full.text
    assert 'href="/a/desk/ticket?category=hw"' in full.text and 'id="dashboard-filters"' in full.text
    assert full.text.count('class="card dash-card') == 20 and "运维看板" in full.text
    assert fragment.status_code == 200 and "<html" not in fragment.text and 'id="dashboard-cards"' in fragment.text
    assert fragment.headers["vary"].startswith("HX-Request")
    assert english.status_code == 200
    assert csv.status_code == 200 and csv.text.splitlines()[1].endswith(",2") and "硬件,2" in csv.text
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    assert first.status_code == 200 and 'id="card-tickets"' in first.text


async def test_the_page_of_a_reporter_counts_their_rows_only(api: Api) -> None:
    async with await page_client(api, "rita") as http:
        page = await http.get("/a/desk/dashboards/ops", headers={"Accept": "application/json"})
    cards = {c["name"]: c for c in page.json()["cards"]}
    assert cards["tickets"]["value"] == 2 and cards["backlog"]["value"] == 1  # T1, T3; T3 open


async def test_the_app_menu_lists_the_dashboards_a_user_may_open(api: Api) -> None:
    async with await page_client(api, "mia") as http:
        manager = await http.get("/a/desk/ticket")
    async with await page_client(api, "dan") as http:
        service = await http.get("/a/desk/ticket")
    assert 'href="/a/desk/dashboards/ops"' in manager.text and 'href="/a/desk/dashboards/ops"' in service.text
    assert "运维看板" in manager.text
