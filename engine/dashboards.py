"""Dashboards of SPEC.md section 5: every card computed in SQL over the query layer (docs/dashboards.md).

A card's records are a list's records: :class:`Drill` holds the list URL's ``where`` expression and
equality filters (the dashboard's filter controls, the card's ``where``, and for a group or a
bucket its own condition), and the card aggregates ``Query.filtered`` of exactly that spec, so the
actor's row scope applies and the link behind a number opens the very records it counts. The
aggregations themselves are in :mod:`engine.dashboards_sql`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine import dashboards_sql, kpis, permissions
from engine.actors import Actor
from engine.errors import NotFound, RecordError
from engine.model import Card, Dashboard, Entity, Field
from engine.queries import ListSpec, day_range, day_range_conditions

if TYPE_CHECKING:
    from engine.records import Records

EQUALITY_TYPES = frozenset({"select", "multiselect", "user", "team", "link", "boolean", "rating"})  # the list URL's
DATETIME_SYSTEM = ("created_at", "updated_at")


class CardError(RecordError):
    status = 400
    code = "bad_card"


@dataclass(frozen=True)
class Drill:
    """The list behind a number: its URL's ``where`` and equality filters."""

    where: str | None = None
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def and_where(self, condition: str | None) -> Drill:
        if not condition:
            return self
        return replace(self, where=f"{self.where} and ({condition})" if self.where else f"({condition})")

    def with_filter(self, name: str, values: list[str]) -> Drill:
        kept = tuple((k, v) for k, v in self.filters if k != name)
        return replace(self, filters=(*kept, (name, tuple(values))))

    def params(self) -> list[tuple[str, str]]:
        """The list URL's query parameters (apps/web/pages/liststate.py reads them back)."""
        pairs = [(name, v) for name, values in self.filters for v in values]
        return pairs + ([("where", self.where)] if self.where else [])

    def spec(self, entity: Entity, now: dt.datetime, **kw: Any) -> ListSpec:
        """The query layer's spec of this list, as the list page builds it from the URL."""
        filters: dict[str, Any] = {}
        for name, values in self.filters:
            f = entity.field(name)
            filters[name] = values[-1] if f is not None and f.type == "boolean" else list(values)
        return ListSpec(where=self.where, filters=filters, now=now, **kw)


