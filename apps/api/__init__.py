"""The JSON API of SPEC.md section 8, under /api/v1 (being built)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []
