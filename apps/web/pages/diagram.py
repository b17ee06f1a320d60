"""The workflow page ``/a/<app>/<entity>/workflow``: the states and transitions as an inline SVG
drawn here on the server (no script, nothing from a CDN), and the same as tables for screen
readers and small screens.

Layout: layered, left to right. A state's layer is its distance from the initial state along
the transitions (states no transition reaches come last); a final state comes after every other
state, so the path reads to its end and a cancel from the first state is not drawn beside the
second; a layer's states stack top to bottom in definition order. A transition to the next layer
is an arrow between the boxes, one that skips layers an arc above them, one back (or within a
layer) an arc below them, one to the same state a loop above it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import Response

from apps.web.pages.context import PageContext, entity_context, page, render
from apps.web.pages.states import StateLook, look
from engine.errors import NotFound
from engine.model import Workflow

FONT = 14
BOX_H = 40
GAP_Y = 36
MARGIN = 16
START = 28  # room for the initial dot left of the first layer
LOOP = 34  # room above a box for a loop
BACK_STEP = 30  # depth between stacked back arcs
INK = "#57606a"


def text_width(text: str) -> int:
    """Roughly how wide ``text`` is at FONT px: CJK characters are square, Latin ones narrower."""
    return sum(FONT if ord(c) >= 0x2E80 else round(FONT * 0.6) for c in text)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str


def layers(workflow: Workflow) -> dict[str, int]:
    """Each state's layer: the fewest transitions from the initial state; unreached ones last."""
    names = workflow.state_names
    out = {workflow.initial: 0}
    queue = deque([workflow.initial])
    while queue:
        here = queue.popleft()
        for t in workflow.transitions:
            if t.applies_from(here) and t.to not in out:
                out[t.to] = out[here] + 1
                queue.append(t.to)
    last = max(out.values()) + 1
    found = {name: out.get(name, last) for name in names}
    finals = {s.name for s in workflow.states if s.final}
    open_end = max((layer for name, layer in found.items() if name not in finals), default=-1)
    return {name: max(layer, open_end + 1) if name in finals else layer for name, layer in found.items()}


def edges(workflow: Workflow, locale: str) -> list[Edge]:
    out = []
    for t in workflow.transitions:
        sources = workflow.state_names if "*" in t.sources else t.sources
        out.extend(Edge(s, t.to, t.label.get(locale)) for s in sources)
    return out


