"""Forms and the record page: create, 422 with every message, conditions evaluated on the server
as the user types, required_if, validations, prefill, edit with a stale version, the timeline,
XSS and CSRF."""

from __future__ import annotations

import re

import pytest

from tests.test_pages_support import CSRF, Desk, form, make_tickets, open_desk

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def desk(write_definitions, open_instance, db_url: str) -> Desk:
    return open_desk(write_definitions, open_instance, db_url)


def message(html: str, field: str) -> str | None:
    found = re.search(rf'<p class="message" id="err-{field}" role="alert">([^<]*)</p>', html)
    return found.group(1) if found else None


@pytest.mark.anyio
async def test_new_form_renders_the_layout(desk: Desk):
    async with desk.client("alice") as c:
        r = await c.get("/a/desk/ticket/new")
    assert r.status_code == 200
    assert "<legend>Basics</legend>" in r.text and "<legend>Network</legend>" not in r.text
    assert 'name="summary"' in r.text and 'name="can_ping"' not in r.text
    assert 'value="normal" checked' in r.text  # the field's default
    assert 'name="secret_note"' not in r.text  # hidden from agents
    assert 'hx-post="/a/desk/ticket/form" hx-trigger="change" hx-target="#form-sections" hx-swap="outerHTML"' in r.text


@pytest.mark.anyio
async def test_a_section_appears_when_the_dropdown_changes(desk: Desk):
    async with desk.client("alice") as c:
        shown = await c.post("/a/desk/ticket/form", data=form(summary="x", category="network"), headers={"hx-request": "true"})
        hidden = await c.post("/a/desk/ticket/form", data=form(summary="x", category="hardware"), headers={"hx-request": "true"})
        required = await c.post("/a/desk/ticket/form", data=form(summary="x", category="hardware", urgency="high"))
        validation = await c.post("/a/desk/ticket/form", data=form(summary="x", category="system"))
    assert shown.status_code == 200 and shown.text.lstrip().startswith("<div id=\"form-sections\">")
    assert "<legend>Network</legend>" in shown.text and 'name="can_ping"' in shown.text
    assert 'value="x"' in shown.text  # what was typed stays
    assert "<legend>Network</legend>" not in hidden.text
    assert re.search(r'for="in-reason">Reason <span class="req"', required.text)  # required_if holds now
    assert not re.search(r'for="in-reason">Reason <span class="req"', hidden.text)
    assert message(validation.text, "server_ip") == "请补充服务器IP以便远程诊断"  # shown while typing


@pytest.mark.anyio
async def test_create_and_go_to_the_record(desk: Desk):
    make_tickets(desk, 1)
    site = desk.records().list("site", desk.actor("alice")).items[0]["id"]
    async with desk.client("alice") as c:
        r = await c.post("/a/desk/ticket/new", data=form(
            summary="No network in room 3", category="network", urgency="normal", can_ping="true", packet_loss="12.5",
            site=str(site), assignee="bob", due="2026-03-01", tags="wifi, 楼层3", contact="a@example.com",
        ))  # fmt: skip
        assert r.status_code == 303
        record = (await c.get(r.headers["location"] + ".json")).json()["record"]
    assert record["summary"] == "No network in room 3" and record["can_ping"] is True and record["packet_loss"] == "12.50"
    assert record["assignee"] == "bob" and record["tags"] == ["wifi", "楼层3"] and record["site"] == site


@pytest.mark.anyio
async def test_fields_of_a_hidden_section_are_not_saved(desk: Desk):
    async with desk.client("alice") as c:
        r = await c.post("/a/desk/ticket/new", data=form(summary="disk", category="hardware", can_ping="true", packet_loss="50"))
        record = (await c.get(r.headers["location"] + ".json")).json()["record"]
    assert record["can_ping"] is None and record["packet_loss"] is None


@pytest.mark.anyio
async def test_a_bad_submit_is_422_with_every_message(desk: Desk):
    async with desk.client("alice") as c:
        r = await c.post("/a/desk/ticket/new", data=form(summary="", urgency="high", contact="not-an-email", packet_loss="x"))
    assert r.status_code == 422
    assert message(r.text, "summary") == "required" and message(r.text, "category") == "required"
    assert message(r.text, "contact") == "expected an e-mail address"
    assert message(r.text, "reason") == "required"  # required_if urgency == "high"
    assert 'id="form-errors"' in r.text and 'value="not-an-email"' in r.text
    async with desk.client("alice") as c:
        r = await c.post("/a/desk/ticket/new", data=form(summary="db down", category="system"))
    assert r.status_code == 422 and message(r.text, "server_ip") == "请补充服务器IP以便远程诊断"


@pytest.mark.anyio
async def test_prefill_from_the_query_string(desk: Desk):
    make_tickets(desk, 1)
    site = desk.records().list("site", desk.actor("alice")).items[0]
    async with desk.client("alice") as c:
        r = await c.get(f"/a/desk/ticket/new?site={site['id']}&summary=Scanned&category=network")
    assert 'name="summary" aria-required="true" value="Scanned"' in r.text
    assert f'<input type="hidden" name="site" value="{site["id"]}">Main hall' in r.text
    assert "<legend>Network</legend>" in r.text


