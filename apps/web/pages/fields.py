"""Field values between the three shapes a page deals in: the API form of a record (what
``Records`` hands out), the strings of an HTML form, and the view a field template renders.

One template per field type (``templates/fields/<type>.html``) has two macros, ``input(f)`` and
``show(f)``; both receive a :class:`FieldView` built here, so templates never compute.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from starlette.datastructures import FormData, QueryParams

from engine.exports import record_title
from engine.model import Entity, Field
from engine.values import BadValue, parse

MULTI_INPUT = frozenset({"multiselect", "tags"})  # many values even without ``multiple``
_TAG_SPLIT = re.compile(r"[,，;；\n]+")

Raw = str | list[str]


@dataclass
class FieldView:
    name: str
    type: str
    label: str
    value: Raw = ""  # the form value: a string, or a list of strings for a multi-valued field
    text: str = ""  # the value as a person reads it
    error: str | None = None
    help: str | None = None
    required: bool = False
    readonly: bool = False
    multiple: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)  # (key, label)
    titles: dict[str, str] = field(default_factory=dict)  # link ids / usernames -> what to show
    files: list[dict[str, Any]] = field(default_factory=list)  # id, filename, size
    max: int | None = None
    max_length: int | None = None
    max_size: int | None = None
    accept: str = ""
    lookup: str = ""  # URL of the search-as-you-type endpoint (links, users)
    href: str = ""  # for a link field's single value: the linked record's page

    @property
    def values(self) -> list[str]:
        return self.value if isinstance(self.value, list) else ([self.value] if self.value else [])


def is_multi(f: Field) -> bool:
    return f.is_multi


def form_value(f: Field, value: Any, tz: dt.tzinfo) -> Raw:
    """An API value as the string(s) an HTML input holds."""
    if f.is_multi:
        return [str(v) for v in (value or [])]
    if value is None:
        return ""
    if f.type == "datetime":
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        return moment.astimezone(tz).strftime("%Y-%m-%dT%H:%M")
    if f.type == "time":
        text = value.isoformat() if isinstance(value, dt.time) else str(value)
        return text[:5] if text.endswith(":00") else text
    if isinstance(value, dt.date):
        return value.isoformat()
    if f.type == "boolean":
        return "true" if value else "false"
    return str(value)


def read_form(entity: Entity, form: FormData | QueryParams, names: list[str] | None = None) -> dict[str, Raw]:
    """The raw values the form sent, for the entity's fields it contains."""
    raw: dict[str, Raw] = {}
    for f in entity.active_fields:
        if names is not None and f.name not in names:
            continue
        if f.name not in form:
            continue
        values = [v for v in form.getlist(f.name) if isinstance(v, str)]
        if f.type == "tags":
            raw[f.name] = [t.strip() for v in values for t in _TAG_SPLIT.split(v) if t.strip()]
        elif f.is_multi:
            raw[f.name] = [v for v in values if v != ""]
        elif f.type == "boolean":  # a hidden "false" precedes the checkbox; a checked box adds "true"
            raw[f.name] = "true" if "true" in values else "false"
        else:
            raw[f.name] = values[-1].strip() if f.type not in ("textarea", "richtext") else values[-1]
    return raw


def input_values(entity: Entity, raw: Mapping[str, Raw]) -> dict[str, Any]:
    """Raw form values as input to ``Records.create``/``update`` (empty single values are None)."""
    values: dict[str, Any] = {}
    for name, value in raw.items():
        f = entity.field(name)
        if f is None:
            continue
        if f.type == "boolean":
            values[name] = value == "true"
        elif isinstance(value, list):
            values[name] = value
        else:
            values[name] = value if value != "" else None
    return values


def lenient_record(entity: Entity, raw: Mapping[str, Raw], tz: dt.tzinfo, user_ids: Mapping[str, int]) -> dict[str, Any]:
    """The form as a record of Python values for evaluating conditions while the user types: a
    value that does not parse yet counts as empty."""
    record: dict[str, Any] = {f.name: ([] if f.is_multi else None) for f in entity.fields}
    for name, value in input_values(entity, raw).items():
        f = entity.field(name)
        if f is None or f.is_computed:
            continue
        try:
            parsed = parse(f, value, tz)
        except BadValue:
            parsed = [] if f.is_multi else None
        if f.type == "user":
            parsed = [user_ids.get(v, v) for v in parsed] if isinstance(parsed, list) else user_ids.get(parsed, parsed)
        record[name] = parsed
    return record