@dataclass
class Point:
    """One group of a card, or one bucket of a trend."""

    key: Any
    label: str
    value: Any
    drill: Drill | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Figure:
    """A card's result."""

    card: Card  # the plain card (a KPI expanded)
    name: str
    label: str
    entity: str
    unit: str  # count | seconds | ratio | number
    value: Any = None
    drill: Drill | None = None
    groups: list[Point] = field(default_factory=list)
    series: list[Point] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self, link: Any) -> dict[str, Any]:
        """The API's card; ``link(entity, drill)`` makes the list URL of a drill."""

        def point(p: Point) -> dict[str, Any]:
            return {"key": _json(p.key), "label": p.label, "value": _json(p.value), **{k: _json(v) for k, v in p.extra.items()},
                    "list": link(self.entity, p.drill) if p.drill else None}  # fmt: skip

        out: dict[str, Any] = {
            "name": self.name, "label": self.label, "type": self.card.type, "unit": self.unit, "value": _json(self.value),
            "series": [point(p) for p in self.series], "groups": [point(p) for p in self.groups],
            "list": link(self.entity, self.drill) if self.drill else None,
            **{k: link(self.entity, v) if isinstance(v, Drill) else _json(v) for k, v in self.extra.items()},
        }  # fmt: skip
        if self.card.type == "list":
            out["columns"], out["items"] = self.columns, self.items
        if self.error:
            out["error"] = self.error
        return out


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def literal(value: Any) -> str:
    """A value as an expression literal (strings JSON-quoted: a valid Python string literal)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


# -- paths and the dashboard's filters -------------------------------------------------------


@dataclass(frozen=True)
class PathInfo:
    path: str
    type: str  # a field type, or "state", "datetime" for system timestamps
    field: Field | None
    entity: Entity  # the entity holding the last field
    direct: bool  # a field of the card's entity itself


def resolve(records: Records, entity: Entity, path: str) -> PathInfo | None:
    """What a field path (``category``, ``device.line``, ``created_at``) names, or None."""
    parts = path.split(".")
    current = entity
    for i, name in enumerate(parts):
        last = i == len(parts) - 1
        if last and (name in DATETIME_SYSTEM or (name.startswith("entered_") and name.endswith("_at")
                                                   and name[8:-3] in current.states)):  # fmt: skip
            return PathInfo(path, "datetime", None, current, i == 0)
        if last and name == "state" and current.workflow:
            return PathInfo(path, "state", None, current, i == 0)
        if last and name == "created_by":
            return PathInfo(path, "user", None, current, i == 0)
        if last and name in ("id", "number"):
            return PathInfo(path, "integer" if name == "id" else "text", None, current, i == 0)
        f = current.field(name)
        if f is None or f.disabled:
            return None
        if last:
            return PathInfo(path, f.type, f, current, i == 0)
        if f.type != "link" or f.is_multi or not f.entity:
            return None
        target = records.app.entity(f.entity)
        if target is None:
            return None
        current = target
    return None


def hidden_hop(records: Records, entity: Entity, path: str, actor: Actor) -> str | None:
    """The first field of ``path`` the actor may not see, as ``entity.field``."""
    current: Entity | None = entity
    for name in path.split("."):
        if current is None:
            return None
        if name in permissions.hidden_fields(current, actor):
            return f"{current.name}.{name}"
        f = current.field(name)
        current = records.app.entity(f.entity) if f is not None and f.type == "link" and f.entity else None
    return None


@dataclass
class Filters:
    """The values chosen in a dashboard's filter controls (the list URL's spelling:
    ``category=a&category=b``, ``device.line=a``, ``created_at.from=2026-03-01``)."""

    values: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, dashboard: Dashboard, params: Any) -> Filters:
        """From query parameters (a Starlette QueryParams or a mapping of lists)."""

        def getlist(name: str) -> list[str]:
            if hasattr(params, "getlist"):
                return [v for v in params.getlist(name) if v]
            raw = params.get(name) if isinstance(params, Mapping) else None
            return [str(v) for v in (raw if isinstance(raw, list) else [raw] if raw else []) if v]

        out = cls()
        for path in dashboard.filters:
            values = getlist(path)
            if values:
                out.values[path] = values
            low, high = (getlist(f"{path}.from") or [""])[-1], (getlist(f"{path}.to") or [""])[-1]
            found = day_range(path, low, high, CardError)
            if found is not None:
                out.ranges[path] = found
        return out

    def params(self) -> list[tuple[str, str]]:
        pairs = [(name, v) for name, values in self.values.items() for v in values]
        for name, (low, high) in self.ranges.items():
            pairs += [(f"{name}.from", low)] if low else []
            pairs += [(f"{name}.to", high)] if high else []
        return pairs

    def drill(self, records: Records, entity: Entity) -> Drill:
        """These filters over ``entity`` (a filter path the entity does not have is left out)."""
        tz = records.timezone
        drill = Drill()
        for path, raw in self.values.items():
            info = resolve(records, entity, path)
            if info is None or info.type in ("date", "datetime"):
                continue
            if info.direct and (info.type in EQUALITY_TYPES or info.type == "state"):
                drill = drill.with_filter(path, raw)
                continue
            values = _literals(info, raw)
            drill = drill.and_where(f"{path} in [{', '.join(values)}]" if values else "false")
        for path, (low, high) in self.ranges.items():
            info = resolve(records, entity, path)
            if info is None or info.type not in ("date", "datetime"):
                continue
            for condition in day_range_conditions(path, low, high, info.type == "date", tz):
                drill = drill.and_where(condition)
        return drill


def _literals(info: PathInfo, raw: list[str]) -> list[str]:
    """Filter values as literals, keeping only values the field can hold (no text reaches the
    expression but a quoted string or a number)."""
    out = []
    for v in raw:
        if info.type in ("select", "multiselect", "team", "state"):
            out.append(literal(v))
        elif info.type in ("integer", "rating", "link"):
            if v.lstrip("-").isdigit():
                out.append(v)
        elif info.type == "boolean":
            out.append("true" if v.lower() in ("true", "1", "yes") else "false")
        elif info.type not in ("user", "file", "image"):
            out.append(literal(v))
    return out


# -- the service -----------------------------------------------------------------------------


class Dashboards:
    """The dashboards of one app (``Dashboards(instance.records(app))``)."""

    def __init__(self, records: Records, use_rollups: bool = True) -> None:
        self.records = records
        self.app = records.app
        self.use_rollups = use_rollups  # False: every card from the rows (the rollups' tests compare)

    def visible(self, actor: Actor) -> list[Dashboard]:
        return [d for d in self.app.dashboards if may_see(d, actor)]

    def get(self, name: str, actor: Actor) -> Dashboard:
        found = next((d for d in self.app.dashboards if d.name == name), None)
        if found is None or not may_see(found, actor):
            raise NotFound(f"no dashboard '{name}' in app {self.app.name} (or it is not shown to your roles)")
        return found

    def compute(
        self, dashboard: Dashboard, actor: Actor, filters: Filters | None = None, now: dt.datetime | None = None,
        locale: str = "zh", only: str | None = None,
    ) -> list[Figure]:  # fmt: skip
        """Every card of the dashboard (or just the card ``only``), each in its own read; a card
        that fails (a hidden field, a KPI the entity cannot answer) carries its error."""
        now = now or dt.datetime.now(dt.UTC)
        filters = filters or Filters()
        figures = []
        with self.records.instance.engine.connect() as conn:
            for card in dashboard.cards:
                if only is not None and card.name != only:
                    continue
                figures.append(self.card(conn, card, actor, filters, now, locale))
        return figures

    def card(self, conn: Any, card: Card, actor: Actor, filters: Filters, now: dt.datetime, locale: str) -> Figure:
        entity = self.records.entity(card.entity)
        label = card.label.get(locale)
        try:
            plain = kpis.expand(card, entity) if card.option("kpi") is not None else card
        except kpis.KpiError as exc:
            return Figure(card, card.name, label, entity.name, "count", error=str(exc))
        base = filters.drill(self.records, entity).and_where(plain.option("where"))
        figure = Figure(plain, card.name, label, entity.name, dashboards_sql.UNIT.get(plain.type, "count"), drill=base)
        try:
            dashboards_sql.CardQuery(self, conn, entity, actor, now, locale).run(plain, figure)
        except RecordError as exc:
            figure.error = exc.message if hasattr(exc, "message") else str(exc)
        return figure


def may_see(dashboard: Dashboard, actor: Actor) -> bool:
    if permissions.unrestricted(actor):
        return True
    return bool(actor.roles & set(dashboard.roles)) if dashboard.roles else bool(actor.roles)
