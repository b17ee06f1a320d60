"""The instance administration pages under ``/-/admin``: users, their roles per app, teams and
API tokens. Only instance administrators may open them (anyone else: 403; anonymous: login).

Every change goes through :mod:`engine.accounts`, which writes the audit entry (app ``-``, entity
``user`` or ``team``) in the same transaction. Every form posts with the CSRF token (the
middleware refuses it otherwise). A refused change re-renders its page with the reason and 422.
A new password or token is shown in the response to the post that made it, once, and never put
in the session or a redirect URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from apps.web import i18n, security
from engine import accounts, logins
from engine.accounts import AccountError, User
from engine.model import App

PAGE_SIZE = 50
FLASH = "kiln_flash"

Handler = Callable[[Request, FormData, User], Response]


def routes() -> list[BaseRoute]:
    get, post = ["GET"], ["POST"]
    return [
        Route("/-/admin", _page(lambda r, f, u: RedirectResponse("/-/admin/users", 303)), methods=get, name="admin"),
        Route("/-/admin/users", _page(users), methods=get, name="admin_users"),
        Route("/-/admin/users/new", _page(new_user), methods=["GET", "POST"], name="admin_user_new"),
        Route("/-/admin/users/{user_id:int}", _page(user_page), methods=["GET", "POST"], name="admin_user"),
        Route("/-/admin/users/{user_id:int}/password", _page(reset_password), methods=post),
        Route("/-/admin/users/{user_id:int}/roles", _page(change_role), methods=post),
        Route("/-/admin/users/{user_id:int}/tokens", _page(create_token), methods=post),
        Route("/-/admin/users/{user_id:int}/tokens/{token_id:int}/revoke", _page(revoke_token), methods=post),
        Route("/-/admin/teams", _page(teams), methods=get, name="admin_teams"),
        Route("/-/admin/teams/{app}/{team}", _page(team_page), methods=get, name="admin_team"),
        Route("/-/admin/teams/{app}/{team}/members", _page(change_member), methods=post),
        Route("/-/admin/teams/{app}/{team}/lead", _page(change_lead), methods=post),
    ]


def _page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An admin endpoint: reads the form, then runs ``handler`` (synchronous database work) in
    the thread pool once the user is known to be an administrator."""

    async def endpoint(request: Request) -> Response:
        form = await request.form() if request.method == "POST" else FormData()

        def run() -> Response:
            user = security.require_user(request)
            if not user.is_admin:
                # A page in the layout (not a bare 403), so the user keeps the menu and logout.
                return _render(request, "admin/forbidden.html", {"tab": ""}, 403)
            return handler(request, form, user)

        return await run_in_threadpool(run)

    return endpoint


# -- helpers ---------------------------------------------------------------------------------------


def _engine(request: Request) -> Any:
    return request.app.state.instance.engine


def _apps(request: Request) -> list[App]:
    return [c.app for _, c in sorted(request.app.state.instance.compiled.apps.items())]


def _gettext(request: Request) -> i18n.Gettext:
    return i18n.translator(i18n.locale_for(request))


def _render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    context = {"flash": request.session.pop(FLASH, None), "error": "", **context}
    return request.app.state.templates.TemplateResponse(request, template, context, status_code=status)


def _done(request: Request, url: str, message: str) -> Response:
    """After a change: back to the page with a one-line message (post/redirect/get)."""
    request.session[FLASH] = message
    return RedirectResponse(url, status_code=303)


def _text(form: FormData, name: str, limit: int = 200) -> str:
    return str(form.get(name, "")).strip()[:limit]


def _user_or_404(request: Request, user_id: int) -> User:
    found = accounts.get_user(_engine(request), user_id)
    if found is None:
        raise HTTPException(404, "no such user")
    return found


def _app_or_404(request: Request, name: str) -> App:
    compiled = request.app.state.instance.compiled.apps.get(name)
    if compiled is None:
        raise HTTPException(404, "no such app")
    return compiled.app


