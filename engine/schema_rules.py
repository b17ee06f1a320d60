"""The definition language of SPEC.md sections 2-5, as one Cerberus schema.

This is data, not code: :mod:`engine.schema` runs it and turns Cerberus errors into located,
actionable problems; ``docs/definitions.md`` documents every key in it (a test keeps them in step).

Each rule set may carry ``meta`` (a rule Cerberus ignores): ``what`` names the thing for messages
("field", "transition"), ``renamed`` maps an old or foreign spelling of a key to the key to write
instead, ``values`` does the same for values (``type: string`` -> ``text``), ``unknown`` names what
an unallowed value is ("field type").
"""

from __future__ import annotations

from typing import Any

from engine.kpis import KPI_NAMES
from engine.model import FIELD_TYPES

FORMAT_VERSIONS = (1,)
LOCALES = ("zh", "en")
ACTION_KINDS = (
    "assign", "transition", "notify", "add_tag", "remove_tag", "set", "create", "update", "webhook", "mark", "unmark",
)  # fmt: skip
CHANNELS = ("in_app", "email", "sms", "webhook", "wecom", "dingtalk")
CARD_TYPES = ("count", "sum", "avg", "ratio", "avg_duration", "percentile_duration", "top", "trend", "breaches", "list")
MARK_COLORS = ("red", "orange", "yellow")
STATE_COLORS = ("gray", "red", "orange", "yellow", "green", "blue", "purple")

Rules = dict[str, Any]


def _meta(rules: Rules, **meta: Any) -> Rules:
    return {**rules, "meta": meta}


# Scalars ------------------------------------------------------------------------------------------
NAME: Rules = {"type": "string", "check_with": "name"}
TEXT: Rules = {"type": "string"}
LABEL: Rules = {"type": "label", "check_with": "label"}
EXPR: Rules = {"type": "expression", "empty": False}
BOOL: Rules = {"type": "boolean"}
ANY: Rules = {"nullable": True}
NAMES: Rules = {"type": ["string", "list"], "schema": TEXT}  # one name or a list of names
NAME_LIST: Rules = {"type": "list", "schema": TEXT}
DURATION: Rules = {"type": "string", "empty": False}  # format checked with the model (references)
# A recipient (a user field, created_by, role:NAME, team:NAME, manager_of(F), lead_of(T)), a
# {role:|team:|users:} map, or a list of these; the shapes are checked by the validator.
RECIPIENTS: Rules = {"type": ["string", "list", "dict"], "empty": False, "check_with": "recipients"}

# Section 2: fields --------------------------------------------------------------------------------
FIELD: Rules = _meta(
    {
        "type": "dict",
        "check_with": "field",
        "schema": {
            "type": _meta(
                {"type": "string", "required": True, "allowed": list(FIELD_TYPES)},
                unknown="field type",
                values={
                    "string": "text", "str": "text", "char": "text", "longtext": "textarea", "text_area": "textarea",
                    "html": "richtext", "int": "integer", "number": "integer or decimal", "float": "decimal",
                    "money": "decimal", "bool": "boolean", "checkbox": "boolean", "choice": "select",
                    "enum": "select", "dropdown": "select", "radio": "select", "checkboxes": "multiselect",
                    "reference": "link", "relation": "link", "foreign_key": "link", "attachment": "file",
                    "picture": "image", "photo": "image", "stars": "rating", "formula": "computed",
                    "timestamp": "datetime", "mobile": "phone",
                },
            ),  # fmt: skip
            "label": LABEL,
            "help": LABEL,
            "required": BOOL,
            "required_if": EXPR,
            "visible_if": EXPR,
            "readonly_if": EXPR,
            "default": ANY,
            "unique": BOOL,
            "index": BOOL,
            "min": {"type": "number"},
            "max": {"type": "number"},
            "max_length": {"type": "integer", "min": 1},
            "pattern": {"type": "string", "check_with": "regex"},
            "disabled": BOOL,
            "renamed_from": TEXT,
            "options": {"type": ["dict", "list"], "empty": False, "check_with": "options"},
            "entity": NAME,
            "multiple": BOOL,
            "max_size": {"type": ["string", "integer"], "check_with": "size"},
            "accept": {"type": "list", "empty": False, "schema": {"type": "string", "check_with": "accept"}},
            "role": NAME,
            "scale": {"type": "integer", "min": 0, "max": 10},
            "expr": EXPR,
        },
    },
    what="field",
    renamed={
        "mandatory": "required", "choices": "options", "values": "options", "enum": "options",
        "target": "entity", "ref": "entity", "to": "entity", "references": "entity", "formula": "expr",
        "expression": "expr", "show_if": "visible_if", "hidden_if": "visible_if (with the condition negated)",
        "visible": "visible_if", "readonly": "readonly_if (or readonly: in permissions)",
        "read_only": "readonly_if", "editable_if": "readonly_if (with the condition negated)",
        "maxlength": "max_length", "max_len": "max_length", "length": "max_length", "regex": "pattern",
        "description": "help", "hint": "help", "placeholder": "help", "many": "multiple",
        "precision": "scale", "decimals": "scale", "max_file_size": "max_size", "size": "max_size",
        "extensions": "accept", "old_name": "renamed_from", "renamed": "renamed_from", "indexed": "index",
        "name": "label (the field's name is its key)", "title": "label", "minimum": "min", "maximum": "max",
    },
)  # fmt: skip

