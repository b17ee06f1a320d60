"""Who is asking, and may they post: sessions, the current user, API tokens and CSRF.

- Sessions: Starlette's SessionMiddleware, a cookie signed with itsdangerous, HttpOnly and
  ``SameSite=Lax``; it holds the user id (``uid``) and the CSRF token (``csrf``).
- The user of a request: the session's user, or the user of an ``Authorization: Bearer`` API
  token; loaded once per request (``current_user``).
- CSRF: every unsafe request made with the session cookie must carry the session's token, as the
  ``X-CSRF-Token`` header (HTMX sends it from ``hx-headers`` on ``<body>``) or as the
  ``csrf_token`` field of a urlencoded form. Requests authenticated by a bearer token carry no
  cookie authority, so they need no CSRF token. A multipart form (an upload) is not read here:
  it must send the header, which an HTMX request does.
- Pages that need a user call :func:`require_user` (or :func:`require_admin`); an anonymous
  request is then redirected to ``/login?next=<where it was going>`` (an HTMX request gets
  ``HX-Redirect`` instead, so the login page is not swapped into a fragment).
- Every response carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
  ``Referrer-Policy: same-origin`` (no clickjacking of forms, no tokens leaking in referrers).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote, urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import accounts, identity
from engine.actors import Actor
from engine.dashboards import may_see
from engine.instance import Instance

SESSION_COOKIE = "kiln_session"
SESSION_MAX_AGE = 14 * 24 * 3600
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
MAX_FORM_BYTES = 1024 * 1024  # a urlencoded form larger than this is not a form a page sends


def middleware(secret_key: str, https_only: bool = False) -> list[Middleware]:
    return [
        Middleware(
            SessionMiddleware, secret_key=secret_key, session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE,
            same_site="lax", https_only=https_only,
        ),  # fmt: skip
        Middleware(CSRFMiddleware),
        Middleware(LoginRedirectMiddleware),
        Middleware(SecurityHeadersMiddleware),
    ]


def csrf_token(request: HTTPConnection) -> str:
    """The session's CSRF token, made on first use (templates put it in forms and hx-headers)."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def bearer_token(request: HTTPConnection) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def current_user(request: HTTPConnection) -> accounts.User | None:
    """The active user of this request (session or bearer token), or None; cached per request
    with the user's roles (engine/identity.py reads both at once)."""
    state = request.scope.setdefault("state", {})
    if "user" in state:
        return state["user"]
    instance: Instance = request.app.state.instance
    found = None
    token = bearer_token(request)
    if token:
        found = identity.by_token(instance.engine, token)
    elif "session" in request.scope and request.session.get("uid") is not None:
        found = identity.by_session(instance.engine, int(request.session["uid"]))
    state["user"] = found.user if found else None
    state["roles_by_app"] = found.roles if found else {}
    if found is not None and found.unread is not None:
        state["kiln_unread"] = found.unread  # the header's badge (apps/web/notifications.py)
    return state["user"]


def actor(request: HTTPConnection, app: str) -> Actor | None:
    """The current user as an Actor of ``app`` (its roles and teams there), or None."""
    user = current_user(request)
    if user is None:
        return None
    instance: Instance = request.app.state.instance
    compiled = instance.compiled.apps.get(app)
    # Teams are read only for an app that has some: most requests need one query for identity.
    teams = accounts.teams_in(instance.engine, user.id, app) if compiled is None or compiled.app.teams else frozenset()
    return accounts.actor_of(user, roles_by_app(request).get(app, frozenset()), teams)


def roles_by_app(request: HTTPConnection) -> dict[str, frozenset[str]]:
    """The current user's roles in every app, read with the user once per request."""
    user = current_user(request)
    state = request.scope["state"]
    if "roles_by_app" not in state:  # the user was set by logging in during this request
        instance: Instance = request.app.state.instance
        state["roles_by_app"] = accounts.roles_by_app(instance.engine, user.id) if user is not None else {}
    return state["roles_by_app"]


def log_in(request: Request, user: accounts.User) -> None:
    """Start a new session for ``user``: a fresh session and CSRF token (no session fixation)."""
    request.session.clear()
    request.session["uid"] = user.id
    request.session["csrf"] = secrets.token_urlsafe(32)
    request.state.user = user
    request.scope["state"].pop("roles_by_app", None)


def log_out(request: Request) -> None:
    request.session.clear()
    request.state.user = None
    request.scope["state"].pop("roles_by_app", None)


# -- pages that need a user ------------------------------------------------------------------------


class LoginRequired(Exception):
    """Raised by :func:`require_user` for an anonymous request; answered with a redirect to login."""


def require_user(request: HTTPConnection) -> accounts.User:
    """The current user; an anonymous request is sent to the login page and back here after."""
    user = current_user(request)
    if user is None:
        raise LoginRequired()
    return user