# -- users -----------------------------------------------------------------------------------------


def users(request: Request, form: FormData, admin: User) -> Response:
    after = request.query_params.get("after") or None
    search = request.query_params.get("q", "").strip()[:100]
    rows = accounts.list_users(_engine(request), after, PAGE_SIZE, search)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    context = {"users": rows, "after": after, "q": search, "next_after": rows[-1].username if more else None, "tab": "users"}
    return _render(request, "admin/users.html", context)


def new_user(request: Request, form: FormData, admin: User) -> Response:
    _ = _gettext(request)
    context: dict[str, Any] = {"form": {}, "tab": "users", "locales": i18n.LOCALES}
    if request.method == "GET":
        return _render(request, "admin/user_new.html", context)
    values = {k: _text(form, k) for k in ("username", "display_name", "email", "phone", "locale", "manager")}
    context["form"] = values
    if values["username"] and accounts.get_user(_engine(request), values["username"]) is not None:
        # add_user would update an existing user (the CLI's reset path); the create form must not.
        error = _("A user named %(name)s exists already.", name=values["username"])
        return _render(request, "admin/user_new.html", {**context, "error": error}, 422)
    try:
        user_id, password = accounts.add_user(
            _engine(request), values["username"], None, manager=values["manager"] or None,
            password=str(form.get("password", "")) or None, admin=form.get("is_admin") == "on",
            display_name=values["display_name"] or None, email=values["email"], phone=values["phone"],
            locale=i18n.normalise(values["locale"]), by=security.admin_actor(admin),
        )  # fmt: skip
    except AccountError as exc:
        return _render(request, "admin/user_new.html", {**context, "error": str(exc)}, 422)
    return _user_view(request, user_id, notice=_("User created."), new_password=password)


def user_page(request: Request, form: FormData, admin: User) -> Response:
    user = _user_or_404(request, request.path_params["user_id"])
    if request.method == "GET":
        return _user_view(request, user.id)
    _ = _gettext(request)
    try:
        accounts.update_user(
            _engine(request), user.id, security.admin_actor(admin), manager=_text(form, "manager"),
            display_name=_text(form, "display_name"), email=_text(form, "email"), phone=_text(form, "phone", 50),
            locale=i18n.normalise(_text(form, "locale")), is_active=form.get("is_active") == "on",
            is_admin=form.get("is_admin") == "on",
        )  # fmt: skip
    except AccountError as exc:
        return _user_view(request, user.id, error=str(exc), status=422)
    return _done(request, f"/-/admin/users/{user.id}", _("Saved."))


def reset_password(request: Request, form: FormData, admin: User) -> Response:
    user = _user_or_404(request, request.path_params["user_id"])
    _ = _gettext(request)
    password = str(form.get("password", "")) or accounts.generate_password()
    accounts.update_user(_engine(request), user.id, security.admin_actor(admin), password=password)
    logins.clear(_engine(request), [user.username])  # a reset also lifts a lock-out
    shown = None if form.get("password") else password
    return _user_view(request, user.id, notice=_("Password changed."), new_password=shown)


def change_role(request: Request, form: FormData, admin: User) -> Response:
    user = _user_or_404(request, request.path_params["user_id"])
    _ = _gettext(request)
    app = _app_or_404(request, _text(form, "app", 64))
    role, by = _text(form, "role", 100), security.admin_actor(admin)
    try:
        if form.get("action") == "revoke":
            accounts.revoke_role(_engine(request), user.id, app.name, role, by)
        else:
            accounts.grant_role(_engine(request), user.id, app, role, by)
    except AccountError as exc:
        return _user_view(request, user.id, error=str(exc), status=422)
    return _done(request, f"/-/admin/users/{user.id}#roles", _("Roles changed."))


