"""The web application: a Starlette app built from an explicit table of routes.

``create_app(instance)`` is what ``run.py serve`` runs in one process; ``app_from_env`` is the
factory uvicorn imports in each worker process when ``--workers`` is more than one (it opens the
instance from ``KILN_DEFINITIONS`` and ``KILN_DB``, which ``serve`` sets).

The routing table is composed here from each part's ``routes()``: accounts (``/login``,
``/logout``), the admin pages and health under ``/-/`` (so they never collide with app names),
the JSON API under ``/api/v1``, vendored static files under ``/static``, and the generated pages
(``/``, ``/a/<app>/...``). Sessions and CSRF come from :mod:`apps.web.security`.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from apps import api
from apps.web import admin, auth, i18n, notifications, outbox, pages, security, survey, views
from apps.web.pages.fields import file_size
from engine import settings
from engine.instance import Instance

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"


def templates() -> Jinja2Templates:
    # autoescape everywhere: every value on a page comes from users or definitions.
    # Templates change with a deployment, not while serving: no per-render file checks unless
    # KILN_DEV=1 (editing templates with the server running).
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
        auto_reload=os.environ.get("KILN_DEV") == "1",
    )
    env.globals["csrf_token"] = security.csrf_token
    env.globals["current_user"] = security.current_user
    env.globals["user_apps"] = security.user_apps
    env.globals["unread_count"] = notifications.unread_count
    env.filters["linkify"] = notifications.linkify
    env.filters["filesize"] = file_size
    i18n.install(env)  # _, gettext, current_locale, label, locales
    return Jinja2Templates(env=env)


def routes() -> list[BaseRoute]:
    return [
        Route("/-/health", views.health, name="health"),
        Route("/favicon.ico", views.favicon),
        *auth.routes(),
        *admin.routes(),
        *notifications.routes(),
        *outbox.routes(),
        *survey.routes(),
        Mount("/api/v1", routes=api.routes(), name="api"),
        Mount("/static", app=StaticFiles(directory=STATIC, check_dir=False), name="static"),
        *pages.routes(),
    ]


def create_app(instance: Instance, close_on_shutdown: bool = False) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202 - Starlette's lifespan protocol
        # The pages' handlers run in threads; with more than a few at once in one process they
        # only queue for the GIL (a list page served 47/s with 40 threads and 88/s with 2).
        threads = int(os.environ.get("KILN_THREADS") or 0)
        if threads > 0:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield
        if close_on_shutdown:
            instance.close()

    secret = settings.session_secret(instance.engine)
    https_only = os.environ.get("KILN_HTTPS_ONLY", "") == "1"
    middleware = [*security.middleware(secret, https_only), Middleware(i18n.RememberLangParam)]
    app = Starlette(routes=routes(), middleware=middleware, lifespan=lifespan)
    app.state.instance = instance
    app.state.templates = templates()
    return app


def app_from_env() -> Starlette:
    """The app of one worker process, from the environment ``run.py serve`` prepared."""
    instance = Instance.open(os.environ.get("KILN_DEFINITIONS", "definitions"), os.environ.get("KILN_DB", "sqlite:///data/kiln.db"))
    from engine.jobs import Jobs  # this process enqueues deliveries; serve's consumer or the workers run them

    Jobs.open(instance, os.environ.get("KILN_QUEUE") or None, os.environ.get("KILN_DB", "sqlite:///data/kiln.db")).attach()
    return create_app(instance, close_on_shutdown=True)