def svg(workflow: Workflow, looks: dict[str, StateLook], locale: str, title: str) -> Markup:
    """The workflow as an ``<svg>`` element, sized to its content."""
    layer = layers(workflow)
    all_edges = edges(workflow, locale)
    box_w = max([96] + [text_width(s.label) + 28 for s in looks.values()])
    gap_x = max([72] + [text_width(e.label) + 36 for e in all_edges if layer[e.target] > layer[e.source]])
    columns: dict[int, list[str]] = {}
    for name in workflow.state_names:
        columns.setdefault(layer[name], []).append(name)
    tallest = max(len(c) for c in columns.values())
    has_loop = any(e.source == e.target for e in all_edges)
    over = sorted((e for e in all_edges if layer[e.target] - layer[e.source] > 1), key=lambda e: layer[e.target] - layer[e.source])
    top = MARGIN + max(LOOP if has_loop else 0, BACK_STEP * len(over) + FONT if over else 0)
    pos: dict[str, tuple[float, float]] = {}
    for index, names in columns.items():
        offset = (tallest - len(names)) * (BOX_H + GAP_Y) / 2
        for row, name in enumerate(names):
            pos[name] = (MARGIN + START + index * (box_w + gap_x), top + offset + row * (BOX_H + GAP_Y))
    bottom = top + tallest * (BOX_H + GAP_Y) - GAP_Y
    width = MARGIN * 2 + START + len(columns) * box_w + (len(columns) - 1) * gap_x

    parts: list[str] = []
    labels: list[str] = []
    back = sorted((e for e in all_edges if e.source != e.target and layer[e.target] <= layer[e.source]),
                  key=lambda e: abs(pos[e.source][0] - pos[e.target][0]))  # fmt: skip
    seen: dict[tuple[str, str], int] = {}
    lowest = bottom
    for e in all_edges:
        (sx, sy), (tx, ty) = pos[e.source], pos[e.target]
        nth = seen[(e.source, e.target)] = seen.get((e.source, e.target), -1) + 1
        if e.source == e.target:
            a, b = sx + box_w * 0.3, sx + box_w * 0.7
            d = f"M{a:.0f},{sy:.0f} C{a:.0f},{sy - LOOP:.0f} {b:.0f},{sy - LOOP:.0f} {b:.0f},{sy:.0f}"
            lx, ly = (a + b) / 2, sy - LOOP * 0.75 - 4
        elif e in over:  # skips layers: an arc above the boxes between, the longest highest
            height = min(sy, ty) - BACK_STEP * (over.index(e) + 1)
            x1, x2 = sx + box_w * 0.6, tx + min(box_w * 0.3 + 12 * over.index(e), box_w * 0.7)  # arrowheads side by side
            d = f"M{x1:.0f},{sy:.0f} C{x1:.0f},{height:.0f} {x2:.0f},{height:.0f} {x2:.0f},{ty - 2:.0f}"
            lx, ly = (x1 + x2) / 2, (sy + ty) / 8 + height * 0.75 - 4
        elif layer[e.target] > layer[e.source]:
            x1, y1, x2, y2 = sx + box_w, sy + BOX_H / 2 + nth * 8, tx, ty + BOX_H / 2 + nth * 8
            mid = (x1 + x2) / 2
            d = f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2 - 2:.0f},{y2:.0f}"
            lx, ly = mid, (y1 + y2) / 2 - 7
        else:
            depth = bottom + BACK_STEP * (back.index(e) + 1)
            x1, x2 = sx + box_w * 0.4, tx + box_w * 0.6
            y1, y2 = sy + BOX_H, ty + BOX_H
            d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{depth:.0f} {x2:.0f},{depth:.0f} {x2:.0f},{y2 + 2:.0f}"
            lx, ly = (x1 + x2) / 2, (y1 + y2) / 8 + depth * 0.75 + 4
            lowest = max(lowest, ly + FONT / 2)
        parts.append(f'<path d="{d}" fill="none" stroke="{INK}" stroke-width="1.5" marker-end="url(#kiln-arrow)"/>')
        labels.append(f'<text class="edge" x="{lx:.0f}" y="{ly:.0f}" text-anchor="middle" font-size="{FONT - 1}" fill="{INK}" '
                      f'stroke="#fff" stroke-width="4" paint-order="stroke">{escape(e.label)}</text>')  # fmt: skip
    height = lowest + MARGIN

    boxes: list[str] = []
    for name, (x, y) in pos.items():
        s = looks[name]
        boxes.append(f'<g class="state" data-state="{escape(name)}"><rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{BOX_H}" '
                     f'rx="10" fill="{s.fill}" stroke="{s.ink}" stroke-width="1.5"/>')  # fmt: skip
        if s.final:
            boxes.append(f'<rect x="{x + 3:.0f}" y="{y + 3:.0f}" width="{box_w - 6}" height="{BOX_H - 6}" rx="7" fill="none" stroke="{s.ink}"/>')
        boxes.append(f'<text x="{x + box_w / 2:.0f}" y="{y + BOX_H / 2:.0f}" text-anchor="middle" dominant-baseline="central" '
                     f'font-size="{FONT}" fill="#1f2328">{escape(s.label)}</text></g>')  # fmt: skip
    ix, iy = pos[workflow.initial]
    start = (f'<circle cx="{MARGIN + 6}" cy="{iy + BOX_H / 2:.0f}" r="6" fill="#1f2328"/>'
             f'<path d="M{MARGIN + 12},{iy + BOX_H / 2:.0f} L{ix - 2:.0f},{iy + BOX_H / 2:.0f}" stroke="#1f2328" stroke-width="1.5" '
             f'marker-end="url(#kiln-arrow)"/>')  # fmt: skip
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'role="img" aria-label="{escape(title)}" font-family="inherit">'
        '<defs><marker id="kiln-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{INK}"/></marker></defs>'
        + start + "".join(parts) + "".join(boxes) + "".join(labels) + "</svg>"
    )  # fmt: skip


def _rows(ctx: PageContext, workflow: Workflow, looks: dict[str, StateLook]) -> list[dict[str, Any]]:
    roles = {r.name: r.label.get(ctx.locale) for r in ctx.app.roles}

    def field(name: str) -> str:
        f = ctx.entity.field(name)
        return f.label.get(ctx.locale) if f else name

    return [{
        "name": t.name, "label": t.label.get(ctx.locale),
        "from": [looks[s] for s in t.sources if s in looks] if "*" not in t.sources else [],
        "to": looks.get(t.to), "roles": [roles.get(r, r) for r in t.roles], "only": t.only and (ctx.gettext("only the creator") if t.only == "created_by" else ctx.gettext("only the %(field)s", field=field(t.only))),
        "requires": [field(f) for f in t.requires], "guard": t.when.source if t.when else None, "comment": t.comment,
    } for t in workflow.transitions]  # fmt: skip


def _label_of(workflow: Workflow, transition: str | None, locale: str) -> str:
    t = workflow.transition(transition or "")
    return t.label.get(locale) if t is not None else transition or ""


@page
def workflow_page(request: Request) -> Response:
    ctx = entity_context(request)
    workflow = ctx.entity.workflow
    if workflow is None:
        raise NotFound(f"{ctx.entity.name} has no workflow")
    looks = {s.name: look(ctx.entity, s.name, ctx.locale) for s in workflow.states}
    heading = ctx.gettext("Workflow of %(entity)s", entity=ctx.entity.label.get(ctx.locale))
    data = {
        "ctx": ctx, "heading": heading, "svg": svg(workflow, looks, ctx.locale, heading), "states": list(looks.values()),
        "initial": looks[workflow.initial], "transitions": _rows(ctx, workflow, looks),
        "approvals": [{"label": a.shown(ctx.locale), "before": _label_of(workflow, a.before, ctx.locale), "guard": a.when.source if a.when else None,
                       "mode": a.mode, "on_reject": a.on_reject} for a in workflow.approvals],
    }  # fmt: skip
    return render(request, "pages/workflow.html", data, locale=ctx.locale, gettext=ctx.gettext)