FORM_SECTION: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "section": LABEL,
            "fields": {"type": "list", "required": True, "empty": False, "schema": TEXT},
            "visible_if": EXPR,
            "help": LABEL,
        },
    },
    what="form section",
    renamed={"title": "section", "label": "section", "name": "section", "show_if": "visible_if", "when": "visible_if"},
)

VALIDATION: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "when": {**EXPR, "required": True},
            "fields": NAME_LIST,
            "message": {"type": "string", "required": True, "empty": False},
        },
    },
    what="validation",
    renamed={"if": "when", "condition": "when", "rule": "when", "error": "message", "field": "fields"},
)

# Section 3: workflow ------------------------------------------------------------------------------
STATE: Rules = _meta(
    {
        "type": "dict",
        "nullable": True,
        "schema": {
            "label": LABEL,
            "color": {"type": "string", "check_with": "color"},
            "final": BOOL,
            "renamed_from": TEXT,
            "visible_to": NAME_LIST,
        },
    },
    what="state",
    renamed={"terminal": "final", "end": "final", "is_final": "final", "roles": "visible_to", "old_name": "renamed_from"},
)

TRANSITION: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "from": {**NAMES, "required": True, "empty": False},
            "to": {**TEXT, "required": True},
            "label": LABEL,
            "roles": NAME_LIST,
            "only": TEXT,
            "requires": NAME_LIST,
            "when": EXPR,
            "comment": _meta({"type": "string", "allowed": ["required", "optional", "none"]}, unknown="comment setting"),
        },
    },
    what="transition",
    renamed={
        "source": "from", "sources": "from", "from_state": "from", "target": "to", "dest": "to", "to_state": "to",
        "allowed_roles": "roles", "role": "roles", "guard": "when", "condition": "when", "if": "when",
        "required_fields": "requires", "require": "requires", "fields": "requires", "only_if": "only",
        "assignee_only": "only",
    },
)  # fmt: skip

APPROVERS: Rules = _meta(
    {
        "type": "dict",
        "check_with": "approvers",
        "schema": {"role": NAME, "team": NAME, "users": NAME_LIST},
    },
    what="approvers",
    renamed={"roles": "role", "teams": "team", "user": "users"},
)

APPROVAL: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "label": LABEL,
            "when": EXPR,
            "before": {**TEXT, "required": True},
            "approvers": {**APPROVERS, "required": True},
            "mode": _meta({"type": "string", "allowed": ["any", "all"]}, unknown="approval mode"),
            "on_reject": _meta(
                {"type": "dict", "schema": {"transition": {**TEXT, "required": True}}},
                what="on_reject",
            ),
        },
    },
    what="approval",
    renamed={
        "approver": "approvers", "by": "approvers", "condition": "when", "if": "when", "blocks": "before",
        "transition": "before", "countersign": "mode: all", "type": "mode", "reject": "on_reject",
    },
)  # fmt: skip