def require_admin(request: HTTPConnection) -> accounts.User:
    """The current user if an instance administrator; anonymous: to login; anyone else: 403."""
    user = require_user(request)
    if not user.is_admin:
        raise HTTPException(403, "only instance administrators may open this page")
    return user


def admin_actor(user: accounts.User) -> Actor:
    """An administrator acting on instance-wide things (users, teams): not tied to one app."""
    return Actor(user.id, user.username, is_admin=user.is_admin, locale=user.locale)


def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site, else ``default``: no open redirect through
    ``next=`` (``//evil.example``, ``/\\evil.example``, ``https://...`` and control characters are
    refused; browsers read a backslash as a slash)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def login_url(scope_or_request: HTTPConnection | Scope) -> str:
    """``/login?next=<this path and query>``."""
    scope = scope_or_request.scope if isinstance(scope_or_request, HTTPConnection) else scope_or_request
    here = scope.get("path", "/")
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        here += "?" + query
    return "/login?next=" + quote(safe_next(here), safe="/")


def is_htmx(request: HTTPConnection) -> bool:
    """True for a request HTMX made: answer with the fragment, and send ``Vary: HX-Request``."""
    return request.headers.get("hx-request") == "true"


def user_apps(request: HTTPConnection) -> list[dict[str, str]]:
    """The apps the current user may enter (those they hold a role in; every app for an
    administrator), for the app switcher: ``[{"name", "label", "href", "dashboards"}]`` with the
    dashboards the user may open (``[{"label", "href"}]``)."""
    user = current_user(request)
    if user is None:
        return []
    if "user_apps" in request.scope.get("state", {}):
        return request.state.user_apps
    instance: Instance = request.app.state.instance
    mine = set(roles_by_app(request))
    from apps.web import i18n  # local: i18n imports this module

    locale = i18n.locale_for(request)
    apps = []
    for name, compiled in sorted(instance.compiled.apps.items()):
        app = compiled.app
        if (user.is_admin or name in mine) and app.entities:
            viewer = accounts.actor_of(user, roles_by_app(request).get(name, frozenset()), frozenset())
            boards = [
                {"label": d.label.get(locale), "href": f"/a/{name}/dashboards/{d.name}"} for d in app.dashboards if may_see(d, viewer)
            ]
            apps.append({"name": name, "label": app.label.get(locale), "href": f"/a/{name}/{app.entities[0].name}", "dashboards": boards})
    request.state.user_apps = apps
    return apps


class LoginRedirectMiddleware:
    """Answers :class:`LoginRequired` with a redirect to the login page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except LoginRequired:
            target = login_url(scope)
            response: Response
            if Headers(scope=scope).get("hx-request") == "true":
                response = Response(status_code=401, headers={"HX-Redirect": target})
            elif scope.get("path", "").startswith("/api/"):
                response = JSONResponse({"error": {"code": "unauthorized", "message": "log in first", "fields": {}}}, 401)
            else:
                response = RedirectResponse(target, status_code=303)
            await response(scope, receive, send)


class SecurityHeadersMiddleware:
    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class CSRFMiddleware:
    """Refuses unsafe cookie-authenticated requests without the session's CSRF token (403)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if headers.get("authorization", "").lower().startswith("bearer "):
            await self.app(scope, receive, send)
            return
        if scope.get("path", "").startswith("/api/") and not (scope.get("session") or {}).get("uid"):
            # No logged-in session: a forged API request would carry no authority to abuse
            # (POST /api/v1/auth/token answers with a token in the body and starts no session).
            await self.app(scope, receive, send)
            return
        expected = (scope.get("session") or {}).get("csrf")
        sent = headers.get(CSRF_HEADER)
        replay: list[Message] = []
        if sent is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body, replay = await _read_body(receive, MAX_FORM_BYTES)
            if body is None:
                await _refuse(scope, receive, send, 413, "form too large")
                return
            sent = (parse_qs(body.decode("latin-1")).get(CSRF_FIELD) or [None])[0]
        if not expected or not sent or not hmac.compare_digest(str(expected), str(sent)):
            await _refuse(scope, receive, send, 403, "missing or wrong CSRF token; reload the page and try again")
            return
        await self.app(scope, _replaying(replay, receive) if replay else receive, send)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, list[Message]]:
    chunks: list[bytes] = []
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def _replaying(messages: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A receive that hands out the messages already read, then the rest."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    path = scope.get("path", "")
    if path.startswith("/api/"):
        response = JSONResponse({"error": {"code": "csrf" if status == 403 else "too_large", "message": message, "fields": {}}}, status)
    else:
        response = PlainTextResponse(message, status)
    await response(scope, receive, send)
