"""Turning a schema-valid document into the typed app model.

The document has passed the Cerberus schema (:mod:`engine.schema`), so shapes are right; this
module only converts them, keeping the place of every expression and named thing.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from engine.errors import Loc
from engine.model import (
    Action,
    App,
    Approval,
    Approvers,
    Calendar,
    CarbonCopy,
    Card,
    Dashboard,
    Entity,
    Escalation,
    Expr,
    Field,
    FormSection,
    Label,
    NamedThing,
    Notifications,
    Permission,
    Rule,
    Sla,
    State,
    Survey,
    Template,
    Transition,
    UpdateRule,
    Validation,
    Workflow,
)
from engine.source import Map, Seq

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3}
ROW_SCOPES = ("all", "own", "assigned", "team")


def parse_size(value: Any) -> int | None:
    """``15MB`` -> bytes; a plain number is bytes."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (write e.g. 15MB, 512KB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _loc(node: Any, key: str | int | None = None) -> Loc:
    if key is not None and isinstance(node, Map | Seq):
        return node.loc_of(key)  # type: ignore[arg-type]
    return getattr(node, "loc", Loc.unknown())


def _expr(node: Map, key: str) -> Expr | None:
    value = node.get(key)
    if value is None:
        return None
    return Expr(str(value), node.loc_of(key))


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return (str(value),)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def build_field(name: str, node: Map) -> Field:
    default = node.get("default")
    ftype = node.get("type", "text")
    if isinstance(default, Map) and "expr" in default:
        default = Expr(str(default["expr"]), default.loc_of("expr"))
    elif isinstance(default, str) and ftype not in ("text", "textarea", "richtext", "select", "email", "phone", "url",
                                                    "location", "multiselect", "tags"):
        # For non-text types a string default is an expression: today(), now(), user.id ...
        default = Expr(default, node.loc_of("default"))
    options = node.get("options") or {}
    if isinstance(options, list):
        option_items = tuple((str(o), Label.of(None, str(o))) for o in options)
    else:
        option_items = tuple((str(k), Label.of(v, str(k))) for k, v in options.items())
    return Field(
        name=name,
        type=ftype,
        label=Label.of(node.get("label"), name),
        loc=node.loc,
        required=bool(node.get("required", False)),
        required_if=_expr(node, "required_if"),
        visible_if=_expr(node, "visible_if"),
        readonly_if=_expr(node, "readonly_if"),
        default=default,
        unique=bool(node.get("unique", False)),
        index=bool(node.get("index", False)),
        min=_decimal(node.get("min")),
        max=_decimal(node.get("max", 5 if ftype == "rating" else None)),
        max_length=node.get("max_length"),
        pattern=node.get("pattern"),
        disabled=bool(node.get("disabled", False)),
        renamed_from=node.get("renamed_from"),
        help=Label.of(node["help"], "") if node.get("help") is not None else None,
        options=option_items,
        entity=node.get("entity"),
        multiple=bool(node.get("multiple", False)),
        max_size=parse_size(node.get("max_size")),
        accept=_names(node.get("accept")),
        role=node.get("role"),
        scale=int(node.get("scale", 2)),
        expr=_expr(node, "expr"),
    )


