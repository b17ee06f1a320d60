"""Rules of SPEC.md section 5: what a change sets off (placeholder until the rules work lands).

``run`` is called by the records service after every create, update and transition, inside the
same transaction, with the :class:`Change`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.actors import Actor
from engine.model import Entity

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from engine.records import Records


@dataclass(frozen=True)
class Change:
    """One change of a record: ``before`` is None for a create; ``transition`` names the
    workflow transition that moved it, if one did."""

    entity: Entity
    before: dict[str, Any] | None
    after: dict[str, Any]
    actor: Actor
    now: dt.datetime
    transition: str | None = None


def run(records: Records, conn: Connection, change: Change) -> None:
    """Run the entity's rules for ``change`` (none yet)."""