CC: Rules = _meta(
    {"type": "dict", "schema": {"when": EXPR, "to": {**RECIPIENTS, "required": True}}},
    what="cc entry",
    renamed={"recipients": "to", "condition": "when", "if": "when"},
)

WORKFLOW: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "initial": NAME,
            "states": {"type": "dict", "required": True, "empty": False, "check_with": "names", "valuesrules": STATE},
            "transitions": {"type": "dict", "check_with": "names", "valuesrules": TRANSITION},
            "approvals": {"type": "dict", "check_with": "names", "valuesrules": APPROVAL},
            "cc": {"type": "list", "schema": CC},
            "state_map": {"type": "dict", "valuesrules": TEXT},
        },
    },
    what="workflow",
    renamed={
        "initial_state": "initial", "start": "initial", "start_state": "initial", "steps": "states",
        "actions": "transitions", "events": "transitions", "approval": "approvals", "copy_to": "cc",
        "carbon_copy": "cc",
    },
)  # fmt: skip

# Section 4: permissions ---------------------------------------------------------------------------
SCOPE: Rules = {"type": ["string", "boolean"], "empty": False}  # all|own|assigned|team, or an expression
UPDATE: Rules = _meta(
    {
        "type": ["boolean", "string", "dict"],
        "empty": False,
        "schema": {
            "all": BOOL,
            "own": BOOL,
            "assigned": BOOL,
            "team": BOOL,
            "when": EXPR,
            "states": NAME_LIST,
        },
    },
    what="update permission",
    renamed={"scope": "own/assigned/team/all: true", "in_states": "states", "condition": "when", "if": "when"},
)

PERMISSION: Rules = _meta(
    {
        "type": "dict",
        "nullable": True,
        "schema": {
            "create": BOOL,
            "read": SCOPE,
            "update": UPDATE,
            "delete": BOOL,
            "export": BOOL,
            "hide": NAME_LIST,
            "readonly": NAME_LIST,
        },
    },
    what="permissions of role",
    renamed={
        "view": "read", "list": "read", "write": "update", "edit": "update", "remove": "delete",
        "hidden": "hide", "hidden_fields": "hide", "read_only": "readonly", "readonly_fields": "readonly",
    },
)  # fmt: skip

