"""The cells of a list page: a stored value as the HTML a list cell shows.

A page of 50 rows has hundreds of cells; a template macro per cell (a new Jinja context each
call) cost more than the query, so a list builds one formatter per column for the page and calls
it per row. The formatters show what the type templates' ``show`` macros show (a select as a
badge, a link as a link, e-mail and phone as ``mailto:``/``tel:``), escaped here: every value
goes through :func:`markupsafe.escape` before it is put into the cell's HTML (f-strings, as
``Markup.format`` costs several times more).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from markupsafe import Markup, escape

from engine.model import Field
from engine.values import to_json

Cell = Callable[[Any], Markup]
EMPTY = Markup("")


def formatter(
    f: Field, *, locale: str, tz: dt.tzinfo, app_url: str, titles: Mapping[int, str], usernames: Mapping[int, str],
    team_labels: Mapping[str, str],
) -> Cell:  # fmt: skip
    """The cell of field ``f`` for one page: ``titles`` are the linked records' titles of this
    page, ``usernames`` its users' names."""
    kind = f.type
    if kind in ("select", "team"):
        labels = team_labels if kind == "team" else {k: label.get(locale) for k, label in f.options}
        return lambda v: EMPTY if v is None else Markup(f'<span class="badge">{escape(labels.get(v, v))}</span>')
    if kind == "link":
        base = escape(f"{app_url}/{f.entity}/")
        return lambda v: EMPTY if v is None else Markup(f'<a href="{base}{escape(v)}">{escape(titles.get(v, f"#{v}"))}</a>')
    if kind == "user":
        return lambda v: EMPTY if v is None else escape(usernames.get(v, ""))
    if kind == "datetime":
        return lambda v: EMPTY if v is None else escape(v.astimezone(tz).strftime("%Y-%m-%d %H:%M"))
    if kind == "time":
        return lambda v: EMPTY if v is None else escape(v.strftime("%H:%M") if v.second == 0 else v.isoformat())
    if kind == "boolean":
        return lambda v: EMPTY if v is None else Markup("✓" if v else "✗")
    if kind == "email":
        return lambda v: EMPTY if not v else Markup('<a href="mailto:{0}">{0}</a>'.format(escape(v)))
    if kind == "phone":
        return lambda v: EMPTY if not v else Markup('<a href="tel:{0}">{0}</a>'.format(escape(v)))
    if kind == "url":
        return _url
    if kind == "rating":
        top = int(f.max or 5)
        return lambda v: EMPTY if v is None else Markup(f'<span title="{v}/{top}">{"★" * v}{"☆" * (top - v)}</span>')
    return lambda v: EMPTY if v is None else escape(to_json(v))


def _url(value: Any) -> Markup:
    if not value:
        return EMPTY
    if value.startswith(("http://", "https://")):
        return Markup('<a href="{0}" rel="noopener noreferrer nofollow" target="_blank">{0}</a>'.format(escape(value)))
    return escape(value)
