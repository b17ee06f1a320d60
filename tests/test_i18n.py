"""Translations: the catalogs cover every msgid the code uses, and the locale of a request."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import httpx
import jinja2
import pytest
from jinja2 import nodes

from apps.web import create_app, i18n
from engine import accounts

ROOT = Path(__file__).resolve().parent.parent
GETTEXT_NAMES = {"_", "gettext"}

DEFINITION = """
app: desk
label: {zh: 服务台, en: Service desk}
locale: en
roles:
  agent: {label: {zh: 坐席, en: Agent}}
entities:
  request:
    fields:
      title: {type: text}
"""


def template_msgids() -> Iterator[tuple[str, str]]:
    """(msgid, file) of every ``_("...")`` / ``gettext("...")`` in the templates, by Jinja's parser
    (so a msgid in a comment is not one)."""
    env = jinja2.Environment()
    for path in sorted((ROOT / "templates").rglob("*.html")):
        tree = env.parse(path.read_text(encoding="utf-8"))
        for call in tree.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name in GETTEXT_NAMES and call.args:
                if isinstance(call.args[0], nodes.Const) and isinstance(call.args[0].value, str):
                    yield call.args[0].value, str(path.relative_to(ROOT))


def python_msgids() -> Iterator[tuple[str, str]]:
    """(msgid, file) of every ``_("...")``, ``gettext("...")`` and ``x.gettext("...")`` call with a
    literal in apps/web (a docstring's example is not a call)."""
    for path in sorted((ROOT / "apps" / "web").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            first = node.args[0]
            if name in GETTEXT_NAMES and isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value, str(path.relative_to(ROOT))


def test_the_scanners_find_msgids():
    # Guard against a scanner that silently finds nothing (and so passes for any catalog).
    assert ("Log in", "templates/login.html") in set(template_msgids())
    assert ("Wrong username or password.", "apps/web/auth.py") in set(python_msgids())


@pytest.mark.parametrize("locale", sorted(i18n.LOCALES))
def test_every_msgid_in_use_is_in_the_catalog(locale: str):
    path = i18n.LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po"
    from babel.messages.pofile import read_po

    with path.open("rb") as f:
        ids = {m.id for m in read_po(f, locale=locale) if m.id}
    missing = sorted({f"{file}: {msgid!r}" for msgid, file in (*template_msgids(), *python_msgids()) if msgid not in ids})
    assert not missing, f"add these msgids to {path.relative_to(ROOT)}:\n" + "\n".join(missing)


def test_every_chinese_entry_is_translated_and_keeps_its_placeholders():
    import re

    from babel.messages.pofile import read_po

    with (i18n.LOCALES_DIR / "zh" / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f, locale="zh")
    for message in catalog:
        if not message.id:
            continue
        assert message.string, f"no Chinese for {message.id!r}"
        assert sorted(re.findall(r"%\(\w+\)s", message.id)) == sorted(re.findall(r"%\(\w+\)s", message.string)), message.id


def test_translator_falls_back_to_the_msgid_and_fills_placeholders():
    zh, en = i18n.translator("zh"), i18n.translator("en")
    assert zh("Log in") == "登录" and en("Log in") == "Log in"
    assert zh("no such msgid") == "no such msgid"
    assert "15" in zh("Too many failed logins. Try again in %(minutes)s minutes.", minutes=15)
    assert i18n.translator("zh-CN")("Log in") == "登录" and i18n.translator("fr")("Log in") == "登录"  # unknown: zh


def test_normalise():
    assert [i18n.normalise(v) for v in ("zh-CN", "zh_Hans", "EN-us", "fr", "", None)] == ["zh", "zh", "en", None, None, None]


# -- the locale of a request ---------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def instance(write_definitions, open_instance, db_url: str):
    return open_instance(write_definitions({"desk/app.yaml": DEFINITION}), db_url)


def client(instance) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(instance))
    return httpx.AsyncClient(transport=transport, base_url="http://test", follow_redirects=False)


async def log_in(http: httpx.AsyncClient, username: str, password: str) -> None:
    page = await http.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = await http.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert response.status_code == 303


@pytest.mark.anyio
async def test_the_login_page_in_chinese_and_english(instance):
    async with client(instance) as http:
        zh = await http.get("/login")
        en = await http.get("/login?lang=en")
    assert zh.status_code == en.status_code == 200
    assert "<title>登录 · Kiln</title>" in zh.text and '<html lang="zh-CN">' in zh.text and "用户名" in zh.text
    assert "<title>Log in · Kiln</title>" in en.text and '<html lang="en">' in en.text and "Username" in en.text


@pytest.mark.anyio
async def test_the_language_switch_sets_a_cookie_and_the_users_locale(instance):
    accounts.add_user(instance.engine, "ann", "desk", ["agent"], password="pw-ann-123", admin=True)
    async with client(instance) as http:
        page = await http.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        switched = await http.post("/-/locale", data={"lang": "en", "next": "/login", "csrf_token": token})
        assert switched.status_code == 303 and switched.headers["location"] == "/login"
        assert "lang=en" in switched.headers["set-cookie"]
        assert "Username" in (await http.get("/login")).text  # the cookie, on later requests

        await log_in(http, "ann", "pw-ann-123")
        assert "<title>Administration · Kiln</title>" in (await http.get("/-/admin/users")).text
        # Switching while logged in stores the choice in the account: it wins over the cookie.
        token = (await http.get("/-/admin/users")).text.split('name="csrf_token" value="')[1].split('"')[0]
        await http.post("/-/locale", data={"lang": "zh", "next": "/-/admin/users", "csrf_token": token})
        http.cookies.set("lang", "en")
        assert "<title>系统管理 · Kiln</title>" in (await http.get("/-/admin/users")).text
    assert accounts.get_user(instance.engine, "ann").locale == "zh"


@pytest.mark.anyio
async def test_a_lang_parameter_is_remembered(instance):
    async with client(instance) as http:
        first = await http.get("/login?lang=en")
        assert "Username" in first.text and "lang=en" in first.headers["set-cookie"]
        assert "Username" in (await http.get("/login")).text  # the next page, without the parameter
        again = await http.get("/login?lang=en")
        assert "set-cookie" not in again.headers or "lang=" not in again.headers["set-cookie"]  # already so
        assert "用户名" in (await http.get("/login?lang=zh")).text and "用户名" in (await http.get("/login")).text
        assert "lang=" not in (await http.get("/login?lang=fr")).headers.get("set-cookie", "")  # not a language we have
        icon = await http.get("/favicon.ico")
        assert icon.status_code == 301 and icon.headers["location"] == "/static/favicon.svg"
        assert (await http.get("/static/favicon.svg")).headers["content-type"].startswith("image/svg")


@pytest.mark.anyio
async def test_the_language_switch_refuses_an_outside_next(instance):
    async with client(instance) as http:
        page = await http.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        switched = await http.post("/-/locale", data={"lang": "en", "next": "//evil.example/", "csrf_token": token})
    assert switched.headers["location"] == "/"


def test_locale_for_prefers_the_user_then_the_url_then_the_cookie_then_the_app(instance):
    from starlette.requests import Request

    app = create_app(instance)

    def request(query: str = "", cookie: str = "", uid: int | None = None) -> Request:
        headers = [(b"cookie", cookie.encode())] if cookie else []
        scope = {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": headers,
                 "app": app, "session": {"uid": uid} if uid else {}}  # fmt: skip
        return Request(scope)

    desk = instance.compiled.app("desk").app
    assert i18n.locale_for(request()) == "zh"
    assert i18n.locale_for(request(), desk) == "en" and i18n.locale_for(request(), "desk") == "en"
    assert i18n.locale_for(request(cookie="lang=zh"), desk) == "zh"
    assert i18n.locale_for(request("lang=en", cookie="lang=zh")) == "en"
    user_id, _ = accounts.add_user(instance.engine, "bo", "desk", ["agent"])
    accounts.set_locale(instance.engine, user_id, "zh")
    assert i18n.locale_for(request("lang=en", uid=user_id), desk) == "zh"