def build_workflow(node: Map) -> Workflow:
    states = []
    for name, s in (node.get("states") or {}).items():
        s = s or Map(loc=node["states"].loc_of(name))
        states.append(
            State(
                name=name,
                label=Label.of(s.get("label"), name),
                loc=node["states"].loc_of_key(name),
                color=s.get("color"),
                final=bool(s.get("final", False)),
                renamed_from=s.get("renamed_from"),
                visible_to=_names(s.get("visible_to")),
            )
        )
    transitions = []
    for name, t in (node.get("transitions") or {}).items():
        transitions.append(
            Transition(
                name=name,
                sources=_names(t.get("from")),
                to=str(t.get("to")),
                loc=node["transitions"].loc_of_key(name),
                label=Label.of(t.get("label"), name),
                roles=_names(t.get("roles")),
                only=t.get("only"),
                requires=_names(t.get("requires")),
                when=_expr(t, "when"),
                comment=str(t.get("comment", "optional")),
            )
        )
    approvals = []
    for name, a in (node.get("approvals") or {}).items():
        who = a.get("approvers") or {}
        reject = a.get("on_reject") or {}
        approvals.append(
            Approval(
                name=name,
                loc=node["approvals"].loc_of_key(name),
                approvers=Approvers(role=who.get("role"), team=who.get("team"), users=_names(who.get("users"))),
                before=a.get("before"),
                when=_expr(a, "when"),
                mode=str(a.get("mode", "any")),
                on_reject=reject.get("transition") if isinstance(reject, dict) else None,
                label=Label.of(a.get("label"), name),
            )
        )
    cc = tuple(
        CarbonCopy(to=c.get("to"), loc=_loc(node["cc"], i), when=_expr(c, "when")) for i, c in enumerate(node.get("cc") or [])
    )
    states_node = node.get("states") or {}
    initial = node.get("initial") or (next(iter(states_node)) if states_node else "")
    return Workflow(
        initial=str(initial),
        states=tuple(states),
        transitions=tuple(transitions),
        loc=node.loc,
        approvals=tuple(approvals),
        cc=cc,
        state_map=tuple((str(k), str(v)) for k, v in (node.get("state_map") or {}).items()),
    )


def _scope(node: Map, key: str) -> str | Expr | None:
    value = node.get(key)
    if value is None or value is False:
        return None
    if value is True:
        return "all"
    if str(value) in ROW_SCOPES:
        return str(value)
    return Expr(str(value), node.loc_of(key))


def build_permission(role: str, node: Map, loc: Loc) -> Permission:
    update = node.get("update")
    if isinstance(update, Map):
        scope_key = next((k for k in ROW_SCOPES if update.get(k)), None)
        rule = UpdateRule(
            scope=scope_key or _scope(update, "when") or "all",
            states=_names(update.get("states")),
        )
    else:
        scope = _scope(node, "update")
        rule = UpdateRule(scope=scope) if scope else None
    return Permission(
        role=role,
        loc=loc,
        create=bool(node.get("create", False)),
        read=_scope(node, "read"),
        update=rule,
        delete=bool(node.get("delete", False)),
        export=bool(node.get("export", False)),
        hide=_names(node.get("hide")),
        readonly=_names(node.get("readonly")),
    )


def build_actions(items: Any) -> tuple[Action, ...]:
    actions = []
    for i, item in enumerate(items or []):
        if isinstance(item, Map):
            for kind, args in item.items():
                actions.append(Action(kind=kind, args=args, loc=item.loc_of_key(kind)))
        else:
            actions.append(Action(kind=str(item), args=None, loc=_loc(items, i)))
    return tuple(actions)


def build_rule(node: Map, index: int) -> Rule:
    return Rule(
        name=str(node.get("name", f"rule {index + 1}")),
        on=str(node.get("on", "created")),
        loc=node.loc,
        actions=build_actions(node.get("do")),
        when=_expr(node, "when"),
    )


def build_sla(node: Map) -> Sla:
    escalations = tuple(
        Escalation(after=str(e.get("after")), actions=build_actions(e.get("do")), loc=e.loc)
        for e in node.get("escalations") or []
    )
    return Sla(
        name=str(node.get("name")),
        loc=node.loc,
        start=str(node.get("start", "created")),
        stop=str(node.get("stop", "")),
        target=str(node.get("target", "")),
        calendar=str(node.get("calendar", "24x7")),
        applies_if=_expr(node, "applies_if"),
        pause_in=_names(node.get("pause_in")),
        escalations=escalations,
    )


