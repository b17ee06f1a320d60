"""Logging in and out: ``/login`` (GET the form, POST the credentials) and ``/logout`` (POST).

A login checks the password with argon2 (:func:`engine.accounts.authenticate`), starts a new
session (:func:`apps.web.security.log_in`: a fresh session and CSRF token, so a session planted
before login is worthless) and goes to ``next`` when that is a path on this site. Failed logins
are counted per username and per address in the database (:mod:`engine.logins`); past the limit
the form refuses even the right password until the window has passed.

The login form carries a CSRF token too (the anonymous session gets one when the form renders),
so another site cannot log a browser into an account of its choosing.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from apps.web import i18n, security
from engine import accounts, logins


def routes() -> list[BaseRoute]:
    return [
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Route("/-/locale", i18n.switch, methods=["POST"], name="locale"),
    ]


async def login(request: Request) -> Response:
    if request.method == "GET":
        return await run_in_threadpool(_form, request)
    form = await request.form()
    return await run_in_threadpool(_attempt, request, form)


async def logout(request: Request) -> Response:
    security.log_out(request)
    return RedirectResponse("/login", status_code=303)


def _render(request: Request, status: int, next_url: str, username: str = "", error: str = "") -> Response:
    context = {"next": next_url, "username": username, "error": error}
    return request.app.state.templates.TemplateResponse(request, "login.html", context, status_code=status)


def _form(request: Request) -> Response:
    next_url = security.safe_next(request.query_params.get("next"))
    if security.current_user(request) is not None:
        return RedirectResponse(next_url, status_code=303)
    return _render(request, 200, next_url)


def _attempt(request: Request, form: FormData) -> Response:
    engine = request.app.state.instance.engine
    username = str(form.get("username", "")).strip()[:200]
    password = str(form.get("password", ""))
    next_url = security.safe_next(str(form.get("next", "")) or None)
    address = request.client.host if request.client else None
    _ = i18n.translator(i18n.locale_for(request))
    if logins.locked(engine, username, address):
        # Checked before the password, so a locked account cannot be probed for it either.
        minutes = int(logins.LIMITS.window.total_seconds() // 60)
        error = _("Too many failed logins. Try again in %(minutes)s minutes.", minutes=minutes)
        return _render(request, 429, next_url, username, error)
    user = accounts.authenticate(engine, username, password) if username and password else None
    if user is None:
        logins.record_failure(engine, username, address)
        return _render(request, 401, next_url, username, _("Wrong username or password."))
    logins.clear(engine, [username])
    security.log_in(request, user)
    return RedirectResponse(next_url, status_code=303)
