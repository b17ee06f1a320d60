"""The pages of notifications: /-/notifications (a user's in-app notifications, mark read), the
unread count in the header, GET /api/v1/me/notifications, and /-/outbox with its retry button."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import insert, select

from engine import outbox
from tests.test_pages_support import CSRF, Desk, open_desk

NOW = dt.datetime(2026, 3, 4, 2, 0, tzinfo=dt.UTC)
HTMX = {"HX-Request": "true", "X-CSRF-Token": CSRF}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def desk(write_definitions, open_instance, db_url: str) -> Desk:
    return open_desk(write_definitions, open_instance, db_url)


def notify(
    desk: Desk, user: str, n: int, subject: str = "Ticket T{i}", record_id: int | None = 7
) -> list[int]:
    """``n`` delivered in-app notifications for ``user``, oldest first; returns their ids."""
    table = desk.instance.schema.system["kiln_notifications"]
    with desk.instance.engine.begin() as conn:
        start = conn.execute(select(table.c.outbox_id).order_by(table.c.outbox_id.desc())).scalar() or 0
        return [
            conn.execute(
                insert(table).values(
                    user_id=desk.users[user], outbox_id=start + i + 1, app="desk", entity="ticket", record_id=record_id,
                    subject=subject.format(i=i), body=f"body {i}", created_at=NOW + dt.timedelta(minutes=i),
                ).returning(table.c.id)
            ).scalar_one()
            for i in range(n)
        ]  # fmt: skip


def badge(html: str) -> str | None:
    found = re.search(
        r'<span id="unread-count" class="count-badge"[^>]*?( hidden)?[^>]*>([^<]*)</span>', html
    )
    assert found, "no unread badge in the page"
    return None if found.group(1) else found.group(2)


@pytest.mark.anyio
async def test_the_list_shows_my_notifications_newest_first_page_by_page(desk: Desk):
    ids = notify(desk, "alice", 35)
    notify(desk, "bob", 1, subject="Not for alice")
    async with desk.client("alice") as http:
        first = await http.get("/-/notifications")
        assert first.status_code == 200
        shown = [int(i) for i in re.findall(r'<li id="n-(\d+)"', first.text)]
        assert shown == ids[::-1][:30] and "Not for alice" not in first.text
        assert (
            'href="/a/desk/ticket/7"' in first.text
            and "Ticket T34" in first.text
            and "2026-03-04 10:34" in first.text
        )
        assert f"/-/notifications?before={ids[5]}" in first.text
        second = await http.get(f"/-/notifications?before={ids[5]}")
        assert [int(i) for i in re.findall(r'<li id="n-(\d+)"', second.text)] == ids[4::-1]
        assert "Next page" not in second.text and "First page" in second.text
        data = (await http.get("/-/notifications.json")).json()
        assert len(data["items"]) == 30 and data["next_before"] == ids[5] and data["unread"] == 35
        assert data["items"][0] == {
            "id": ids[-1], "app": "desk", "entity": "ticket", "record_id": 7, "subject": "Ticket T34", "body": "body 34",
            "created_at": (NOW + dt.timedelta(minutes=34)).isoformat(), "read": False, "href": "/a/desk/ticket/7",
        }  # fmt: skip


@pytest.mark.anyio
async def test_the_header_shows_the_unread_count_capped_at_99(desk: Desk):
    async with desk.client("alice") as http:
        assert badge((await http.get("/")).text) is None  # none unread: hidden
        notify(desk, "alice", 3)
        assert badge((await http.get("/")).text) == "3"
        notify(desk, "alice", 97)
        assert badge((await http.get("/-/notifications")).text) == "99+"
    async with desk.client(None) as http:
        assert "unread-count" not in (await http.get("/login")).text


@pytest.mark.anyio
async def test_mark_one_read_swaps_the_item_and_the_count(desk: Desk):
    ids = notify(desk, "alice", 3)
    async with desk.client("alice") as http:
        response = await http.post(f"/-/notifications/{ids[0]}/read", headers=HTMX)
        assert response.status_code == 200 and "HX-Request" in response.headers["vary"]
        assert response.text.lstrip().startswith(f'<li id="n-{ids[0]}" class="notification">')
        assert "Mark read" not in response.text
        assert re.search(r'id="unread-count"[^>]*hx-swap-oob="true"[^>]*>2</span>', response.text)
        data = (await http.get("/-/notifications.json")).json()
        assert [i["read"] for i in data["items"]] == [False, False, True] and data["unread"] == 2


@pytest.mark.anyio
async def test_mark_all_read_and_the_plain_form_post(desk: Desk):
    ids = notify(desk, "alice", 3)
    async with desk.client("alice") as http:
        plain = await http.post(f"/-/notifications/{ids[1]}/read", data={"csrf_token": CSRF})
        assert plain.status_code == 303 and plain.headers["location"] == "/-/notifications"
        response = await http.post("/-/notifications/read", headers=HTMX)
        assert response.status_code == 200 and response.text.lstrip().startswith(
            '<section id="notifications"'
        )
        assert "Mark read" not in response.text and "Mark all read" not in response.text
        assert re.search(r'id="unread-count"[^>]*hx-swap-oob="true"[^>]*hidden', response.text)
        assert (await http.get("/-/notifications.json")).json()["unread"] == 0


@pytest.mark.anyio
async def test_marking_needs_the_csrf_token_and_ones_own_notification(desk: Desk):
    (mine,) = notify(desk, "alice", 1)
    (theirs,) = notify(desk, "bob", 1)
    async with desk.client("alice") as http:
        refused = await http.post(f"/-/notifications/{mine}/read", headers={"HX-Request": "true"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert (await http.post("/-/notifications/read", data={})).status_code == 403
        assert (await http.post(f"/-/notifications/{theirs}/read", headers=HTMX)).status_code == 404
        assert (await http.get("/-/notifications.json")).json()["unread"] == 1
    async with desk.client("bob") as http:
        assert (await http.get("/-/notifications.json")).json()["unread"] == 1  # still unread


@pytest.mark.anyio
async def test_anonymous_users_are_sent_to_log_in(desk: Desk):
    async with desk.client(None) as http:
        response = await http.get("/-/notifications")
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
        assert (await http.get("/-/outbox")).status_code == 303
        assert (await http.get("/api/v1/me/notifications")).status_code == 401


@pytest.mark.anyio
async def test_the_api_lists_my_notifications(desk: Desk):
    ids = notify(desk, "alice", 3)
    async with desk.client("alice") as http:
        data = (await http.get("/api/v1/me/notifications?limit=2")).json()
        assert [i["id"] for i in data["items"]] == [ids[2], ids[1]] and data["next_before"] == ids[1]
        rest = (await http.get(f"/api/v1/me/notifications?before={ids[1]}")).json()
        assert (
            [i["id"] for i in rest["items"]] == [ids[0]]
            and rest["next_before"] is None
            and rest["unread"] == 3
        )
        bad = await http.get("/api/v1/me/notifications?limit=0")
        assert bad.status_code == 400 and bad.json()["error"]["fields"] == {"limit": "1 to 100"}


def queue(desk: Desk, status: str, error: str | None = None) -> int:
    table = desk.instance.schema.system["kiln_outbox"]
    with desk.instance.engine.begin() as conn:
        outbox.enqueue(
            conn, table, app="desk", entity="ticket", record_id=3, event_key=f"e/{status}", channel="email",
            recipient=str(desk.users["alice"]), payload={"kind": "notify", "subject": "Hello"}, now=NOW,
        )  # fmt: skip
        row_id = conn.execute(select(table.c.id).where(table.c.event_key == f"e/{status}")).scalar_one()
        conn.execute(
            table.update().where(table.c.id == row_id).values(status=status, attempts=3, last_error=error)
        )
    return row_id


@pytest.mark.anyio
async def test_the_outbox_page_shows_errors_and_retries_a_failed_row(desk: Desk):
    failed = queue(desk, "failed", "user alice has no e-mail address")
    sent = queue(desk, "sent")
    async with desk.client("root") as http:
        page = await http.get("/-/outbox")
        assert page.status_code == 200
        assert (
            f'id="outbox-{failed}" data-status="failed"' in page.text and f'id="outbox-{sent}"' in page.text
        )
        assert "user alice has no e-mail address" in page.text and ">alice<" in page.text
        assert (
            f'action="/-/outbox/{failed}/retry"' in page.text
            and f'action="/-/outbox/{sent}/retry"' not in page.text
        )
        only = await http.get("/-/outbox?status=failed")
        assert f'id="outbox-{sent}"' not in only.text

        refused = await http.post(f"/-/outbox/{failed}/retry", data={})
        assert refused.status_code == 403
        done = await http.post(f"/-/outbox/{failed}/retry", data={"csrf_token": CSRF})
        assert done.status_code == 303 and done.headers["location"] == "/-/outbox?status=pending"
        after = await http.get(done.headers["location"])
        assert (
            f"Message {failed} queued again." in after.text
            and f'id="outbox-{failed}" data-status="pending"' in after.text
        )
        assert (await http.post(f"/-/outbox/{sent}/retry", data={"csrf_token": CSRF})).status_code == 404
    table = desk.instance.schema.system["kiln_outbox"]
    with desk.instance.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.id == failed)).mappings().one()
    assert (row["status"], row["attempts"]) == ("pending", 0)


@pytest.mark.anyio
async def test_only_administrators_see_the_outbox(desk: Desk):
    failed = queue(desk, "failed", "boom")
    async with desk.client("alice") as http:
        page = await http.get("/-/outbox")
        assert page.status_code == 403 and "boom" not in page.text
        assert (await http.post(f"/-/outbox/{failed}/retry", data={"csrf_token": CSRF})).status_code == 403
    with desk.instance.engine.connect() as conn:
        table = desk.instance.schema.system["kiln_outbox"]
        assert conn.execute(select(table.c.status).where(table.c.id == failed)).scalar_one() == "failed"


@pytest.mark.anyio
async def test_the_pages_speak_chinese_too(desk: Desk):
    notify(desk, "alice", 1)
    async with desk.client("alice", lang="zh") as http:
        page = await http.get("/-/notifications")
        assert "通知" in page.text and "全部标为已读" in page.text
    async with desk.client("root", lang="zh") as http:
        assert "发件箱" in (await http.get("/-/outbox")).text
