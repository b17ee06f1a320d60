"""Schema migrations computed from the definition (placeholder until the migrations work lands)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert

from engine.compiler import Compiled
from engine.db import write


@dataclass
class Plan:
    steps: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.steps


class MigrationRefused(Exception):
    pass


def plan(engine: Engine, compiled: Compiled) -> Plan:
    return Plan()


def apply(engine: Engine, compiled: Compiled, allow_destructive: bool = False, now: dt.datetime | None = None) -> Plan:
    compiled.schema.metadata.create_all(engine)
    with write(engine) as conn:
        for name, app in compiled.apps.items():
            conn.execute(
                insert(compiled.schema.system["kiln_migrations"]).values(
                    app=name, definition_hash=app.definition_hash, applied_at=now or dt.datetime.now(dt.UTC), summary=[]
                )
            )
    return Plan()
