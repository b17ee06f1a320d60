"""Validating a merged definition document against the language schema (Cerberus).

The schema itself is data in :mod:`engine.schema_rules`. This module runs it and turns every
Cerberus error into a :class:`Problem` at the exact ``FILE:LINE:COL`` of the offending key or value,
with a message that says what would be valid. Checks that need more than one value's shape (a key
allowed only on some field types, a name already taken) live in :class:`DefinitionValidator`'s
``check_with`` rules; checks that need the built model (does this state exist?) live in
:mod:`engine.references`.
"""

from __future__ import annotations

import keyword
import re
import threading
import zoneinfo
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from cerberus import TypeDefinition, Validator, errors
from cerberus.errors import ValidationError

from engine.builder import parse_size
from engine.calendars import days_of
from engine.errors import Loc, Problem, did_you_mean
from engine.model import SYSTEM_FIELDS
from engine.schema_rules import (
    APP,
    CARD_TYPES,
    FORMAT_VERSIONS,
    NOT_ON_COMPUTED,
    STATE_COLORS,
    TYPE_KEYS,
    TYPE_REQUIRES,
    Rules,
)
from engine.source import Map, PathLoc, Seq, plain

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Names an expression could not refer to: Python keywords and the language's own words.
# App names that would collide with the API's own paths (/api/v1/files, /api/v1/me/approvals ...).
RESERVED_APPS = frozenset({"auth", "files", "me", "openapi", "dashboards"})
RESERVED = frozenset({*keyword.kwlist, *keyword.softkwlist, "this", "user", "true", "false", "null", "now", "today"})
_KIND_OF_MAP = {
    "entities": "entity", "fields": "field", "states": "state", "transitions": "transition", "roles": "role",
    "teams": "team", "calendars": "calendar", "dashboards": "dashboard", "approvals": "approval", "templates": "template",
}  # fmt: skip
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SPEC = re.compile(r"^((mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?(\s*,\s*|$))+$")
_RANGE = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_MIME = re.compile(r"^[a-z]+/([a-z0-9.+-]+|\*)$")
_EXT = re.compile(r"^\.[A-Za-z0-9]+$")
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_RECIPIENT_FUNC = re.compile(r"^(manager_of|lead_of)\(\s*([A-Za-z0-9_.]+)\s*\)$")
_RECIPIENT_PREFIX = re.compile(r"^(role|team):\s*(\S+)$")
_YAML11_BOOLS = frozenset({"yes", "no", "on", "off", "y", "n"})
_TYPE_WORDS = {
    "string": "a text", "dict": "a mapping of keys", "list": "a list", "boolean": "true or false",
    "integer": "a whole number", "number": "a number", "label": "a text or a {locale: text} map",
    "expression": "an expression (a text)",
}  # fmt: skip


def name_problem(name: str, kind: str) -> str | None:
    """Why ``name`` cannot name a ``kind`` (entity, field, state...), or None when it can."""
    kind = f"{kind} name" if kind else "name"
    if not NAME_RE.match(name):
        suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
        hint = f"; e.g. '{suggestion}'" if suggestion and NAME_RE.match(suggestion) else ""
        return f"'{name}' is not a valid {kind}: use lowercase letters, digits and _, starting with a letter{hint}"
    if "__" in name:
        return f"'{name}' is not a valid {kind}: '__' is reserved (it separates names in table names)"
    if name in SYSTEM_FIELDS:
        return f"'{name}' is not a valid {kind}: it is a system field ({', '.join(SYSTEM_FIELDS)})"
    if kind in ("entity name", "field name") and name in RESERVED:
        return f"'{name}' is not a valid {kind}: it is a reserved word of the expression language"
    if kind == "app name" and name in RESERVED_APPS:
        return f"'{name}' is not a valid {kind}: /api/v1/{name} is a path of the API itself"
    return None


