"""The state of a list page, all of it in the URL: filters, search, sort and the keyset position.

Parameters: ``q`` (search over text fields), ``sort`` (a column, ``-`` for descending),
``cursor`` (the page after a row) or ``before`` (the page before a row), and per filterable field
its name with one or more values (``category=plumbing&category=walls``, ``assignee=liu_qiang``,
``building=3``, ``state=pending``) or, for dates, ``<field>.from`` / ``<field>.to`` (inclusive
days in the app's timezone); ``flag=red`` keeps the records flagged red (``mark: red``);
``breached=<clock>`` / ``overdue=<clock>`` the records whose SLA clock breached (still running, for
``overdue``); ``reopened=yes|no`` the records sent back (rework, reopen) at least once or never;
``where`` an expression, as the API's (a dashboard's drill-down links use it). A field
named like a reserved parameter cannot be filtered by URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.datastructures import QueryParams

from engine import permissions
from engine.actors import Actor
from engine.model import Entity, Field
from engine.queries import BadQuery, ListSpec, day_range, day_range_conditions

RESERVED = frozenset({"q", "sort", "cursor", "before", "limit", "where"})
EQUALITY_TYPES = frozenset({"select", "multiselect", "user", "team", "link", "boolean", "rating"})
RANGE_TYPES = frozenset({"date", "datetime"})
DEFAULT_LIMIT = 25
SYSTEM_RANGES = ("created_at", "updated_at")


@dataclass
class ListState:
    q: str = ""
    sort: str = "-id"
    cursor: str | None = None
    before: str | None = None
    limit: int = DEFAULT_LIMIT
    filters: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, tuple[str, str]] = field(default_factory=dict)
    where: str = ""

    def params(self, **changes: object) -> list[tuple[str, str]]:
        """The query parameters of this state with ``changes`` applied (None drops one)."""
        state = replace(self, **changes)  # type: ignore[arg-type]
        pairs: list[tuple[str, str]] = []
        for name, values in state.filters.items():
            pairs += [(name, v) for v in values]
        for name, (low, high) in state.ranges.items():
            if low:
                pairs.append((f"{name}.from", low))
            if high:
                pairs.append((f"{name}.to", high))
        if state.where:
            pairs.append(("where", state.where))
        if state.q:
            pairs.append(("q", state.q))
        if state.sort and state.sort != "-id":
            pairs.append(("sort", state.sort))
        if state.limit != DEFAULT_LIMIT:
            pairs.append(("limit", str(state.limit)))
        if state.cursor:
            pairs.append(("cursor", state.cursor))
        if state.before:
            pairs.append(("before", state.before))
        return pairs

    def query(self, **changes: object) -> str:
        return urlencode(self.params(**changes))

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.filters or self.ranges or self.where)


def filter_fields(entity: Entity, actor: Actor) -> list[Field]:
    """The fields a list offers filter controls for (never a hidden one)."""
    hidden = permissions.hidden_fields(entity, actor)
    return [
        f for f in entity.active_fields
        if f.name not in hidden and f.name not in RESERVED and (f.type in EQUALITY_TYPES or f.type in RANGE_TYPES)
    ]  # fmt: skip


def parse_state(params: QueryParams, entity: Entity, actor: Actor) -> ListState:
    state = ListState(q=params.get("q", "").strip(), sort=params.get("sort") or "-id", where=params.get("where", "").strip())
    state.cursor = params.get("cursor") or None
    state.before = None if state.cursor else (params.get("before") or None)
    try:
        state.limit = max(1, min(int(params.get("limit", DEFAULT_LIMIT)), 100))
    except ValueError:
        raise BadQuery("limit must be a number from 1 to 100", {"limit": "invalid"}) from None
    names = {f.name: f for f in filter_fields(entity, actor)}
    if entity.workflow:
        values = [v for v in params.getlist("state") if v]
        if values:
            state.filters["state"] = values
    for name, f in names.items():
        if f.type in EQUALITY_TYPES:
            values = [v for v in params.getlist(name) if v]
            if values:
                state.filters[name] = values
        else:
            _range(state, params, name)
    for name in SYSTEM_RANGES:
        _range(state, params, name)
    flags = [v for v in params.getlist("flag") if v]
    if flags and entity.field("flag") is None:  # marked records (``flag=red``): the workspace banner's link
        state.filters["flag"] = flags
    reopened = params.get("reopened")
    if reopened and entity.workflow and entity.field("reopened") is None:  # sent back at least once
        state.filters["reopened"] = [reopened]
    for name in ("breached", "overdue"):  # SLA clocks: a dashboard's breaches card links here
        clocks = [v for v in params.getlist(name) if v]
        if clocks and entity.sla and entity.field(name) is None:
            state.filters[name] = clocks
    return state


def _range(state: ListState, params: QueryParams, name: str) -> None:
    found = day_range(name, params.get(f"{name}.from", "").strip(), params.get(f"{name}.to", "").strip())
    if found is not None:
        state.ranges[name] = found


def to_spec(state: ListState, entity: Entity, timezone: str) -> ListSpec:
    """The query layer's spec: equality filters as filters, date ranges as a ``where`` expression
    (built only from dates parsed above, so no user text reaches the expression)."""
    tz = ZoneInfo(timezone)
    clauses: list[str] = [f"({state.where})"] if state.where else []
    for name, (low, high) in state.ranges.items():
        f = entity.field(name)
        clauses += day_range_conditions(name, low, high, f is not None and f.type == "date", tz)
    filters: dict[str, object] = {}
    for name, values in state.filters.items():
        f = entity.field(name)
        if f is not None and f.type == "boolean":
            filters[name] = values[-1]
        else:
            filters[name] = values
    return ListSpec(
        where=" and ".join(clauses) or None, filters=filters, search=state.q or None, sort=state.sort,
        limit=state.limit, cursor=state.cursor,
    )  # fmt: skip