def create_token(request: Request, form: FormData, admin: User) -> Response:
    user = _user_or_404(request, request.path_params["user_id"])
    _ = _gettext(request)
    try:
        token = accounts.create_token(_engine(request), user.username, _text(form, "name", 100), by=security.admin_actor(admin))
    except AccountError as exc:
        return _user_view(request, user.id, error=str(exc), status=422)
    return _user_view(request, user.id, notice=_("Token created. Copy it now: it is not shown again."), new_token=token)


def revoke_token(request: Request, form: FormData, admin: User) -> Response:
    user = _user_or_404(request, request.path_params["user_id"])
    _ = _gettext(request)
    try:
        accounts.revoke_token(_engine(request), user.id, request.path_params["token_id"], security.admin_actor(admin))
    except AccountError as exc:
        return _user_view(request, user.id, error=str(exc), status=422)
    return _done(request, f"/-/admin/users/{user.id}#tokens", _("Token revoked."))


def _user_view(request: Request, user_id: int, *, error: str = "", notice: str = "", status: int = 200,
               new_password: str | None = None, new_token: str | None = None) -> Response:  # fmt: skip
    engine = _engine(request)
    user = _user_or_404(request, user_id)
    manager = accounts.get_user(engine, user.manager_id) if user.manager_id else None
    locale = i18n.locale_for(request)
    with engine.connect() as conn:
        held = {app.name: accounts.roles_of(conn, user.id, app.name) for app in _apps(request)}
    apps = [
        {
            "name": app.name, "label": app.label.get(locale),
            "roles": [{"name": r.name, "label": r.label.get(locale), "held": r.name in held[app.name]} for r in app.roles],
        }
        for app in _apps(request)
        if app.roles
    ]  # fmt: skip
    context = {
        "user": user, "manager": manager.username if manager else "", "apps": apps, "tokens": accounts.tokens_of(engine, user.id),
        "error": error, "notice": notice, "new_password": new_password, "new_token": new_token, "tab": "users",
        "locales": i18n.LOCALES,
    }  # fmt: skip
    return _render(request, "admin/user.html", context, status)


# -- teams -----------------------------------------------------------------------------------------


def teams(request: Request, form: FormData, admin: User) -> Response:
    engine = _engine(request)
    locale = i18n.locale_for(request)
    apps = [
        {"name": app.name, "label": app.label.get(locale), "teams": [accounts.team(engine, app, t.name) for t in app.teams]}
        for app in _apps(request)
        if app.teams
    ]
    return _render(request, "admin/teams.html", {"apps": apps, "tab": "teams"})


def team_page(request: Request, form: FormData, admin: User, error: str = "", status: int = 200) -> Response:
    app = _app_or_404(request, request.path_params["app"])
    name = request.path_params["team"]
    if name not in app.team_names:
        raise HTTPException(404, "no such team")
    team = accounts.team(_engine(request), app, name)
    context = {"app": app, "app_label": app.label.get(i18n.locale_for(request)), "team": team, "tab": "teams"}
    return _render(request, "admin/team.html", {**context, "error": error}, status)


def change_member(request: Request, form: FormData, admin: User) -> Response:
    app = _app_or_404(request, request.path_params["app"])
    name, username = request.path_params["team"], _text(form, "username", 100)
    _ = _gettext(request)
    try:
        if form.get("action") == "remove":
            accounts.leave_team(_engine(request), app, name, username, security.admin_actor(admin))
        else:
            accounts.join_team(_engine(request), app, name, username, security.admin_actor(admin))
    except AccountError as exc:
        return team_page(request, form, admin, str(exc), 422)
    return _done(request, f"/-/admin/teams/{app.name}/{name}", _("Members changed."))


def change_lead(request: Request, form: FormData, admin: User) -> Response:
    app = _app_or_404(request, request.path_params["app"])
    name = request.path_params["team"]
    _ = _gettext(request)
    try:
        accounts.set_team_lead(_engine(request), app, name, _text(form, "username", 100) or None, security.admin_actor(admin))
    except AccountError as exc:
        return team_page(request, form, admin, str(exc), 422)
    return _done(request, f"/-/admin/teams/{app.name}/{name}", _("Team lead changed."))
