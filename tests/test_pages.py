"""The generated pages through an in-process client: workspace, lists (filters, search, sort,
keyset pages both ways, the count apart), JSON twins, saved views, bulk updates, lookups."""

from __future__ import annotations

import re

import pytest

from apps.web.pages import lists
from tests.test_pages_support import Desk, form, make_tickets, open_desk


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def desk(write_definitions, open_instance, db_url: str) -> Desk:
    return open_desk(write_definitions, open_instance, db_url)


def numbers(html: str) -> list[str]:
    return re.findall(r'<a href="/a/desk/ticket/\d+">(T\d{4})</a>', html)


@pytest.mark.anyio
async def test_pages_need_a_login(desk: Desk):
    async with desk.client(None) as c:
        r = await c.get("/a/desk/ticket?q=x")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fa%2Fdesk%2Fticket%3Fq%3Dx"
        assert (await c.get("/")).headers["location"] == "/login?next=%2F"
        assert (await c.get("/a/desk/ticket.json")).status_code == 401


@pytest.mark.anyio
async def test_an_app_without_a_role_is_not_found(desk: Desk):
    async with desk.client("nobody") as c:
        assert (await c.get("/a/desk/ticket")).status_code == 404
        assert (await c.get("/a/nope/ticket")).status_code == 404


@pytest.mark.anyio
async def test_workspace_shows_my_open_records(desk: Desk):
    make_tickets(desk, 3, by="alice")
    make_tickets(desk, 2, by="bob", assignee="alice")
    async with desk.client("alice") as c:
        r = await c.get("/")
    assert r.status_code == 200
    assert "Created by me" in r.text and "Assigned to me" in r.text
    assert re.search(r'\(3\)</a>', r.text) and re.search(r'\(2\)</a>', r.text)
    assert "/a/desk/ticket?state=open&amp;created_by=alice" in r.text


@pytest.mark.anyio
async def test_people_show_by_their_display_names(desk: Desk):
    from sqlalchemy import update

    users = desk.instance.schema.system["kiln_users"]
    with desk.instance.engine.begin() as conn:
        conn.execute(update(users).where(users.c.username == "alice").values(display_name="爱丽丝"))
    ticket = make_tickets(desk, 1, by="bob", assignee="alice")[0]
    async with desk.client("alice") as c:
        record = await c.get(f"/a/desk/ticket/{ticket['id']}")
    fields = record.text.split('id="timeline"')[0].split("</h1>")[1]
    assert "爱丽丝" in fields and ">alice<" not in fields


@pytest.mark.anyio
async def test_list_filters_search_and_count(desk: Desk):
    tickets = make_tickets(desk, 9)
    desk.records().update("ticket", tickets[0]["id"], {"summary": "printer on fire"}, 1, desk.actor("alice"))
    async with desk.client("alice") as c:
        r = await c.get("/a/desk/ticket?category=network")
        assert r.status_code == 200 and r.headers["vary"].startswith("HX-Request")
        assert numbers(r.text) == ["T0007", "T0004", "T0001"]
        assert 'hx-get="/a/desk/ticket/count?category=network"' in r.text
        assert (await c.get("/a/desk/ticket/count?category=network")).text.strip() == "3 records"
        assert numbers((await c.get("/a/desk/ticket?category=network&category=system")).text) == [
            "T0008", "T0007", "T0005", "T0004", "T0002", "T0001"]  # fmt: skip
        assert numbers((await c.get("/a/desk/ticket?q=fire")).text) == ["T0001"]
        assert numbers((await c.get("/a/desk/ticket?q=nothing-like-it")).text) == []
        site = tickets[0]["site"]
        assert len(numbers((await c.get(f"/a/desk/ticket?site={site}")).text)) == 9
        assert numbers((await c.get("/a/desk/ticket?state=done")).text) == []
        today = "2000-01-01"
        assert numbers((await c.get(f"/a/desk/ticket?created_at.to={today}")).text) == []
        assert len(numbers((await c.get(f"/a/desk/ticket?created_at.from={today}")).text)) == 9
        assert (await c.get("/a/desk/ticket?created_at.from=yesterday")).status_code == 400


@pytest.mark.anyio
async def test_count_is_capped(desk: Desk, monkeypatch: pytest.MonkeyPatch):
    make_tickets(desk, 4)
    monkeypatch.setattr(lists, "COUNT_CAP", 3)
    async with desk.client("alice") as c:
        assert (await c.get("/a/desk/ticket/count")).text.strip() == "3+ records"
        assert (await c.get("/a/desk/ticket/count", headers={"accept": "application/json"})).json() == {"count": 3, "more": True, "cap": 3}