class DefinitionValidator(Validator):
    """Cerberus with the definition language's own types and ``check_with`` rules."""

    types_mapping = {
        **Validator.types_mapping,
        "label": TypeDefinition("label", (str, Mapping), ()),
        "expression": TypeDefinition("expression", (str, bool), ()),
        # Cerberus counts True as an integer; a boolean where a number belongs is a mistake.
        "integer": TypeDefinition("integer", (int,), (bool,)),
    }

    def _report(self, suffix: tuple[str | int, ...], message: str, at_key: bool = False) -> None:
        """A custom error at ``document_path + suffix``; ``at_key`` points at the key, not its value."""
        path = self.document_path + suffix
        self._error([ValidationError(path, self.schema_path, errors.CUSTOM.code, None, None, None, (message, at_key))])

    # -- names ------------------------------------------------------------------------------------
    def _check_with_name(self, field: str, value: str) -> None:
        kind = {"app": "app", "initial": "state", "entity": "entity", "role": "role", "team": "team"}.get(field, "")
        problem = name_problem(value, kind)
        if problem:
            self._error(field, problem)

    def _check_with_names(self, field: str, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return
        kind = _KIND_OF_MAP.get(field, field)
        for key in value:
            problem = name_problem(str(key), kind)
            if field == "calendars" and key == "24x7":
                problem = "calendar '24x7' always exists (round the clock); give yours another name"
            if problem:
                self._report((field, key), problem, at_key=True)

    # -- scalars ----------------------------------------------------------------------------------
    def _check_with_label(self, field: str, value: Any) -> None:
        if isinstance(value, Mapping):
            if not value:
                self._error(field, "a label map needs at least one {locale: text} entry")
            for locale, text in value.items():
                if not re.match(r"^[a-z]{2}([_-][A-Za-z]{2,4})?$", str(locale)):
                    self._report((field, locale), f"'{locale}' is not a locale; write e.g. zh or en", at_key=True)
                elif not isinstance(text, str | int | float):
                    self._report((field, locale), f"the {locale} label must be a text")

    def _check_with_version(self, field: str, value: int) -> None:
        if value not in FORMAT_VERSIONS:
            known = ", ".join(str(v) for v in FORMAT_VERSIONS)
            self._error(field, f"unknown definition format version kiln: {value}; this Kiln reads kiln: {known}")

    def _check_with_timezone(self, field: str, value: str) -> None:
        if value not in _timezones():
            self._error(field, f"unknown timezone '{value}'{did_you_mean(value, _timezones())} (an IANA name like Asia/Shanghai)")

    def _check_with_regex(self, field: str, value: str) -> None:
        try:
            re.compile(value)
        except re.error as exc:
            self._error(field, f"invalid regular expression: {exc}")

    def _check_with_size(self, field: str, value: Any) -> None:
        try:
            size = parse_size(value)
        except ValueError:
            size = None
        if not size or size <= 0:
            self._error(field, f"'{value}' is not a size; write e.g. 15MB, 512KB or 2GB")

    def _check_with_accept(self, field: str, value: str) -> None:
        if not (_EXT.match(value) or _MIME.match(value)):
            self._error(field, f"'{value}' is neither a file extension (.pdf) nor a MIME type (image/*, application/pdf)")

    def _check_with_color(self, field: str, value: str) -> None:
        if value not in STATE_COLORS and not _HEX.match(value):
            self._error(field, f"unknown colour '{value}'{did_you_mean(value, STATE_COLORS)} (or a #rrggbb value)")

    def _check_with_date(self, field: str, value: str) -> None:
        if not _DATE.match(value):
            self._error(field, f"'{value}' is not a date; write YYYY-MM-DD, e.g. 2026-12-31")

    def _check_with_country(self, field: str, value: str | None) -> None:
        if value is not None and value not in _countries():
            self._error(field, f"unknown holiday country '{value}'{did_you_mean(value, _countries())} (an ISO code like CN)")

    def _check_with_hours(self, field: str, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return
        named: dict[int, str] = {}
        for days, ranges in value.items():
            spec_ok = _DAY_SPEC.match(str(days))
            if not spec_ok:
                self._report(
                    (field, days), f"'{days}' is not a day or day range; write e.g. mon-fri, sat ({', '.join(_DAYS)})", True
                )
            for day in days_of(str(days)) if spec_ok else ():
                if day in named:
                    self._report((field, days), f"{_DAYS[day]} already has hours (from {named[day]}); name each day once", True)
                    break
                named[day] = str(days)
            if ranges is None or str(ranges).strip() in ("", "closed", "off"):
                continue
            for part in str(ranges).split(","):
                match = _RANGE.match(part.strip())
                start, end = (int(match[1]) * 60 + int(match[2]), int(match[3]) * 60 + int(match[4])) if match else (0, 0)
                if not match or start >= 24 * 60 or end > 24 * 60:
                    self._report(
                        (field, days),
                        f"'{part.strip()}' is not a time range; write HH:MM-HH:MM, several separated by commas, "
                        'e.g. "08:30-12:00,13:00-17:30" (a range may cross midnight: "20:00-08:00")',
                    )
                    break
                if start == end:
                    self._report((field, days), f"'{part.strip()}' starts and ends at the same time; a whole day is 00:00-24:00")
                    break

    def _check_with_options(self, field: str, value: Any) -> None:
        if not isinstance(value, Mapping | list):
            return
        keys = list(value) if isinstance(value, Mapping) else value
        seen: set[str] = set()
        for i, key in enumerate(keys):
            if not isinstance(key, str | int) or isinstance(key, bool) or str(key) == "":
                self._report((field, i), "an option must be a plain value (text or number)")
            elif str(key) in seen:
                self._report((field, i), f"option '{key}' is listed twice")
            seen.add(str(key))
        if isinstance(value, Mapping):
            for key, label in value.items():
                if not isinstance(label, str | int | float | Mapping) or isinstance(label, bool):
                    self._report((field, key), f"the label of option '{key}' must be a text or a {{locale: text}} map")

    def _check_with_recipients(self, field: str, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            suffix = (field, i) if isinstance(value, list) else (field,)
            if isinstance(item, Mapping):
                extra = set(item) - {"role", "team", "users", "user"}
                if extra or len(item) != 1:
                    self._report(suffix, "a recipient map has one key: role, team, users or user")
            elif not isinstance(item, str) or not item.strip():
                self._report(suffix, "a recipient is a user field, created_by, role:NAME, team:NAME, "
                             "manager_of(FIELD) or lead_of(TEAM)")  # fmt: skip
            elif not (NAME_RE.match(item) or _RECIPIENT_FUNC.match(item) or _RECIPIENT_PREFIX.match(item)):
                self._report(
                    suffix,
                    f"'{item}' is not a recipient; write a user field, created_by, role:NAME, team:NAME, "
                    "manager_of(FIELD) or lead_of(TEAM)",
                )

    # -- shapes that depend on a sibling key ---------------------------------------------------------
    def _check_with_field(self, field: str, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return
        ftype = value.get("type")
        if not isinstance(ftype, str) or ftype not in _field_types():
            return  # the type error is reported on its own
        for key, types in TYPE_KEYS.items():
            if key in value and ftype not in types:
                self._report((field, key), f"'{key}' is not valid on a {ftype} field; it applies to {_or(types)} fields", True)
        if ftype == "computed":
            for key in NOT_ON_COMPUTED:
                if key in value:
                    self._report((field, key), f"'{key}' is not valid on a computed field (it is read-only)", True)
        needed = TYPE_REQUIRES.get(ftype)
        if needed and needed[0] not in value:
            self._report((field,), f"a {ftype} field needs '{needed[0]}': {needed[1]}")
        if ftype == "rating" and "max" in value and not (isinstance(value["max"], int) and 2 <= value["max"] <= 10):
            self._report((field, "max"), "a rating's max is a whole number from 2 to 10")
        if ftype in ("multiselect", "tags") and ("unique" in value or "index" in value):
            self._report((field, "unique" if "unique" in value else "index"), f"a {ftype} field holds several values "
                         "and cannot be unique or indexed", True)  # fmt: skip
        options = value.get("options")
        default = value.get("default")
        if ftype == "select" and isinstance(options, Mapping | list) and isinstance(default, str | int):
            keys = [str(k) for k in options]
            if str(default) not in keys:
                self._report((field, "default"), f"default '{default}' is not one of the options{did_you_mean(str(default), keys)}")
        if "min" in value and "max" in value and _num(value["min"]) > _num(value["max"]):
            self._report((field, "min"), f"min {value['min']} is greater than max {value['max']}")

    def _check_with_approvers(self, field: str, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return
        given = [k for k in ("role", "team", "users") if k in value]
        if len(given) != 1:
            self._error(field, "approvers name exactly one of: role, team or users")

    def _check_with_assign(self, field: str, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return
        given = [k for k in ("team", "user", "role", "from") if k in value]
        if len(given) != 1:
            self._error(field, "assign names exactly one of: team, role, user or from (e.g. {field: assignee, team: night_shift})")
        if "strategy" in value and not ({"team", "role"} & set(value)):
            self._report((field, "strategy"), "a strategy picks among the members of a team or role", True)

    def _check_with_action(self, field: str | int, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return
        if not value:
            self._error(field, "an action needs a kind, e.g. {notify: {to: assignee}}")
        elif len(value) > 1:
            self._error(field, "write one action per list item (start each with '- ')")

    def _check_with_card(self, field: str | int, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            return
        ctype = value.get("type")
        if "kpi" in value and ctype is not None:
            self._report((field, "kpi"), "a kpi card takes no 'type': the KPI sets it (docs/dashboards.md)", True)
        elif "kpi" in value:
            ctype = "kpi"
        elif ctype is None:
            self._report((field,), f"a card needs 'type' (one of: {', '.join(CARD_TYPES)}) or 'kpi'")
        if ctype not in (*CARD_TYPES, "kpi"):
            return
        needs = {"sum": ("field",), "avg": ("field",), "ratio": ("numerator",), "avg_duration": ("from", "to"),
                 "percentile_duration": ("from", "to"), "top": ("group_by",)}.get(ctype, ())  # fmt: skip
        for key in needs:
            if key not in value:
                self._report((field,), f"a {ctype} card needs '{key}'")
        allowed = {"metric": ("trend",), "last": ("trend", "kpi"), "numerator": ("ratio",), "percentile": ("percentile_duration",),
                   "field": ("sum", "avg", "kpi"), "within": ("kpi",), "from": ("avg_duration", "percentile_duration"),
                   "to": ("avg_duration", "percentile_duration"), "fields": ("list",), "sort": ("list",),
                   "limit": ("top", "list"), "by": ("trend", "breaches", "kpi")}  # fmt: skip
        for key, types in allowed.items():
            if key in value and ctype not in types:
                self._report((field, key), f"'{key}' is not valid on a {ctype} card; it applies to {_or(types)} cards", True)
        by = value.get("by")
        valid_by = {"trend": ("hour", "day", "week", "month"), "breaches": ("sla", "state")}.get(str(ctype))
        if by is not None and valid_by and by not in valid_by:
            self._report((field, "by"), f"unknown {ctype} grouping '{by}'{did_you_mean(str(by), valid_by)}")


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _or(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@cache
def _countries() -> frozenset[str]:
    import holidays  # imported late: it is large and only calendars need it

    return frozenset(holidays.list_supported_countries())


@cache
def _field_types() -> frozenset[str]:
    return frozenset(APP["schema"]["entities"]["valuesrules"]["schema"]["fields"]["valuesrules"]["schema"]["type"]["allowed"])


_local = threading.local()


def _validator() -> DefinitionValidator:
    # One per thread: building it checks the whole schema (slow), and a Cerberus validator keeps
    # per-run state, so threads (the studio validates as you type) must not share one.
    if not hasattr(_local, "validator"):
        _local.validator = DefinitionValidator(APP["schema"], allow_unknown=False)
    return _local.validator


def validate(document: Map) -> list[Problem]:
    """Every schema problem of a merged definition document, located."""
    validator = _validator()
    validator.validate(plain(document), normalize=False)
    found = list(_leaves(validator._errors))
    # A key written with an old spelling is reported once, as such, not also as a missing key.
    renamed_to = {
        (tuple(e.document_path[:-1]), _renamed(document, tuple(e.document_path)))
        for e in found
        if e.code == errors.UNKNOWN_FIELD.code
    }
    found = [
        e for e in found
        if not (e.code == errors.REQUIRED_FIELD.code and (tuple(e.document_path[:-1]), e.document_path[-1]) in renamed_to)
    ]  # fmt: skip
    return sorted({_problem(document, error) for error in found})


def _renamed(document: Any, path: tuple[str | int, ...]) -> str | None:
    parent_rules, _ = rules_at(document, path[:-1])
    return parent_rules.get("meta", {}).get("renamed", {}).get(path[-1])


# -- Cerberus errors -> problems ----------------------------------------------------------------------
def _leaves(errs: Iterable[ValidationError]) -> Iterable[ValidationError]:
    for error in errs:
        if error.is_group_error and not error.is_logic_error:
            yield from _leaves(error.child_errors)
        else:
            yield error


def rules_at(document: Any, path: tuple[str | int, ...]) -> tuple[Rules, Any]:
    """The rule set that applies at ``path`` of the document, and the value there."""
    rules: Rules = APP
    value: Any = document
    for part in path:
        # Like Cerberus: ``schema`` is a schema of keys on a mapping, the item rules on a list.
        if isinstance(value, Mapping) and "schema" in rules:
            rules = rules["schema"].get(part, {})
        elif isinstance(value, Mapping) and "valuesrules" in rules:
            rules = rules["valuesrules"]
        elif isinstance(value, list) and "schema" in rules:
            rules = rules["schema"]
        else:
            rules = {}
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            value = None
    return rules, value


def describe(document: Any, path: tuple[str | int, ...]) -> str:
    """How a message names the thing at ``path``: "field summary", "rule 2", "the app"."""
    if not path:
        return "the app definition"
    rules, value = rules_at(document, path)
    parent_rules, _ = rules_at(document, path[:-1])
    what = rules.get("meta", {}).get("what")
    last = path[-1]
    if isinstance(last, int):
        name = value.get("name") if isinstance(value, Mapping) else None
        label = f"'{name}'" if isinstance(name, str) else str(last + 1)
        return f"{what or 'item'} {label}" + ("" if what else f" of '{path[-2]}'")
    if what and "valuesrules" in parent_rules:  # a thing the user named: "field summary"
        return f"{what} {last}"
    return what or f"'{last}'"


def _problem(document: Map, error: ValidationError) -> Problem:
    path = tuple(error.document_path)
    at_key = False
    key = path[-1] if path else ""
    owner = describe(document, path[:-1])
    rules, value = rules_at(document, path)
    parent_rules, _ = rules_at(document, path[:-1])
    meta = rules.get("meta", {})
    code = error.code
    if code == errors.CUSTOM.code:
        message = str(error.info[0])
        at_key = bool(error.info[1]) if len(error.info) > 1 else False
    elif code == errors.UNKNOWN_FIELD.code:
        at_key = True
        message = _unknown_key(str(key), owner, parent_rules)
    elif code == errors.REQUIRED_FIELD.code:
        message = f"{owner} needs '{key}'" + _allowed_hint(rules)
    elif code == errors.BAD_TYPE.code:
        types = rules.get("type", [])
        types = [types] if isinstance(types, str) else types
        message = f"'{key}' in {owner} must be {' or '.join(_TYPE_WORDS.get(t, t) for t in types)}, not {_kind(value)}"
        if "boolean" in types and str(value).lower() in _YAML11_BOOLS:
            message += " (only true and false are booleans)"
    elif code == errors.NOT_NULLABLE.code:
        types = rules.get("type", [])
        types = [types] if isinstance(types, str) else types
        message = f"{describe(document, path)} has no value; write {' or '.join(_TYPE_WORDS.get(t, t) for t in types)}"
    elif code == errors.EMPTY_NOT_ALLOWED.code:
        message = f"'{key}' in {owner} must not be empty"
    elif code in (errors.UNALLOWED_VALUE.code, errors.UNALLOWED_VALUES.code):
        bad = [v for v in (value if isinstance(value, list) else [value]) if v not in rules.get("allowed", ())]
        message = "; ".join(_unknown_value(v, str(key), meta, rules.get("allowed", ())) for v in bad)
    elif code == errors.MIN_VALUE.code:
        message = f"'{key}' in {owner} must be at least {rules.get('min')}"
    elif code == errors.MAX_VALUE.code:
        message = f"'{key}' in {owner} must be at most {rules.get('max')}"
    else:  # a rule we use rarely: Cerberus's own wording is clear enough
        template = errors.BasicErrorHandler.messages.get(code, "invalid value")
        message = f"'{key}' in {owner}: " + template.format(*error.info, constraint=error.constraint, field=key, value=value)
    return Problem(_locate(document, path, at_key), message)


def _unknown_key(key: str, owner: str, parent_rules: Rules) -> str:
    renamed = parent_rules.get("meta", {}).get("renamed", {})
    where = "at the top level" if owner == "the app definition" else f"in {owner}"
    if key in renamed:
        return f"unknown key '{key}' {where}; write '{renamed[key]}' instead"
    return f"unknown key '{key}' {where}{suggest(key, parent_rules.get('schema', {}))}"


def _unknown_value(value: Any, key: str, meta: dict, allowed: Iterable[str]) -> str:
    what = meta.get("unknown", key)
    old = meta.get("values", {})
    if isinstance(value, str) and value in old:
        return f"unknown {what} '{value}'; write '{old[value]}' instead"
    return f"unknown {what} '{value}'{suggest(str(value), allowed)}"


def suggest(word: str, choices: Iterable[str]) -> str:
    """The closest valid choice or, when none is close, all of them (did_you_mean stops at 8)."""
    choices = sorted({str(c) for c in choices})
    return did_you_mean(word, choices) or (f"; expected one of: {', '.join(choices)}" if choices else "")


def _allowed_hint(rules: Rules) -> str:
    allowed = rules.get("allowed")
    return f"; expected one of: {', '.join(map(str, allowed))}" if allowed else ""


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"'{value}'"


def _locate(document: Map, path: tuple[str | int, ...], at_key: bool) -> Loc:
    if at_key and path:
        parent: Any = document
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                return PathLoc(document)(path)
        if isinstance(parent, Map) and str(path[-1]) in parent:
            return parent.loc_of_key(str(path[-1]))
        if isinstance(parent, Seq):
            return PathLoc(document)(path)
    return PathLoc(document)(path)
