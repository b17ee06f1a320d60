"""The steps of a migration plan and how a plan reads: to a person (``render``) and to a program.

A :class:`Step` is one change to one table, named as the table is named in the database *before*
the migration, except for steps that only make sense afterwards (``create_table``, ``add_index``,
``add_unique``, ``rename_index``), which name the table as the definition does.
Steps are kept in the order they are applied (see ``PHASES``), which is also the order they read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Execution order. Indexes go before the columns they cover; columns change (and state values
# move, copying entered_<state>_at times from a kept column) before tables and columns are renamed,
# so a step names the table as the database has it; new tables and indexes come after every
# rename, under their final names.
PHASES = (
    "drop_index", "drop_unique", "add_column", "change_type", "alter_nullable", "map_states",
    "keep_column", "drop_column", "rename_column", "rename_table", "rename_index", "create_table",
    "add_index", "add_unique", "keep_table", "drop_table",
)  # fmt: skip
# Steps that only report: the plan is empty when these are all it has.
REPORT_ONLY = frozenset({"keep_table", "keep_column"})
SYSTEM = ""  # the "app" of the instance-wide kiln_* tables


def app_of(table: str) -> str:
    """The app a table belongs to: ``<app>__<entity>[__<field>]``; system tables belong to none."""
    return SYSTEM if table.startswith("kiln_") else table.split("__", 1)[0]


@dataclass
class Step:
    kind: str  # one of PHASES
    table: str
    column: str | None = None
    new: str | None = None  # the new name of a renamed table/column/index, an index's name, a state
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def app(self) -> str:
        return app_of(self.table)

    @property
    def changes_database(self) -> bool:
        return self.kind not in REPORT_ONLY

    def describe(self) -> str:
        """One line (more for a type change that fails) saying what the step does."""
        t, c, d = self.table, self.column, self.detail
        kind = self.kind
        if kind == "create_table":
            indexes = ", ".join(d.get("indexes", [])) or "none"
            return f"+ create table {t} ({d.get('columns', 0)} columns; indexes: {indexes})"
        if kind == "keep_table":
            return f"= keep table {t}: not in the definition; dropped only with --allow-destructive"
        if kind == "drop_table":
            return f"- drop table {t} ({d.get('rows', 0)} rows)"
        if kind == "add_column":
            return f"+ add column {t}.{c} {d.get('type', '')}".rstrip()
        if kind == "keep_column":
            return f"= keep column {t}.{c}: not in the definition; dropped only with --allow-destructive"
        if kind == "drop_column":
            return f"- drop column {t}.{c} ({d.get('values', 0)} values)"
        if kind == "rename_column":
            return f"~ rename column {t}.{c} -> {self.new} (data kept)"
        if kind == "rename_table":
            return f"~ rename table {t} -> {self.new} (data kept)"
        if kind == "rename_index":
            return f"~ rename {d.get('what', 'index')} {c} -> {self.new} on {t}"
        if kind == "change_type":
            return self._describe_type_change()
        if kind == "alter_nullable":
            return f"~ make {t}.{c} {'nullable' if d.get('nullable') else 'NOT NULL'}"
        if kind in ("add_index", "add_unique"):
            what = "unique constraint" if kind == "add_unique" else ("unique index" if d.get("unique") else "index")
            return f"+ add {what} {self.new} on {t} ({', '.join(d.get('columns', []))})"
        if kind in ("drop_index", "drop_unique"):
            what = "unique constraint" if kind == "drop_unique" else "index"
            return f"- drop {what} {self.new} on {t} ({', '.join(d.get('columns', []))})"
        if kind == "map_states":
            return f"~ move {d.get('records', 0)} records of {t} from state '{c}' to '{self.new}'"
        return f"? {kind} {t} {c or ''}".rstrip()

    def _describe_type_change(self) -> str:
        d = self.detail
        head = f"~ change type of {self.table}.{self.column}: {d.get('from')} -> {d.get('to')}"
        if not d.get("failed"):
            return f"{head} (all {d.get('rows', 0)} values convert)"
        lines = [f"{head}: {d['failed']} of {d.get('rows', 0)} values would not convert:"]
        for failure in d.get("failures", []):
            lines.append(f"      id {failure['id']}: {failure['shown']} {failure['reason']}")
        more = d["failed"] - len(d.get("failures", []))
        if more > 0:
            lines.append(f"      ... and {more} more")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "app": self.app,
            "table": self.table,
            "column": self.column,
            "new": self.new,
            "detail": self.detail,
            "text": self.describe(),
        }


@dataclass
class Plan:
    """What a migration will do, computed from the definition against the live database."""

    steps: list[Step] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)  # reasons it cannot be applied
    allow_destructive: bool = False

    @property
    def is_empty(self) -> bool:
        """Nothing to change in the database (kept leftovers of earlier definitions don't count)."""
        return not self.blocking and not any(s.changes_database for s in self.steps)

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.changes_database]

    def for_app(self, app: str) -> list[Step]:
        return [s for s in self.steps if s.app == app]

    def render(self) -> str:
        """The plan as ``run.py migrate --plan`` prints it."""
        lines: list[str] = []
        if self.is_empty:
            lines.append("nothing to change")
        else:
            lines.append("migration plan:")
        apps = sorted({s.app for s in self.steps}, key=lambda a: (a == SYSTEM, a))
        for app in apps:
            steps = self.for_app(app)
            if self.is_empty:
                lines.extend(f"  {s.describe()}" for s in steps)
                continue
            lines.append(f"  app {app}:" if app != SYSTEM else "  system tables:")
            lines.extend(f"    {s.describe()}" for s in steps)
        if self.blocking:
            lines.append(f"refused: {len(self.blocking)} problem(s) to fix in the definition or the data first:")
            lines.extend(f"  - {reason}" for reason in self.blocking)
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "empty": self.is_empty,
            "allow_destructive": self.allow_destructive,
            "blocking": list(self.blocking),
            "steps": [s.as_json() for s in self.steps],
        }

    def __str__(self) -> str:
        return self.render()

    def dumps(self) -> str:
        return json.dumps(self.as_json(), ensure_ascii=False, indent=2, default=str)