# Section 5: rules, SLA, dashboards, notifications -------------------------------------------------
ACTION: Rules = _meta(
    {
        "type": "dict",
        "check_with": "action",
        "schema": {
            "assign": _meta(
                {
                    "type": "dict",
                    "check_with": "assign",
                    "schema": {
                        "field": TEXT,
                        "team": NAME,
                        "user": TEXT,
                        "role": NAME,
                        "from": TEXT,
                        "strategy": _meta(
                            {"type": "string", "allowed": ["least_loaded", "round_robin"]}, unknown="assignment strategy"
                        ),
                    },
                },
                what="assign action",
                renamed={"to": "field", "users": "user", "group": "team", "method": "strategy", "mode": "strategy"},
            ),
            "transition": TEXT,
            "notify": _meta(
                {
                    "type": "dict",
                    "schema": {
                        "to": {**RECIPIENTS, "required": True},
                        "channels": _meta({"type": "list", "empty": False, "allowed": list(CHANNELS)}, unknown="channel"),
                        "template": TEXT,
                        "message": TEXT,
                    },
                },
                what="notify action",
                renamed={"recipients": "to", "channel": "channels", "via": "channels", "text": "message", "body": "message"},
            ),
            "add_tag": NAMES,
            "remove_tag": NAMES,
            "set": {"type": "dict", "empty": False, "valuesrules": ANY},
            "create": _meta(
                {"type": "dict", "schema": {"entity": {**TEXT, "required": True}, "values": {"type": "dict", "valuesrules": ANY}}},
                what="create action",
                renamed={"fields": "values", "data": "values", "set": "values"},
            ),
            "update": _meta(
                {
                    "type": "dict",
                    "schema": {
                        "entity": {**TEXT, "required": True},
                        "where": EXPR,
                        "values": {"type": "dict", "required": True, "empty": False, "valuesrules": ANY},
                    },
                },
                what="update action",
                renamed={"fields": "values", "set": "values", "when": "where", "filter": "where"},
            ),
            "webhook": _meta(
                {
                    "type": "dict",
                    "schema": {
                        "url": {"type": "string", "required": True, "empty": False},
                        "method": _meta({"type": "string", "allowed": ["POST", "PUT", "PATCH"]}, unknown="method"),
                        "headers": {"type": "dict", "valuesrules": TEXT},
                        "body": ANY,
                    },
                },
                what="webhook action",
                renamed={"payload": "body", "data": "body", "endpoint": "url"},
            ),
            "mark": _meta({"type": "string", "allowed": list(MARK_COLORS)}, unknown="mark colour"),
            "unmark": _meta({"type": "string", "allowed": list(MARK_COLORS)}, unknown="mark colour"),
        },
    },
    what="action",
    renamed={
        "assign_to": "assign", "tag": "add_tag", "add_tags": "add_tag", "untag": "remove_tag", "set_field": "set",
        "update_field": "set", "move": "transition", "goto": "transition", "send": "notify", "notify_users": "notify",
        "email": "notify (with channels: [email])", "sms": "notify (with channels: [sms])", "http": "webhook",
        "flag": "mark", "unflag": "unmark", "create_record": "create", "update_records": "update",
    },
)  # fmt: skip
ACTIONS: Rules = {"type": "list", "empty": False, "schema": ACTION}

RULE: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "name": {"type": "string", "empty": False},
            "on": {"type": "string", "required": True, "empty": False},
            "when": EXPR,
            "do": {**ACTIONS, "required": True},
        },
    },
    what="rule",
    renamed={
        "trigger": "on", "event": "on", "when_event": "on", "if": "when", "condition": "when",
        "actions": "do", "then": "do", "label": "name", "title": "name",
    },
)  # fmt: skip

ESCALATION: Rules = _meta(
    {"type": "dict", "schema": {"after": {**DURATION, "required": True}, "do": {**ACTIONS, "required": True}}},
    what="escalation",
    renamed={"at": "after", "delay": "after", "actions": "do", "then": "do"},
)

SLA: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "name": {**NAME, "required": True},
            "label": LABEL,
            "applies_if": EXPR,
            "start": {"type": "string", "empty": False},
            "stop": {"type": "string", "required": True, "empty": False},
            "pause_in": NAME_LIST,
            "calendar": {"type": "string", "empty": False},
            "target": {**DURATION, "required": True},
            "escalations": {"type": "list", "schema": ESCALATION},
        },
    },
    what="SLA",
    renamed={
        "when": "applies_if", "if": "applies_if", "condition": "applies_if", "begin": "start", "end": "stop",
        "until": "stop", "pause": "pause_in", "paused_in": "pause_in", "pause_states": "pause_in",
        "due": "target", "within": "target", "duration": "target", "goal": "target", "escalate": "escalations",
        "escalation": "escalations", "business_hours": "calendar",
    },
)  # fmt: skip

ENTITY: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "label": LABEL,
            "title": {"type": "string", "empty": False},
            "number": {"type": "string", "empty": False},
            "fields": {"type": "dict", "required": True, "empty": False, "check_with": "names", "valuesrules": FIELD},
            "form": {"type": "list", "schema": FORM_SECTION},
            "validations": {"type": "list", "schema": VALIDATION},
            "workflow": WORKFLOW,
            "permissions": {"type": "dict", "valuesrules": PERMISSION},
            "rules": {"type": "list", "schema": RULE},
            "sla": {"type": "list", "schema": SLA},
            "assigned_fields": NAME_LIST,
            "renamed_from": TEXT,
        },
    },
    what="entity",
    renamed={
        "name": "label (the entity's name is its key)", "title_format": "title", "display": "title",
        "numbering": "number", "number_format": "number", "auto_number": "number", "columns": "fields",
        "properties": "fields", "layout": "form", "sections": "form", "checks": "validations",
        "validation": "validations", "state_machine": "workflow", "states": "workflow: {states: ...}",
        "transitions": "workflow: {transitions: ...}", "acl": "permissions", "access": "permissions",
        "automations": "rules", "triggers": "rules", "slas": "sla", "assignee_fields": "assigned_fields",
        "old_name": "renamed_from",
    },
)  # fmt: skip

