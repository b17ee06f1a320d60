"""Who is acting: a user with their roles and teams in one app, or the system (rules, jobs)."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    id: int | None
    username: str
    roles: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    is_admin: bool = False
    is_system: bool = False
    rule: str | None = None  # the rule acting, when the system acts for one
    locale: str | None = None

    @property
    def team(self) -> str | None:
        """The user's first team by name (``user.team`` in expressions)."""
        return min(self.teams) if self.teams else None

    def as_rule(self, rule: str) -> Actor:
        return _rule_actor(rule)


@functools.lru_cache(maxsize=4096)
def _rule_actor(rule: str) -> Actor:
    """The system acting for ``rule``: one frozen Actor per rule, not one per action (rules ask
    for it for every change and audit entry they make)."""
    return Actor(None, "system", is_system=True, rule=rule)


SYSTEM = Actor(None, "system", is_system=True)
