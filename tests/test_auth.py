"""Logging in and out, the lock-out, sessions and CSRF (apps/web/auth.py, apps/web/security.py)."""

from __future__ import annotations

import datetime as dt
import re

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from apps.web import create_app, security
from engine import accounts, logins

DEFINITION = """
app: desk
label: {zh: 服务台, en: Service desk}
roles:
  agent: {label: 坐席}
entities:
  request:
    fields:
      title: {type: text}
"""
PASSWORD = "correct horse battery"
LAYOUT_PAGE = '{% extends "base.html" %}{% block heading %}Page{% endblock %}{% block content %}<p>content</p>{% endblock %}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def instance(write_definitions, open_instance, db_url: str):
    instance = open_instance(write_definitions({"desk/app.yaml": DEFINITION}), db_url)
    accounts.add_user(instance.engine, "alice", "desk", ["agent"], password=PASSWORD, display_name="Alice")
    return instance


def client(instance, app=None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app or create_app(instance))
    return httpx.AsyncClient(transport=transport, base_url="http://test", follow_redirects=False)


def csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


async def post_login(http: httpx.AsyncClient, username: str, password: str, next_url: str = "") -> httpx.Response:
    token = csrf_of(await http.get("/login"))
    return await http.post("/login", data={"username": username, "password": password, "next": next_url, "csrf_token": token})