@pytest.mark.anyio
async def test_edit_sends_only_changes_and_a_stale_version_conflicts(desk: Desk):
    ticket = make_tickets(desk, 1)[0]
    url = f"/a/desk/ticket/{ticket['id']}"
    async with desk.client("alice") as c:
        page = await c.get(url + "/edit")
        assert page.status_code == 200 and 'name="version" value="1"' in page.text
        ok = await c.post(url + "/edit", data=form(version="1", summary="renamed", category="network", server_ip="10.0.0.1"))
        assert ok.status_code == 303 and ok.headers["location"] == url
        stale = await c.post(url + "/edit", data=form(version="1", summary="again", category="network"))
        assert stale.status_code == 409 and 'id="conflict"' in stale.text and "Someone else changed this record" in stale.text
        assert 'value="again"' in stale.text  # the user's input is kept
        history = (await c.get(url + ".json")).json()["history"]
    assert [sorted(e["changes"]) for e in history[1:]] == [["summary"]]
    assert history[1]["changes"]["summary"] == ["ticket 00", "renamed"]


@pytest.mark.anyio
async def test_who_may_not_update_gets_no_edit(desk: Desk):
    ticket = make_tickets(desk, 1)[0]
    async with desk.client("vera") as c:
        detail = await c.get(f"/a/desk/ticket/{ticket['id']}")
        assert detail.status_code == 200 and 'data-action="edit"' not in detail.text
        assert (await c.get(f"/a/desk/ticket/{ticket['id']}/edit")).status_code == 403
        assert (await c.get("/a/desk/ticket/new")).status_code == 403


@pytest.mark.anyio
async def test_detail_shows_fields_and_the_timeline(desk: Desk):
    ticket = make_tickets(desk, 1)[0]
    records = desk.records()
    records.update("ticket", ticket["id"], {"urgency": "high", "reason": "VIP"}, 1, desk.actor("bob"))
    async with desk.client("alice") as c:
        r = await c.get(f"/a/desk/ticket/{ticket['id']}")
    assert r.status_code == 200 and "<h1>T0001 ticket 00</h1>" in r.text
    assert 'data-action="edit"' in r.text and f'href="/a/desk/ticket/{ticket["id"]}/edit"' in r.text
    assert '<a href="/a/desk/site/' in r.text and "Main hall" in r.text  # a link field shows its title
    timeline = r.text[r.text.index('id="timeline"'):]
    assert "<strong>bob</strong>" in timeline and "<strong>alice</strong>" in timeline
    assert "Urgency: <del>Normal</del> → <ins>High</ins>" in timeline
    assert "Reason: <del>—</del> → <ins>VIP</ins>" in timeline
    assert "Secret note" not in r.text


@pytest.mark.anyio
async def test_xss_in_every_text_field_renders_inert(desk: Desk):
    records = desk.records()
    admin = desk.actor("root")
    site = records.create("site", {"name": XSS}, admin)
    values = {name: XSS for name in ("summary", "details", "reason", "server_ip", "place", "secret_note")}
    ticket = records.create("ticket", {**values, "category": "other", "site": site["id"], "tags": [XSS],
                                       "homepage": "https://example.com/?q=<script>"}, admin)  # fmt: skip
    base = f"/a/desk/ticket/{ticket['id']}"
    async with desk.client("root") as c:
        pages = [await c.get(u) for u in ("/a/desk/ticket", base, base + "/edit", "/", "/a/desk/ticket/lookup/site?q=script")]
        pages.append(await c.post("/a/desk/ticket/form", data=form(**values, category="network")))
        pages.append(await c.post("/a/desk/ticket/new", data=form(**values)))
    for page in pages:
        assert page.status_code in (200, 422)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in pages[1].text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in pages[0].text  # the list's cells, escaped in Python


@pytest.mark.anyio
async def test_a_post_without_the_csrf_token_is_refused(desk: Desk):
    ticket = make_tickets(desk, 1)[0]
    async with desk.client("alice") as c:
        for url in ("/a/desk/ticket/new", f"/a/desk/ticket/{ticket['id']}/edit", "/a/desk/ticket/bulk", "/a/desk/ticket/views"):
            r = await c.post(url, data={"summary": "x", "category": "other", "version": "1", "name": "v"})
            assert r.status_code == 403, url
            wrong = await c.post(url, data={"csrf_token": CSRF + "x", "summary": "x"})
            assert wrong.status_code == 403, url
    assert desk.records().count("ticket", desk.actor("root")) == (1, False)


@pytest.mark.anyio
async def test_pages_in_chinese(desk: Desk):
    make_tickets(desk, 1)
    async with desk.client("alice", lang="zh") as c:
        r = await c.get("/")
    assert '<html lang="zh-CN">' in r.text and "我创建的" in r.text and "工单" in r.text


@pytest.mark.anyio
async def test_an_unchanged_layout_is_not_swapped(desk: Desk):
    async with desk.client("alice") as c:
        page = await c.get("/a/desk/ticket/new")
        layout = re.search(r'name="_layout" value="(\w+)"', page.text).group(1)
        same = await c.post("/a/desk/ticket/form", data=form(_layout=layout, summary="typing", urgency="normal"))
        changed = await c.post("/a/desk/ticket/form", data=form(_layout=layout, summary="typing", category="network"))
    assert same.status_code == 204 and same.text == ""
    assert changed.status_code == 200 and "<legend>Network</legend>" in changed.text