@pytest.mark.anyio
async def test_sort_and_keyset_pages_both_ways(desk: Desk):
    make_tickets(desk, 7)
    async with desk.client("alice") as c:
        r = await c.get("/a/desk/ticket?sort=summary&limit=3")
        seen = [numbers(r.text)]
        assert seen[0] == ["T0001", "T0002", "T0003"]
        assert 'aria-sort="ascending"' in r.text
        while (link := re.search(r'href="(/a/desk/ticket\?[^"]*cursor=[^"]+)"[^>]*rel="next"', r.text)):
            r = await c.get(link.group(1).replace("&amp;", "&"), headers={"hx-request": "true"})
            assert "<html" not in r.text  # the fragment only
            seen.append(numbers(r.text))
        assert [n for page in seen for n in page] == [f"T{i:04d}" for i in range(1, 8)]
        # back again with "previous", from the last page
        back = []
        while (link := re.search(r'href="(/a/desk/ticket\?[^"]*before=[^"]+)"[^>]*rel="prev"', r.text)):
            r = await c.get(link.group(1).replace("&amp;", "&"))
            back.append(numbers(r.text))
        assert back == [["T0004", "T0005", "T0006"], ["T0001", "T0002", "T0003"]]
        desc = await c.get("/a/desk/ticket?sort=-summary&limit=2")
        assert numbers(desc.text) == ["T0007", "T0006"]
        assert (await c.get("/a/desk/ticket?sort=secret_note")).status_code == 400  # hidden from agents


@pytest.mark.anyio
async def test_json_twins(desk: Desk):
    tickets = make_tickets(desk, 3)
    async with desk.client("alice") as c:
        twin = (await c.get("/a/desk/ticket.json?limit=2")).json()
        same = (await c.get("/a/desk/ticket?limit=2", headers={"accept": "application/json"})).json()
        assert twin == same
        assert [i["number"] for i in twin["items"]] == ["T0003", "T0002"] and twin["next_cursor"]
        assert "secret_note" not in twin["items"][0]
        detail = (await c.get(f"/a/desk/ticket/{tickets[0]['id']}.json")).json()
        assert detail["record"]["summary"] == "ticket 00" and detail["history"][0]["action"] == "create"
        assert detail["may_update"] is True
        missing = await c.get("/a/desk/ticket/999.json")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.anyio
async def test_saved_views(desk: Desk):
    make_tickets(desk, 3)
    async with desk.client("alice") as c:
        r = await c.post("/a/desk/ticket/views", data=form(name="My network", query="category=network&cursor=abc&q=t"))
        assert r.status_code == 303 and r.headers["location"] == "/a/desk/ticket?category=network&q=t"
        page = await c.get("/a/desk/ticket")
        assert 'href="/a/desk/ticket?category=network&amp;q=t">My network</a>' in page.text
        view_id = re.search(r'/a/desk/ticket/views/(\d+)/delete', page.text).group(1)
    async with desk.client("bob") as c:  # views are per user
        assert "My network" not in (await c.get("/a/desk/ticket")).text
        assert (await c.post(f"/a/desk/ticket/views/{view_id}/delete", data=form())).status_code == 404
    async with desk.client("alice") as c:
        assert (await c.post(f"/a/desk/ticket/views/{view_id}/delete", data=form())).status_code == 303
        assert "My network" not in (await c.get("/a/desk/ticket")).text


@pytest.mark.anyio
async def test_bulk_update_reports_each_row(desk: Desk):
    tickets = make_tickets(desk, 3)
    stale = tickets[1]
    desk.records().update("ticket", stale["id"], {"summary": "changed meanwhile"}, 1, desk.actor("bob"))
    ids = [f"{t['id']}:{t['version']}" for t in tickets]
    async with desk.client("alice") as c:
        r = await c.post("/a/desk/ticket/bulk", data=form(field="category", category="other", ids=ids), headers={"hx-request": "true"})
    assert r.status_code == 200 and "<html" not in r.text
    assert "2 of 3 rows changed" in r.text
    assert f"#{stale['id']}" in r.text and "changed by someone else" in r.text
    records = desk.records()
    assert [records.get("ticket", t["id"], desk.actor("alice"))["category"] for t in tickets] == ["other", "system", "other"]


@pytest.mark.anyio
async def test_bulk_failures_name_the_rule(desk: Desk):
    tickets = make_tickets(desk, 1)
    async with desk.client("alice") as c:
        r = await c.post("/a/desk/ticket/bulk", data=form(field="urgency", urgency="high", ids=[f"{tickets[0]['id']}:1"]))
    assert r.status_code == 200 and "<html" in r.text  # no HTMX: the whole page
    assert "0 of 1 rows changed" in r.text and "reason: required" in r.text


@pytest.mark.anyio
async def test_lookups_search_as_you_type(desk: Desk):
    make_tickets(desk, 1)
    desk.records().create("site", {"name": "Warehouse <b>2</b>"}, desk.actor("alice"))
    async with desk.client("alice") as c:
        r = await c.get("/a/desk/ticket/lookup/site?q=ware")
        assert 'data-label="Warehouse &lt;b&gt;2&lt;/b&gt;"' in r.text and "Main hall" not in r.text
        users = await c.get("/a/desk/ticket/lookup/assignee?q=")
        assert 'data-value="alice"' in users.text and 'data-value="bob"' in users.text
        assert 'data-value="vera"' not in users.text  # not an agent
        assert (await c.get("/a/desk/ticket/lookup/summary?q=x")).status_code == 404
