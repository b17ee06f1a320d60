"""The web application: a Starlette app built from an explicit table of routes.

``create_app(instance)`` is what ``run.py serve`` runs in one process; ``app_from_env`` is the
factory uvicorn imports in each worker process when ``--workers`` is more than one (it opens the
instance from ``KILN_DEFINITIONS`` and ``KILN_DB``, which ``serve`` sets).

Routes so far: ``/`` (the apps and their entities, with capped record counts) and system pages
under ``/-/`` (``/-/health``), so they never collide with app names. Login, the workspace, lists,
forms and the API come next and join the table here.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from apps.web import views
from engine.instance import Instance

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def templates() -> Jinja2Templates:
    # autoescape everywhere: every value on a page comes from users or definitions.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
    return Jinja2Templates(env=env)


def routes() -> list[Route]:
    return [
        Route("/", views.home, name="home"),
        Route("/-/health", views.health, name="health"),
    ]


def create_app(instance: Instance, close_on_shutdown: bool = False) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202 - Starlette's lifespan protocol
        yield
        if close_on_shutdown:
            instance.close()

    app = Starlette(routes=routes(), lifespan=lifespan)
    app.state.instance = instance
    app.state.templates = templates()
    return app


def app_from_env() -> Starlette:
    """The app of one worker process, from the environment ``run.py serve`` prepared."""
    instance = Instance.open(os.environ.get("KILN_DEFINITIONS", "definitions"), os.environ.get("KILN_DB", "sqlite:///data/kiln.db"))
    return create_app(instance, close_on_shutdown=True)
