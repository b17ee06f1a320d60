"""The KPI vocabulary of dashboards: a card ``{type: kpi, kpi: NAME}`` stands for a plain card
(docs/dashboards.md gives each definition).

A KPI reads the entity's workflow: the *response* state is the first state after the initial one
(``dispatched`` in 待受理 -> 已派单 -> ...), the *final* states are those marked ``final``, and a
*backward* transition (rework, send back, reopen) is one whose target comes before its source in
the order the states are listed. ``expand`` returns the card the KPI means, with the card's own
``where``, ``group_by``, ``label`` and options kept; it raises :class:`KpiError` when the entity
lacks what the KPI needs (a workflow, a rating field).
"""

from __future__ import annotations

import json
from dataclasses import replace

from engine.model import Card, Entity, Transition

KPI_NAMES = (
    "first_response_time", "resolution_time", "first_contact_resolution", "backlog", "backlog_trend", "csat",
    "first_response_rate", "breakpoint_rate",
)  # fmt: skip


class KpiError(ValueError):
    pass


def response_state(entity: Entity) -> str:
    """The state whose entry is the first response: the first non-final state after the initial."""
    wf = entity.workflow
    if wf is None:
        raise KpiError(f"entity {entity.name} has no workflow")
    names = [s.name for s in wf.states if not s.final and s.name != wf.initial]
    if not names:
        raise KpiError(f"entity {entity.name} has no state after {wf.initial}")
    return names[0]


def final_states(entity: Entity) -> list[str]:
    wf = entity.workflow
    if wf is None:
        raise KpiError(f"entity {entity.name} has no workflow")
    finals = [s.name for s in wf.states if s.final]
    if not finals:
        raise KpiError(f"entity {entity.name} has no final state")
    return finals


def backward_transitions(entity: Entity) -> list[str]:
    """Transitions that send a record back: to a state listed before (one of) their sources."""
    wf = entity.workflow
    if wf is None:
        return []
    order = {s.name: i for i, s in enumerate(wf.states)}

    def backward(t: Transition) -> bool:
        sources = list(order) if "*" in t.sources else list(t.sources)
        return any(order.get(t.to, 0) < order.get(s, 0) for s in sources)

    return [t.name for t in wf.transitions if backward(t)]


def rating_field(entity: Entity, card: Card) -> str:
    name = card.option("field")
    if name:
        return str(name)
    found = next((f.name for f in entity.active_fields if f.type == "rating"), None)
    if found is None:
        raise KpiError(f"entity {entity.name} has no rating field; add one or give the card a field")
    return found


def _and(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return " and ".join(f"({p})" for p in kept) or None


def expand(card: Card, entity: Entity) -> Card:
    """The plain card a KPI card means."""
    kpi = str(card.option("kpi"))
    options = {k: v for k, v in card.options if k != "kpi"}
    where = options.pop("where", None)

    def plain(type_: str, **changes: object) -> Card:
        merged = {**options, **changes}
        locs = dict(card.option_locs)
        return replace(
            card, type=type_, options=tuple((k, v) for k, v in merged.items() if v is not None),
            option_locs=tuple((k, locs.get(k, card.loc)) for k in merged),
        )  # fmt: skip

    finals = json.dumps(final_states(entity), ensure_ascii=False) if kpi != "csat" else "[]"
    if kpi == "first_response_time":
        answered = f"entered_{response_state(entity)}_at"
        return plain("avg_duration", where=where, **{"from": "created_at", "to": answered})
    if kpi == "resolution_time":
        closed = final_states(entity)
        if len(closed) > 1:
            raise KpiError(f"entity {entity.name} has several final states; use an avg_duration card per state")
        return plain("avg_duration", where=_and(where, f"state in {finals}"), **{"from": "created_at", "to": f"entered_{closed[0]}_at"})
    if kpi == "first_contact_resolution":
        return plain("ratio", where=_and(where, f"state in {finals}"), numerator="not_reopened")
    if kpi == "backlog":
        wf = entity.workflow
        assert wf is not None
        open_states = json.dumps([s.name for s in wf.states if not s.final], ensure_ascii=False)
        return plain("count", where=_and(where, f"state in {open_states}"))  # an index range, where not in is a scan
    if kpi == "backlog_trend":
        return plain("trend", where=where, metric="open_count", by=options.get("by", "day"), last=options.get("last", "30d"))
    if kpi == "csat":
        return plain("avg", where=where, field=rating_field(entity, card))
    if kpi == "first_response_rate":
        within = str(options.pop("within", "2h"))
        answered = f"entered_{response_state(entity)}_at"
        return plain("ratio", where=where, within=None, numerator=f'{answered} - created_at <= "{within}"')
    if kpi == "breakpoint_rate":
        return plain("breaches", where=where, by=options.get("by", "sla"))
    raise KpiError(f"unknown kpi '{kpi}'; expected one of: {', '.join(KPI_NAMES)}")