def protected_app(instance):
    """The web app plus a page that needs a user, as the generated pages do."""

    def secret(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello {security.require_user(request).username}")

    def change(request: Request) -> PlainTextResponse:
        return PlainTextResponse("changed")

    def page(request: Request) -> HTMLResponse:
        security.require_user(request)
        template = request.app.state.templates.env.from_string(LAYOUT_PAGE)
        return HTMLResponse(template.render(request=request))

    app = create_app(instance)
    app.router.routes.insert(0, Route("/page", page))
    app.router.routes.insert(0, Route("/secret", secret))
    app.router.routes.insert(0, Route("/change", change, methods=["POST"]))
    return app


@pytest.mark.anyio
async def test_login_success_starts_a_session(instance):
    async with client(instance, protected_app(instance)) as http:
        response = await post_login(http, "alice", PASSWORD, "/secret?x=1")
        assert response.status_code == 303 and response.headers["location"] == "/secret?x=1"
        assert (await http.get("/secret")).text == "hello alice"
        page = await http.get("/page")
        assert "Alice" in page.text and 'action="/logout"' in page.text and "/-/admin" not in page.text
        again = await http.get("/login?next=/secret")  # logged in: the form sends you on
        assert again.status_code == 303 and again.headers["location"] == "/secret"


@pytest.mark.anyio
async def test_login_failure_says_so_and_keeps_you_out(instance):
    async with client(instance, protected_app(instance)) as http:
        wrong = await post_login(http, "alice", "wrong")
        nobody = await post_login(http, "nobody", "wrong")
        assert wrong.status_code == nobody.status_code == 401
        assert "用户名或密码错误" in wrong.text and wrong.text.count("用户名或密码错误") == 1
        assert nobody.text.replace('value="nobody"', 'value="alice"') == wrong.text  # same answer: no probing for names
        assert 'value="alice"' in wrong.text  # the username is kept, the password is not
        assert PASSWORD not in wrong.text
        english = await http.post("/login?lang=en", data={"username": "alice", "password": "x", "csrf_token": csrf_of(wrong)})
        assert "Wrong username or password." in english.text
        assert (await http.get("/secret")).status_code == 303


@pytest.mark.anyio
async def test_anonymous_page_requests_go_to_login_and_come_back(instance):
    async with client(instance, protected_app(instance)) as http:
        response = await http.get("/secret?tab=2&q=a b")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/secret%3Ftab%3D2%26q%3Da%2520b"
        page = await http.get(response.headers["location"])
        assert 'name="next" value="/secret?tab=2&amp;q=a%20b"' in page.text
        htmx = await http.get("/secret", headers={"HX-Request": "true"})
        assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/login?next=/secret"


@pytest.mark.anyio
async def test_lockout_after_five_failures_even_with_the_right_password(instance):
    async with client(instance) as http:
        for _ in range(logins.LIMITS.per_user):
            assert (await post_login(http, "alice", "wrong")).status_code == 401
        locked = await post_login(http, "alice", PASSWORD)
        assert locked.status_code == 429 and "登录失败次数过多，请 15 分钟后再试。" in locked.text
        other = await post_login(http, "Alice", PASSWORD)  # another spelling is the same account
        assert other.status_code == 429

    # Another web process on the same database sees the same lock-out.
    async with client(instance, create_app(instance)) as second:
        assert (await post_login(second, "alice", PASSWORD)).status_code == 429


def test_lockout_holds_across_instances_and_ends_after_the_window(instance, open_instance):
    from engine.instance import Instance

    other = Instance.open(instance.definitions, instance.engine.url.render_as_string(hide_password=False), env={})
    try:
        now = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
        for i in range(logins.LIMITS.per_user):
            logins.record_failure(instance.engine, "alice", "10.0.0.1", now + dt.timedelta(minutes=i))
        assert logins.locked(other.engine, "alice", "10.0.0.2", now + dt.timedelta(minutes=5))
        assert not logins.locked(other.engine, "bob", "10.0.0.2", now + dt.timedelta(minutes=5))
        assert not logins.locked(other.engine, "alice", "10.0.0.2", now + dt.timedelta(minutes=20))
    finally:
        other.close()


def test_the_address_limit_holds_for_every_username(instance):
    now = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
    for i in range(logins.LIMITS.per_address):
        logins.record_failure(instance.engine, f"user{i}", "10.0.0.9", now)
    assert logins.locked(instance.engine, "alice", "10.0.0.9", now)
    assert not logins.locked(instance.engine, "alice", "10.0.0.8", now)


@pytest.mark.anyio
async def test_a_successful_login_clears_the_usernames_failures(instance):
    async with client(instance) as http:
        for _ in range(logins.LIMITS.per_user - 1):
            await post_login(http, "alice", "wrong")
        assert (await post_login(http, "alice", PASSWORD)).status_code == 303
    async with client(instance) as http:
        assert (await post_login(http, "alice", "wrong")).status_code == 401  # counting starts again


@pytest.mark.anyio
@pytest.mark.parametrize(
    "next_url",
    ["https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example", "javascript:alert(1)",
     "http:/evil.example", "/ok\r\nSet-Cookie: x=1", "evil.example"],
)  # fmt: skip
async def test_next_is_refused_unless_a_local_path(instance, next_url: str):
    async with client(instance) as http:
        response = await post_login(http, "alice", PASSWORD, next_url)
    assert response.status_code == 303 and response.headers["location"] == "/"


@pytest.mark.anyio
async def test_logout_ends_the_session(instance):
    async with client(instance, protected_app(instance)) as http:
        await post_login(http, "alice", PASSWORD)
        token = csrf_of(await http.get("/page"))  # the layout's logout form
        assert (await http.get("/logout")).status_code == 405  # a link (or an <img>) cannot log you out
        response = await http.post("/logout", data={"csrf_token": token})
        assert response.status_code == 303 and response.headers["location"] == "/login"
        assert (await http.get("/secret")).status_code == 303


@pytest.mark.anyio
async def test_session_cookie_is_httponly_lax_and_signed(instance):
    async with client(instance, protected_app(instance)) as http:
        response = await post_login(http, "alice", PASSWORD)
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("kiln_session=") and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert (await http.get("/secret")).text == "hello alice"
        value = http.cookies["kiln_session"]
        # Flip one character of the payload: the signature no longer matches, so no user.
        tampered = value[:5] + ("A" if value[5] != "A" else "B") + value[6:]
        http.cookies.clear()
        http.cookies.set("kiln_session", tampered)
        assert (await http.get("/secret")).status_code == 303


@pytest.mark.anyio
async def test_a_new_session_on_login(instance):
    """The CSRF token (and so the session) before login is not the one after it."""
    async with client(instance, protected_app(instance)) as http:
        before = csrf_of(await http.get("/login"))
        await http.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": before})
        after = csrf_of(await http.get("/page"))
    assert before != after


@pytest.mark.anyio
async def test_a_post_needs_the_csrf_token(instance):
    async with client(instance, protected_app(instance)) as http:
        await post_login(http, "alice", PASSWORD)
        assert (await http.post("/change", data={"x": "1"})).status_code == 403
        assert (await http.post("/change", data={"x": "1", "csrf_token": "nope"})).status_code == 403
        token = csrf_of(await http.get("/page"))
        assert (await http.post("/change", data={"x": "1", "csrf_token": token})).text == "changed"
        assert (await http.post("/change", headers={"X-CSRF-Token": token})).text == "changed"  # as HTMX sends it


@pytest.mark.anyio
async def test_login_itself_needs_the_csrf_token(instance):
    async with client(instance) as http:
        response = await http.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403


@pytest.mark.anyio
async def test_the_layout_carries_the_token_in_hx_headers_and_the_vendored_htmx(instance):
    async with client(instance, protected_app(instance)) as http:
        await post_login(http, "alice", PASSWORD)
        page = await http.get("/page")
        token = csrf_of(page)
        assert f"""<body hx-headers='{{"X-CSRF-Token": "{token}"}}'>""" in page.text
        assert '<script src="/static/vendor/htmx.min.js"' in page.text and "cdn" not in page.text.lower()
        assert "<h1>Page</h1>" in page.text and "<p>content</p>" in page.text
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        assert 'href="/a/desk/request"' in page.text  # the app switcher: alice is an agent in desk
        js = await http.get("/static/vendor/htmx.min.js")
        assert js.status_code == 200 and "htmx" in js.text[:200]
        assert (await http.get("/static/kiln.css")).status_code == 200
        assert (await http.get("/static/icons.svg")).status_code == 200


def test_a_fragment_renders_only_the_content_block(instance):
    app = protected_app(instance)
    template = app.state.templates.env.from_string(LAYOUT_PAGE)
    request = Request({"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": [], "app": app, "session": {}})
    assert template.render(request=request, fragment=True) == "<p>content</p>"
    assert "<p>content</p>" in template.render(request=request) and "<html" in template.render(request=request)