def display_text(f: Field, value: Any, locale: str, tz: dt.tzinfo, titles: Mapping[str, Mapping[int, str]]) -> str:
    if value is None or value == [] or value == "":
        return ""
    values = value if isinstance(value, list) else [value]
    if f.type in ("select", "multiselect"):
        labels = {k: label.get(locale) for k, label in f.options}
        return ", ".join(labels.get(v, v) for v in values)
    if f.type == "link":
        return ", ".join(titles.get(f.name, {}).get(v, f"#{v}") for v in values)
    if f.type == "user":  # a user's title is their display name, when the caller looked it up
        return ", ".join(titles.get(f.name, {}).get(v, v) for v in values)
    if f.type == "datetime":
        return dt.datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M")
    if f.type == "boolean":
        return "✓" if value else "✗"
    return ", ".join(str(v) for v in values)


def listed(value: Any) -> list[str]:
    """A field's value, raw or stored, as its items' texts (none for an empty value)."""
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def file_size(size: int | None) -> str:
    """A file's size as people read it: 45 B, 12.3 KB, 4.5 MB."""
    if size is None:
        return ""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def file_rows(instance: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored files' names and sizes (kiln_files), for attachments and upload widgets."""
    if not ids:
        return {}
    files = instance.schema.system["kiln_files"]
    with instance.engine.connect() as conn:
        rows = conn.execute(select(files.c.id, files.c.filename, files.c.size, files.c.content_type).where(files.c.id.in_(ids)))
        return {r.id: {"id": r.id, "filename": r.filename, "size": r.size, "content_type": r.content_type} for r in rows}


def view(
    f: Field, *, locale: str, tz: dt.tzinfo, base: str, app_url: str, api_value: Any = None, raw: Raw | None = None,
    titles: Mapping[str, Mapping[int, str]] | None = None, files: Mapping[str, dict[str, Any]] | None = None,
    error: str | None = None, required: bool = False, readonly: bool = False, team_labels: Mapping[str, str] | None = None,
) -> FieldView:  # fmt: skip
    """The view of one field: from the record's API value, or from raw form input when given."""
    titles = titles or {}
    value: Raw = raw if raw is not None else form_value(f, api_value, tz)
    options = [(k, label.get(locale)) for k, label in f.options]
    if f.type == "team":
        options = list((team_labels or {}).items())
    if f.type == "boolean":
        options = []
    link_titles = {str(k): v for k, v in titles.get(f.name, {}).items()}
    values = value if isinstance(value, list) else [value]
    fv = FieldView(
        name=f.name, type=f.type, label=f.label.get(locale), value=value, error=error,
        help=f.help.get(locale) if f.help else None, required=required or f.required, readonly=readonly or f.is_computed,
        multiple=f.is_multi, options=options, titles=link_titles, max=int(f.max) if f.max is not None else None,
        max_length=f.max_length, max_size=f.max_size, accept=",".join(f.accept),
    )  # fmt: skip
    if f.type == "rating" and fv.max is None:
        fv.max = 5
    if f.type in ("link", "user"):
        fv.lookup = f"{base}/lookup/{f.name}"
    if f.type == "link" and f.entity and not f.is_multi and value:
        fv.href = f"{app_url}/{f.entity}/{value}"
    if f.type in ("file", "image"):
        fv.files = [(files or {}).get(v) or {"id": v, "filename": v, "size": None} for v in values if v]
    if api_value is not None:
        fv.text = display_text(f, api_value, locale, tz, titles)
    else:
        labels = dict(options)
        fv.text = ", ".join(labels.get(v, link_titles.get(v, v)) for v in values if v)
    return fv


def title(entity: Entity, item: dict[str, Any]) -> str:
    return record_title(entity, item)
