"""What every page handler needs: the app, entity and actor of a request, its locale and
translator, rendering (full page or HTMX fragment) and the JSON twin, and errors a user can act on.

Handlers are plain functions wrapped by :func:`page`, which turns the engine's refusals
(:class:`engine.errors.RecordError`) into a page (or a JSON error for the JSON twin) and a
missing login into a redirect to ``/login?next=...``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from apps.web import security
from apps.web.i18n import locale_for, translator
from engine.actors import Actor
from engine.errors import NotFound, RecordError
from engine.instance import Instance
from engine.model import App, Entity

JSON_SUFFIX = ".json"
Handler = Callable[[Request], Response]


class LoginRequired(Exception):
    """No user on this request: pages send the browser to the login page."""


@dataclass
class PageContext:
    request: Request
    instance: Instance
    app: App
    entity: Entity
    actor: Actor
    locale: str
    gettext: Callable[..., str]

    @property
    def records(self) -> Any:  # engine.records.Records
        return self.instance.records(self.app.name)

    @property
    def base(self) -> str:
        """The URL of the entity's list; every other page of it hangs below."""
        return f"/a/{self.app.name}/{self.entity.name}"


def instance_of(request: Request) -> Instance:
    return request.app.state.instance


def require_user(request: Request) -> Any:
    user = security.current_user(request)
    if user is None:
        raise LoginRequired()
    return user


def entity_context(request: Request, entity_name: str | None = None) -> PageContext:
    """The app, entity and acting user named by the URL; 404 for an unknown app or entity (and for
    an app the user has no role in, so app names are not probed)."""
    require_user(request)
    instance = instance_of(request)
    app_name = request.path_params["app"]
    compiled = instance.compiled.apps.get(app_name)
    if compiled is None:
        raise NotFound(f"no app '{app_name}'")
    app = compiled.app
    name = entity_name or request.path_params["entity"]
    entity = app.entity(name)
    actor = security.actor(request, app_name)
    if entity is None or actor is None or not (actor.roles or actor.is_admin or _granted_any(instance, app_name, actor)):
        raise NotFound(f"no entity '{name}' in app '{app_name}'")
    locale = locale_for(request, app)
    return PageContext(request, instance, app, entity, actor, locale, translator(locale))


def _granted_any(instance: Instance, app: str, actor: Actor) -> bool:
    """Whether a user with no role in ``app`` was granted a record of it (an approver from a
    team, a cc recipient): they may open the pages, where the query layer shows them just those."""
    if actor.id is None:
        return False
    grants = instance.schema.system["kiln_read_grants"]
    with instance.engine.connect() as conn:
        query = select(grants.c.record_id).where(grants.c.app == app, grants.c.user_id == actor.id).limit(1)
        return conn.execute(query).first() is not None


def record_of(request: Request, raw: str | None = None) -> int:
    """The record id of the URL (``raw`` when the caller stripped a suffix); 404 if not a number."""
    raw = request.path_params["id"] if raw is None else raw
    if not raw.isdigit():
        raise NotFound("no such record")
    return int(raw)


def strip_json(value: str) -> tuple[str, bool]:
    return (value[: -len(JSON_SUFFIX)], True) if value.endswith(JSON_SUFFIX) else (value, False)


def wants_json(request: Request, suffix: bool = False) -> bool:
    """The JSON twin: a ``.json`` suffix on the path, or ``Accept: application/json`` first."""
    return suffix or request.headers.get("accept", "").split(",")[0].strip() == "application/json"


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request, template: str, data: dict[str, Any], *, status: int = 200, fragment: str | None = None,
    locale: str = "zh", gettext: Callable[..., str] | None = None,
) -> Response:  # fmt: skip
    """The full page, or for an HTMX request the fragment template; either way ``Vary`` says so,
    so a cache never serves one for the other."""
    htmx = is_htmx(request)
    name = fragment if fragment and htmx else template
    # base.html renders only its content block when ``fragment`` is true (an HTMX swap).
    context = {"locale": locale, "_": gettext or translator(locale), "fragment": htmx and not fragment, **data}
    response = request.app.state.templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Vary"] = "HX-Request, Accept"
    return response


def json_response(data: Any, status: int = 200) -> JSONResponse:
    response = JSONResponse(data, status_code=status)
    response.headers["Vary"] = "HX-Request, Accept"
    return response


def form_of(request: Request) -> Any:
    """The posted form, read by :func:`page` before the handler runs in the thread pool."""
    return request.state.form


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: read a posted form (async), then run the handler in the thread pool (its
    database calls are synchronous) with login redirects and refusals shown as a page or JSON."""

    def guarded(request: Request) -> Response:
        try:
            return handler(request)
        except LoginRequired:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if wants_json(request, request.url.path.endswith(JSON_SUFFIX)):
                return json_response({"error": {"code": "unauthorized", "message": "log in first", "fields": {}}}, 401)
            return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
        except RecordError as exc:
            if wants_json(request, request.url.path.endswith(JSON_SUFFIX)):
                return json_response(exc.as_json(), exc.status)
            locale = locale_for(request, None)
            return render(request, "pages/error.html", {"error": exc}, status=exc.status, fragment="pages/_error.html", locale=locale)

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        if request.method == "POST":
            request.state.form = await request.form(max_files=0, max_fields=2000)
        return await run_in_threadpool(guarded, request)

    return wrapped
