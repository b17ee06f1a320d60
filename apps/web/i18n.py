"""Translations of the pages' own words (buttons, headings, messages), gettext style.

The catalogs are Babel ``.po`` files, ``locales/<locale>/LC_MESSAGES/messages.po``, read at run
time with ``babel.messages.pofile.read_po`` and cached for the life of the process: there is no
compile step to forget, and a missing or empty translation falls back to the msgid (English).
Labels written in app definitions are not here: they come from ``Label.get(locale)``.

The locale of a request, first found wins: the user's own setting (``kiln_users.locale``),
``?lang=`` on the URL, the ``lang`` cookie (set by the language switch), the app's ``locale:``,
then ``zh``.

In templates: ``{{ _("Save") }}``, ``{{ _("%(n)s users", n=count) }}`` (``gettext`` is the same
function), ``{{ label(entity.label) }}`` for a definition's Label, ``current_locale()``.
In Python: ``_ = translator(locale_for(request, app))``, then ``_("Save")``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from babel.messages.pofile import read_po
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection, Request, cookie_parser
from starlette.responses import RedirectResponse, Response

from apps.web import security
from engine import accounts
from engine.messages import Msg, Named, Names
from engine.model import App, Label

LOCALES_DIR = Path(__file__).resolve().parents[2] / "locales"
LOCALES: dict[str, str] = {"zh": "中文", "en": "English"}  # each named in its own language
DEFAULT_LOCALE = "zh"
COOKIE = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600

Gettext = Callable[..., str]


@cache
def catalog(locale: str) -> dict[str, str]:
    """``{msgid: translation}`` of a locale; entries without a translation are left out."""
    path = LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po"
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        po = read_po(f, locale=locale)
    return {m.id: m.string for m in po if isinstance(m.id, str) and m.id and isinstance(m.string, str) and m.string}


def normalise(value: str | None) -> str | None:
    """``zh-CN``, ``zh_Hans``, ``EN-us`` -> the supported locale they name, else None."""
    if not value:
        return None
    base = value.strip().replace("_", "-").split("-")[0].lower()
    return base if base in LOCALES else None


def translator(locale: str | None) -> Gettext:
    """``gettext(msgid, **params)`` for ``locale``: the translation (or the msgid), with
    ``%(name)s`` placeholders filled from ``params``."""
    shown_in = normalise(locale) or DEFAULT_LOCALE
    messages = catalog(shown_in)

    def gettext(msgid: str, /, **params: Any) -> str:
        if isinstance(msgid, Msg):  # an engine message: its own msgid and parameters
            msgid, params = msgid.msgid, {**msgid.params, **params}
            # the definition's names as their labels in the reader's language
            params = {k: v.shown(shown_in) if isinstance(v, Named | Names) else v for k, v in params.items()}
        text = messages.get(msgid) or msgid
        return text % params if params else text

    return gettext


def _app_locale(request: HTTPConnection, app: App | str | None) -> str | None:
    if isinstance(app, App):
        return app.locale
    if isinstance(app, str):
        compiled = request.app.state.instance.compiled.apps.get(app)
        return compiled.app.locale if compiled else None
    return None


def locale_for(request: HTTPConnection, app: App | str | None = None) -> str:
    """The locale to show this request in (see the module's docstring); ``app`` is the App or the
    name of the app the page belongs to, if any."""
    cache_key = f"kiln_locale:{app.name if isinstance(app, App) else app or ''}"
    state = request.scope.setdefault("state", {})
    if cache_key in state:
        return state[cache_key]
    user = security.current_user(request)
    candidates = (
        user.locale if user else None,
        request.query_params.get("lang"),
        request.cookies.get(COOKIE),
        _app_locale(request, app),
    )
    locale = next((found for found in map(normalise, candidates) if found), DEFAULT_LOCALE)
    state[cache_key] = locale
    return locale


# -- Jinja globals ---------------------------------------------------------------------------------


def _context_locale(ctx: jinja2.runtime.Context) -> str:
    """A view may hand the template ``locale``; else the request's, for the template's ``app``."""
    given = ctx.get("locale")
    if isinstance(given, str) and normalise(given):
        return normalise(given) or DEFAULT_LOCALE
    app = ctx.get("app")
    return locale_for(ctx["request"], app if isinstance(app, App | str) else None)


@jinja2.pass_context
def _gettext(ctx: jinja2.runtime.Context, msgid: str, /, **params: Any) -> str:
    return translator(_context_locale(ctx))(msgid, **params)


@jinja2.pass_context
def _current_locale(ctx: jinja2.runtime.Context) -> str:
    return _context_locale(ctx)


@jinja2.pass_context
def _label(ctx: jinja2.runtime.Context, value: Label | str | None) -> str:
    if isinstance(value, Label):
        return value.get(_context_locale(ctx))
    return "" if value is None else str(value)


def install(env: jinja2.Environment) -> None:
    """Add ``_``, ``gettext``, ``current_locale``, ``label`` and ``locales`` to the templates."""
    env.globals.update(_=_gettext, gettext=_gettext, current_locale=_current_locale, label=_label, locales=LOCALES)


# -- the language switch ---------------------------------------------------------------------------


async def switch(request: Request) -> Response:
    """POST /-/locale (``lang``, ``next``): remember the choice in a cookie and, for a logged-in
    user, in their account, so it follows them to other browsers."""
    form = await request.form()
    locale = normalise(str(form.get("lang", "")))
    response = RedirectResponse(security.safe_next(str(form.get("next", "")) or None), status_code=303)
    if locale is None:
        return response
    await run_in_threadpool(_remember, request, locale)
    response.set_cookie(COOKIE, locale, max_age=COOKIE_MAX_AGE, samesite="lax", httponly=True)
    return response


def _remember(request: Request, locale: str) -> None:
    user = security.current_user(request)
    if user is not None:
        accounts.set_locale(request.app.state.instance.engine, user.id, locale)


class RememberLangParam:
    """ASGI middleware: a page opened with ``?lang=en`` keeps that language (the ``lang`` cookie
    is set on its answer, as the language switch sets it), so a link or a login with ``?lang=``
    is not a language for one request only."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if b"lang=" not in query:
            await self.app(scope, receive, send)
            return
        wanted = normalise(parse_qs(query.decode("latin-1")).get("lang", [""])[0])
        if wanted is None or cookie_parser(Headers(scope=scope).get("cookie", "")).get(COOKIE) == wanted:
            await self.app(scope, receive, send)
            return
        cookie = f"{COOKIE}={wanted}; Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; SameSite=lax"

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode("latin-1"))]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