def build_entity(name: str, node: Map, loc: Loc) -> Entity:
    fields_node = node.get("fields") or Map()
    fields = tuple(build_field(fname, fnode or Map(loc=fields_node.loc_of(fname))) for fname, fnode in fields_node.items())
    form = tuple(
        FormSection(
            title=Label.of(s.get("section"), "") if s.get("section") is not None else None,
            fields=_names(s.get("fields")),
            loc=s.loc,
            visible_if=_expr(s, "visible_if"),
        )
        for s in node.get("form") or []
    )
    validations = tuple(
        Validation(when=_expr(v, "when"), fields=_names(v.get("fields")), message=str(v.get("message", "")), loc=v.loc)
        for v in node.get("validations") or []
        if v.get("when") is not None
    )
    perms_node = node.get("permissions") or Map()
    permissions = tuple(build_permission(role, p or Map(), perms_node.loc_of_key(role)) for role, p in perms_node.items())
    return Entity(
        name=name,
        label=Label.of(node.get("label"), name),
        loc=loc,
        fields=fields,
        title=node.get("title"),
        number=node.get("number"),
        form=form,
        validations=validations,
        workflow=build_workflow(node["workflow"]) if node.get("workflow") else None,
        permissions=permissions,
        rules=tuple(build_rule(r, i) for i, r in enumerate(node.get("rules") or [])),
        sla=tuple(build_sla(s) for s in node.get("sla") or []),
        assigned_fields=_names(node.get("assigned_fields")) or ("assignee",),
        renamed_from=node.get("renamed_from"),
    )


def _named(node: Any) -> tuple[NamedThing, ...]:
    if not node:
        return ()
    return tuple(NamedThing(name, Label.of((v or {}).get("label"), name), node.loc_of_key(name)) for name, v in node.items())


def build_app(document: Map, source_hash: str = "") -> App:
    entities_node = document.get("entities") or Map()
    calendars = tuple(
        Calendar(
            name=name,
            loc=document["calendars"].loc_of_key(name),
            hours=tuple((str(k), str(v)) for k, v in (c.get("hours") or {}).items()),
            holidays=c.get("holidays"),
            extra_holidays=_names(c.get("extra_holidays")),
            extra_workdays=_names(c.get("extra_workdays")),
        )
        for name, c in (document.get("calendars") or {}).items()
    )
    dashboards = []
    for name, d in (document.get("dashboards") or {}).items():
        cards = []
        for i, c in enumerate(d.get("cards") or []):
            options = tuple((k, v) for k, v in c.items() if k not in ("name", "type", "label", "entity"))
            cards.append(
                Card(
                    name=str(c.get("name", f"card{i + 1}")),
                    type=str(c.get("type")),
                    loc=c.loc,
                    label=Label.of(c.get("label"), str(c.get("name", ""))),
                    entity=str(c.get("entity", "")),
                    options=options,
                    option_locs=tuple((k, c.loc_of(k)) for k, _ in options),
                )
            )
        dashboards.append(
            Dashboard(
                name=name,
                label=Label.of(d.get("label"), name),
                loc=document["dashboards"].loc_of_key(name),
                cards=tuple(cards),
                roles=_names(d.get("roles")),
                filters=_names(d.get("filters")),
            )
        )
    notes = document.get("notifications") or Map()
    templates = tuple(
        Template(
            name=name, loc=notes["templates"].loc_of_key(name), body=Label.of(t.get("body"), ""),
            subject=Label.of(t["subject"], "") if t.get("subject") is not None else None, survey=_survey(t.get("survey")),
        )  # fmt: skip
        for name, t in (notes.get("templates") or {}).items()
    )
    return App(
        name=str(document.get("app")),
        label=Label.of(document.get("label"), str(document.get("app"))),
        loc=document.loc,
        entities=tuple(build_entity(name, e or Map(), entities_node.loc_of_key(name)) for name, e in entities_node.items()),
        timezone=str(document.get("timezone", "Asia/Shanghai")),
        locale=str(document.get("locale", "zh")),
        version=int(document.get("kiln", 1)),
        roles=_named(document.get("roles")),
        teams=_named(document.get("teams")),
        calendars=calendars,
        dashboards=tuple(dashboards),
        notifications=Notifications(
            channels=tuple((k, v) for k, v in (notes.get("channels") or {}).items()),
            templates=templates,
        ),
        source_hash=source_hash,
    )


def _survey(node: Any) -> Survey | None:
    if node is None:
        return None
    return Survey(field=node.get("field"), comment=node.get("comment"), expires=str(node.get("expires") or "14d"))