CALENDAR: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "hours": {"type": "dict", "required": True, "empty": False, "check_with": "hours"},
            "holidays": {"type": "string", "nullable": True, "check_with": "country"},
            "extra_holidays": {"type": "list", "schema": {"type": "string", "check_with": "date"}},
            "extra_workdays": {"type": "list", "schema": {"type": "string", "check_with": "date"}},
        },
    },
    what="calendar",
    renamed={
        "working_hours": "hours", "business_hours": "hours", "country": "holidays",
        "holiday_country": "holidays", "public_holidays": "holidays", "holiday": "extra_holidays",
        "workdays": "extra_workdays", "adjusted_workdays": "extra_workdays",
    },
)  # fmt: skip

CARD: Rules = _meta(
    {
        "type": "dict",
        "check_with": "card",
        "schema": {
            "name": {**NAME, "required": True},
            "type": _meta(
                {"type": "string", "allowed": list(CARD_TYPES)},  # required unless the card names a kpi
                unknown="card type",
                values={"number": "count", "total": "sum", "average": "avg", "rate": "ratio",
                        "percent": "ratio", "ranking": "top", "chart": "trend", "line": "trend", "table": "list",
                        "sla": "breaches"},
            ),  # fmt: skip
            "label": LABEL,
            "entity": {**TEXT, "required": True},
            "where": EXPR,
            "field": TEXT,
            "numerator": EXPR,
            "from": TEXT,
            "to": TEXT,
            "percentile": {"type": "integer", "min": 1, "max": 99},
            "group_by": TEXT,
            "limit": {"type": "integer", "min": 1, "max": 1000},
            "metric": _meta(
                {"type": "string", "allowed": ["created_count", "open_count", "closed_count"]}, unknown="trend metric"
            ),
            "by": TEXT,
            "last": DURATION,
            "fields": NAME_LIST,
            "sort": TEXT,
            "kpi": _meta({"type": "string", "allowed": list(KPI_NAMES)}, unknown="kpi"),
            "within": DURATION,
        },
    },
    what="card",
    renamed={"kind": "type", "title": "label", "filter": "where", "condition": "where", "when": "where",
             "top": "limit", "count": "limit", "group": "group_by", "groupby": "group_by", "columns": "fields",
             "order_by": "sort", "window": "last", "period": "last", "interval": "by"},
)  # fmt: skip

DASHBOARD: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "label": LABEL,
            "roles": NAME_LIST,
            "filters": NAME_LIST,
            "cards": {"type": "list", "required": True, "empty": False, "schema": CARD},
        },
    },
    what="dashboard",
    renamed={"widgets": "cards", "charts": "cards", "visible_to": "roles", "title": "label"},
)

CHANNEL_KEYS: dict[str, Rules] = {
    "in_app": {},
    "email": {"smtp": {"type": "string", "required": True}, "from": TEXT},
    "sms": {"provider": {"type": "string", "allowed": ["webhook"]}, "url": {"type": "string", "required": True},
            "headers": {"type": "dict", "valuesrules": TEXT}},
    "webhook": {"url": TEXT, "headers": {"type": "dict", "valuesrules": TEXT}},
    "wecom": {"url": {"type": "string", "required": True}},
    "dingtalk": {"url": {"type": "string", "required": True}, "secret": TEXT},
}  # fmt: skip

