"""Checks a schema cannot make: references between entities, fields, states, roles, teams..."""

from __future__ import annotations

from engine.errors import Problem
from engine.model import App


def check(app: App) -> list[Problem]:
    return []
