"""The rows of a list page: stored values as the HTML a list shows, made in Python.

A page of 50 rows has hundreds of cells; a template macro per cell (a new Jinja context each
call) cost more than the query, and so did the template's own escaping of every value (a
``Markup`` made for each ``{{ }}``). So a list builds one formatter per column for the page and
calls it per row, and :func:`row_html` makes each ``<tr>`` as one string, handed to the template
as one ``Markup``. The formatters show what the type templates' ``show`` macros show (a select as
a badge, a link as a link, e-mail and phone as ``mailto:``/``tel:``). Escaping is done here:
every value goes through :func:`esc` (MarkupSafe's escaping of ``& < > " '``) before it is put into the
HTML, and nothing else is ever interpolated.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Mapping
from typing import Any

from markupsafe import Markup

from engine.model import Field
from engine.values import to_json

try:  # MarkupSafe's C escaping, as plain text (its public escape() makes a Markup per call)
    from markupsafe._speedups import _escape_inner
except ImportError:  # the pure-Python build of MarkupSafe

    def _escape_inner(text: str) -> str:
        return html.escape(text, quote=True)


Cell = Callable[[Any], str]  # a stored value -> escaped HTML


def esc(value: Any) -> str:
    """``value`` as HTML text: ``& < > " '`` escaped (safe in element content and in quoted
    attribute values)."""
    return _escape_inner(value if type(value) is str else str(value))


def formatter(
    f: Field, *, locale: str, tz: dt.tzinfo, app_url: str, titles: Mapping[int, str], usernames: Mapping[int, str],
    team_labels: Mapping[str, str],
) -> Cell:  # fmt: skip
    """The cell of field ``f`` for one page: ``titles`` are the linked records' titles of this
    page, ``usernames`` its users' names."""
    kind = f.type
    if kind in ("select", "team"):
        labels = team_labels if kind == "team" else {k: label.get(locale) for k, label in f.options}
        return lambda v: "" if v is None else f'<span class="badge">{esc(labels.get(v, v))}</span>'
    if kind == "link":
        base = esc(f"{app_url}/{f.entity}/")
        return lambda v: "" if v is None else f'<a href="{base}{esc(v)}">{esc(titles.get(v, f"#{v}"))}</a>'
    if kind == "user":
        return lambda v: "" if v is None else esc(usernames.get(v, ""))
    if kind == "datetime":
        return lambda v: "" if v is None else esc(v.astimezone(tz).strftime("%Y-%m-%d %H:%M"))
    if kind == "time":
        return lambda v: "" if v is None else esc(v.strftime("%H:%M") if v.second == 0 else v.isoformat())
    if kind == "boolean":
        return lambda v: "" if v is None else ("✓" if v else "✗")
    if kind == "email":
        return lambda v: "" if not v else '<a href="mailto:{0}">{0}</a>'.format(esc(v))
    if kind == "phone":
        return lambda v: "" if not v else '<a href="tel:{0}">{0}</a>'.format(esc(v))
    if kind == "url":
        return _url
    if kind == "rating":
        top = int(f.max or 5)
        return lambda v: "" if v is None else f'<span title="{v}/{top}">{"★" * v}{"☆" * (top - v)}</span>'
    return lambda v: "" if v is None else esc(to_json(v))


def _url(value: Any) -> str:
    if not value:
        return ""
    if value.startswith(("http://", "https://")):
        return '<a href="{0}" rel="noopener noreferrer nofollow" target="_blank">{0}</a>'.format(esc(value))
    return esc(value)


class RowMaker:
    """The ``<tr>`` of each record of one list page, as one ``Markup``; what every row shares
    (links, labels, the columns' formatters) is worked out once per page. The cells are those
    of ``templates/pages/_list_body.html``'s header: [pick], number with flags, the columns,
    [state], created."""

    def __init__(
        self, *, base: str, columns: list[tuple[str, Cell]], tz: dt.tzinfo, flags: Mapping[int, list[str]],
        flagged_label: str, states: Mapping[str, str] | None, pick_label: str | None, title: Callable[[Mapping[str, Any]], str],
    ) -> None:  # fmt: skip
        self.base = esc(base)
        self.columns = columns
        self.tz = tz
        self.flags = flags
        self.flagged_label = esc(flagged_label)
        self.states = states  # None: the entity has no workflow (no state column)
        self.pick_label = esc(pick_label) if pick_label is not None else None  # None: no bulk actions
        self.title = title

    def __call__(self, r: Mapping[str, Any]) -> Markup:
        record_id = int(r["id"])
        parts = ["<tr>"]
        if self.pick_label is not None:
            parts.append(
                f'<td class="pick"><input type="checkbox" name="ids" value="{record_id}:{int(r["version"])}" '
                f'aria-label="{self.pick_label} {esc(self.title(r))}"></td>'
            )
        flags = "".join(
            f' <span class="flag flag-{esc(c)}" title="{self.flagged_label} {esc(c)}">●</span>' for c in self.flags.get(record_id, ())
        )
        parts.append(f'<td><a href="{self.base}/{record_id}">{esc(r.get("number") or f"#{record_id}")}</a>{flags}</td>')
        parts.extend(f"<td>{cell(r[name])}</td>" for name, cell in self.columns)
        if self.states is not None:
            state = r.get("state")
            parts.append(f'<td><span class="badge">{esc(self.states.get(state, state or ""))}</span></td>')
        parts.append(f'<td class="muted">{r["created_at"].astimezone(self.tz).strftime("%Y-%m-%d %H:%M")}</td></tr>')
        return Markup("".join(parts))