NOTIFICATIONS: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "channels": _meta(
                {
                    "type": "dict",
                    "schema": {
                        name: _meta({"type": "dict", "nullable": True, "schema": keys}, what=f"channel {name}")
                        for name, keys in CHANNEL_KEYS.items()
                    },
                },
                what="channels",
                renamed={"mail": "email", "smtp": "email", "weixin": "wecom", "wechat": "wecom", "ding": "dingtalk",
                         "app": "in_app", "inbox": "in_app", "http": "webhook"},
            ),  # fmt: skip
            "templates": {
                "type": "dict",
                "check_with": "names",
                "valuesrules": _meta(
                    {
                        "type": "dict",
                        "schema": {
                            "subject": LABEL,
                            "body": {**LABEL, "required": True},
                            "survey": _meta(
                                {"type": "dict", "schema": {"field": NAME, "comment": NAME, "expires": DURATION}},
                                what="survey", renamed={"rating": "field", "expiry": "expires", "expire": "expires"},
                            ),
                        },
                    },
                    what="template",
                    renamed={"title": "subject", "text": "body", "content": "body", "message": "body"},
                ),
            },
        },
    },
    what="notifications",
)

NAMED: Rules = {"type": "dict", "nullable": True, "schema": {"label": LABEL}}

APP: Rules = _meta(
    {
        "type": "dict",
        "schema": {
            "kiln": {"type": "integer", "check_with": "version"},
            "app": {**NAME, "required": True},
            "label": LABEL,
            "timezone": {"type": "string", "check_with": "timezone"},
            "locale": _meta({"type": "string", "allowed": list(LOCALES)}, unknown="locale"),
            "roles": {"type": "dict", "check_with": "names", "valuesrules": _meta(NAMED, what="role")},
            "teams": {
                "type": "dict",
                "check_with": "names",
                "valuesrules": _meta(
                    {"type": "dict", "nullable": True, "schema": {"label": LABEL, "lead": TEXT}}, what="team",
                    renamed={"leader": "lead", "manager": "lead", "members": "lead (members join with `run.py user add --team`)"},
                ),  # fmt: skip
            },
            "calendars": {"type": "dict", "check_with": "names", "valuesrules": CALENDAR},
            "entities": {"type": "dict", "required": True, "empty": False, "check_with": "names", "valuesrules": ENTITY},
            "dashboards": {"type": "dict", "check_with": "names", "valuesrules": DASHBOARD},
            "notifications": NOTIFICATIONS,
        },
    },
    what="app",
    renamed={
        "name": "app", "id": "app", "title": "label", "tz": "timezone", "time_zone": "timezone",
        "language": "locale", "lang": "locale", "version": "kiln (the definition format version; a pack's "
        "version goes in pack.yaml)", "format": "kiln", "schema_version": "kiln", "models": "entities",
        "doctypes": "entities", "tables": "entities", "groups": "teams", "departments": "teams",
        "reports": "dashboards", "notification": "notifications", "workflow": "entities: {<entity>: {workflow: ...}}",
        "fields": "entities: {<entity>: {fields: ...}}", "rules": "entities: {<entity>: {rules: ...}}",
    },
)  # fmt: skip

# Which field types take which type-specific keys; keys of FIELD not named here are common.
TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "options": ("select", "multiselect"),
    "entity": ("link",),
    "multiple": ("link", "user", "file", "image"),
    "max_size": ("file", "image"),
    "accept": ("file", "image"),
    "role": ("user",),
    "scale": ("decimal",),
    "expr": ("computed",),
    "min": ("integer", "decimal", "rating"),
    "max": ("integer", "decimal", "rating"),
    "max_length": ("text", "textarea", "richtext", "email", "phone", "url", "location"),
    "pattern": ("text", "email", "phone", "url"),
}
TYPE_REQUIRES: dict[str, tuple[str, str]] = {
    "select": ("options", "the choices, e.g. {a: A线, b: B线}"),
    "multiselect": ("options", "the choices, e.g. {a: A线, b: B线}"),
    "link": ("entity", "the entity it links to"),
    "computed": ("expr", "the expression that computes it"),
}
# Keys that make no sense on a computed (read-only) field.
NOT_ON_COMPUTED = ("required", "required_if", "readonly_if", "default", "unique")
