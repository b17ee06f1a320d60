"""The instance administration pages under /-/admin (apps/web/admin.py)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from apps.web import create_app
from engine import accounts, logins

DEFINITION = """
app: desk
label: {zh: 服务台, en: Service desk}
roles:
  agent: {label: 坐席}
  supervisor: {label: 主管}
teams:
  first_line: {label: 一线}
entities:
  request:
    fields:
      title: {type: text}
"""
PASSWORD = "admin pass 123"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def instance(write_definitions, open_instance, db_url: str):
    instance = open_instance(write_definitions({"desk/app.yaml": DEFINITION}), db_url)
    accounts.add_user(instance.engine, "root", None, password=PASSWORD, admin=True, display_name="Root")
    accounts.add_user(instance.engine, "alice", "desk", ["agent"], password="alice pass 1", display_name="Alice")
    return instance


@pytest.fixture
async def admin(instance):
    """A client logged in as the administrator."""
    async with client(instance) as http:
        await log_in(http, "root", PASSWORD)
        yield http


def client(instance) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(instance))
    return httpx.AsyncClient(transport=transport, base_url="http://test", follow_redirects=False)


def csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


async def log_in(http: httpx.AsyncClient, username: str, password: str) -> None:
    token = csrf_of(await http.get("/login"))
    response = await http.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert response.status_code == 303, response.text


async def post(http: httpx.AsyncClient, path: str, data: dict) -> httpx.Response:
    """A form post as the page sends it: with the CSRF token of the session."""
    token = csrf_of(await http.get("/-/admin/users"))
    return await http.post(path, data={**data, "csrf_token": token})


def audit(instance, entity: str) -> list[tuple[str, str, dict]]:
    table = accounts.tables()["kiln_audit"]
    with instance.engine.connect() as conn:
        rows = conn.execute(
            select(table.c.action, table.c.actor, table.c.changes).where(table.c.app == "-", table.c.entity == entity).order_by(table.c.id)
        )
        return [tuple(r) for r in rows]


def user_id(instance, username: str) -> int:
    return accounts.get_user(instance.engine, username).id


@pytest.mark.anyio
async def test_admin_pages_refuse_non_admins_and_send_anonymous_to_login(instance):
    async with client(instance) as http:
        anonymous = await http.get("/-/admin/users")
        assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=/-/admin/users"
        await log_in(http, "alice", "alice pass 1")
        for path in ("/-/admin", "/-/admin/users", "/-/admin/users/new", f"/-/admin/users/{user_id(instance, 'alice')}", "/-/admin/teams"):
            assert (await http.get(path)).status_code == 403, path


@pytest.mark.anyio
async def test_a_non_admins_post_is_refused(instance):
    async with client(instance) as http:
        await log_in(http, "alice", "alice pass 1")
        # The session's token is valid (from the 403 page's layout); only the role is wrong.
        refused = await http.get("/-/admin/users")
        assert refused.status_code == 403 and "管理员" in refused.text
        token = csrf_of(refused)
        response = await http.post(f"/-/admin/users/{user_id(instance, 'alice')}", data={"display_name": "x", "is_admin": "on", "csrf_token": token})
        assert response.status_code == 403
    assert not accounts.get_user(instance.engine, "alice").is_admin


@pytest.mark.anyio
async def test_admin_lists_users_a_page_at_a_time(instance, admin, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("apps.web.admin.PAGE_SIZE", 2)
    first = await admin.get("/-/admin/users")
    assert first.status_code == 200 and "alice" in first.text and "root" in first.text
    accounts.add_user(instance.engine, "zed", None)
    first = await admin.get("/-/admin/users")
    assert "zed" not in first.text and "after=root" in first.text
    second = await admin.get("/-/admin/users?after=root")
    assert "zed" in second.text and "alice" not in second.text and "after=" not in second.text.split("pager")[1]
    found = await admin.get("/-/admin/users?q=ALI")
    assert "alice" in found.text and "zed" not in found.text


@pytest.mark.anyio
async def test_create_a_user_shows_the_generated_password_once(instance, admin):
    form = await admin.get("/-/admin/users/new")
    assert form.status_code == 200 and 'name="csrf_token"' in form.text
    response = await post(admin, "/-/admin/users/new", {"username": "bob", "display_name": "Bob", "email": "bob@example.com", "locale": "en"})
    assert response.status_code == 200
    password = re.search(r"<code>([^<]+)</code>", response.text).group(1)
    assert accounts.verify_password(instance.engine, "bob", password)
    bob = accounts.get_user(instance.engine, "bob")
    assert (bob.display_name, bob.email, bob.locale, bob.is_admin) == ("Bob", "bob@example.com", "en", False)
    assert password not in (await admin.get(f"/-/admin/users/{bob.id}")).text
    action, actor, changes = audit(instance, "user")[-1]
    assert action == "create" and actor == "root" and changes["username"] == [None, "bob"]

    again = await post(admin, "/-/admin/users/new", {"username": "bob", "password": "take over"})
    assert again.status_code == 422 and not accounts.verify_password(instance.engine, "bob", "take over")
    bad = await post(admin, "/-/admin/users/new", {"username": "no spaces allowed"})
    assert bad.status_code == 422 and "not a valid username" in bad.text


@pytest.mark.anyio
async def test_edit_a_user_and_reset_the_password(instance, admin):
    alice = user_id(instance, "alice")
    data = {"display_name": "Alice Wang", "email": "a@example.com", "phone": "13800000000", "locale": "zh", "manager": "root", "is_active": "on"}
    response = await post(admin, f"/-/admin/users/{alice}", data)
    assert response.status_code == 303 and response.headers["location"] == f"/-/admin/users/{alice}"
    user = accounts.get_user(instance.engine, alice)
    assert (user.display_name, user.email, user.phone, user.locale, user.manager_id) == ("Alice Wang", "a@example.com", "13800000000", "zh", user_id(instance, "root"))
    page = await admin.get(f"/-/admin/users/{alice}")
    assert "已保存。" in page.text and 'value="Alice Wang"' in page.text
    action, _, changes = audit(instance, "user")[-1]
    assert action == "update" and changes["display_name"] == ["Alice", "Alice Wang"]

    reset = await post(admin, f"/-/admin/users/{alice}/password", {})
    new = re.search(r"<code>([^<]+)</code>", reset.text).group(1)
    assert accounts.verify_password(instance.engine, "alice", new) and not accounts.verify_password(instance.engine, "alice", "alice pass 1")
    assert audit(instance, "user")[-1][2] == {"password": [None, "(reset)"]}

    unknown = await post(admin, f"/-/admin/users/{alice}", {**data, "manager": "ghost"})
    assert unknown.status_code == 422 and "ghost" in unknown.text


@pytest.mark.anyio
async def test_a_password_reset_lifts_a_lockout(instance, admin):
    for _ in range(logins.LIMITS.per_user):
        logins.record_failure(instance.engine, "alice", "10.1.1.1")
    assert logins.locked(instance.engine, "alice", "10.1.1.2")
    await post(admin, f"/-/admin/users/{user_id(instance, 'alice')}/password", {"password": "a new one 42"})
    assert not logins.locked(instance.engine, "alice", "10.1.1.2")


@pytest.mark.anyio
async def test_deactivating_a_user_ends_their_sessions(instance, admin):
    async with client(instance) as http:
        await log_in(http, "alice", "alice pass 1")
        await post(admin, f"/-/admin/users/{user_id(instance, 'alice')}", {"display_name": "Alice"})  # not active
        assert (await http.get("/-/admin/users")).status_code == 303  # anonymous again: to login


@pytest.mark.anyio
async def test_an_admin_cannot_demote_themselves(instance, admin):
    response = await post(admin, f"/-/admin/users/{user_id(instance, 'root')}", {"display_name": "Root", "is_active": "on"})
    assert response.status_code == 422 and accounts.get_user(instance.engine, "root").is_admin


@pytest.mark.anyio
async def test_grant_and_revoke_roles_the_definition_declares(instance, admin):
    alice = user_id(instance, "alice")
    page = await admin.get(f"/-/admin/users/{alice}")
    assert "主管" in page.text and "坐席" in page.text
    granted = await post(admin, f"/-/admin/users/{alice}/roles", {"app": "desk", "role": "supervisor", "action": "grant"})
    assert granted.status_code == 303
    assert accounts.actor_for(instance.engine, alice, "desk").roles == {"agent", "supervisor"}
    await post(admin, f"/-/admin/users/{alice}/roles", {"app": "desk", "role": "agent", "action": "revoke"})
    assert accounts.actor_for(instance.engine, alice, "desk").roles == {"supervisor"}
    refused = await post(admin, f"/-/admin/users/{alice}/roles", {"app": "desk", "role": "superviser", "action": "grant"})
    assert refused.status_code == 422 and "supervisor" in refused.text  # did you mean
    assert (await post(admin, f"/-/admin/users/{alice}/roles", {"app": "nope", "role": "x"})).status_code == 404
    assert [(a, c) for a, _, c in audit(instance, "user")] == [
        ("grant_role", {"role": [None, "desk:supervisor"]}),
        ("revoke_role", {"role": ["desk:agent", None]}),
    ]


@pytest.mark.anyio
async def test_team_members_and_lead(instance, admin):
    listing = await admin.get("/-/admin/teams")
    assert listing.status_code == 200 and "一线" in listing.text and "/-/admin/teams/desk/first_line" in listing.text
    base = "/-/admin/teams/desk/first_line"
    assert (await post(admin, f"{base}/members", {"username": "alice", "action": "add"})).status_code == 303
    assert (await post(admin, f"{base}/members", {"username": "root", "action": "add"})).status_code == 303
    assert (await post(admin, f"{base}/lead", {"username": "alice"})).status_code == 303
    assert accounts.team_lead(instance.engine, "desk", "first_line") == "alice"
    page = await admin.get(base)
    assert "组长已修改。" in page.text and '<option value="alice" selected>' in page.text
    await post(admin, f"{base}/members", {"username": "alice", "action": "remove"})
    team = accounts.team(instance.engine, instance.compiled.app("desk").app, "first_line")
    assert [u.username for u in team.members] == ["root"] and team.lead is None
    missing = await post(admin, f"{base}/members", {"username": "ghost", "action": "add"})
    assert missing.status_code == 422 and "ghost" in missing.text
    assert (await admin.get("/-/admin/teams/desk/no_such_team")).status_code == 404
    assert [a for a, _, _ in audit(instance, "team")] == ["add_member", "add_member", "set_lead", "remove_member"]


@pytest.mark.anyio
async def test_api_token_is_shown_once_and_can_be_revoked(instance, admin):
    alice = user_id(instance, "alice")
    created = await post(admin, f"/-/admin/users/{alice}/tokens", {"name": "nightly export"})
    assert created.status_code == 200
    token = re.search(r"<code>(kiln_[^<]+)</code>", created.text).group(1)
    assert accounts.user_for_token(instance.engine, token).username == "alice"
    page = await admin.get(f"/-/admin/users/{alice}")
    assert "nightly export" in page.text and token not in page.text
    token_id = accounts.tokens_of(instance.engine, alice)[0].id
    revoked = await post(admin, f"/-/admin/users/{alice}/tokens/{token_id}/revoke", {})
    assert revoked.status_code == 303
    assert accounts.user_for_token(instance.engine, token) is None and accounts.tokens_of(instance.engine, alice) == []
    assert [a for a, _, _ in audit(instance, "user")] == ["create_token", "revoke_token"]
    assert (await post(admin, f"/-/admin/users/{alice}/tokens/{token_id}/revoke", {})).status_code == 422


@pytest.mark.anyio
async def test_a_post_without_the_csrf_token_changes_nothing(instance, admin):
    alice = user_id(instance, "alice")
    response = await admin.post(f"/-/admin/users/{alice}/roles", data={"app": "desk", "role": "supervisor"})
    assert response.status_code == 403
    assert accounts.actor_for(instance.engine, alice, "desk").roles == {"agent"}


@pytest.mark.anyio
async def test_a_display_name_is_escaped(instance, admin):
    xss = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    alice = user_id(instance, "alice")
    await post(admin, f"/-/admin/users/{alice}", {"display_name": xss, "is_active": "on"})
    for path in ("/-/admin/users", f"/-/admin/users/{alice}"):
        page = (await admin.get(path)).text
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
