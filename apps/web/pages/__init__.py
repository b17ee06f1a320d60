"""The generated pages: workspace, lists, forms, detail (being built)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from apps.web import views


def routes() -> list[BaseRoute]:
    return [Route("/", views.home, name="home")]
