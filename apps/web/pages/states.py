"""A workflow state as the pages draw it: its label and its colour (``State.color``: a named
colour of the schema or ``#rrggbb``), for the record page's badge, the workspace and the diagram."""

from __future__ import annotations

from dataclasses import dataclass

from engine.model import Entity

# name -> (fill, ink): a light fill with a darker border and text of the same hue.
PALETTE: dict[str, tuple[str, str]] = {
    "gray": ("#eaeef2", "#57606a"), "red": ("#ffebe9", "#cf222e"), "orange": ("#fff1e5", "#bc4c00"),
    "yellow": ("#fff8c5", "#9a6700"), "green": ("#dafbe1", "#1a7f37"), "blue": ("#ddf4ff", "#0969da"),
    "purple": ("#fbefff", "#8250df"),
}  # fmt: skip
DEFAULT = ("#f6f8fa", "#57606a")


@dataclass(frozen=True)
class StateLook:
    name: str
    label: str
    fill: str
    ink: str
    final: bool = False

    @property
    def style(self) -> str:
        """Inline CSS of a badge (the colours come from the definition, so not from a class)."""
        return f"background:{self.fill};border-color:{self.ink};color:{self.ink}"


def colours(color: str | None) -> tuple[str, str]:
    if color and color.startswith("#") and len(color) == 7:
        return f"{color}22", color  # the colour at low opacity as the fill
    return PALETTE.get(color or "", DEFAULT)


def look(entity: Entity, state: str | None, locale: str) -> StateLook:
    """The label and colours of ``state``; an unknown state (renamed away) shows its name."""
    found = entity.workflow.state(state) if entity.workflow and state else None
    if found is None:
        return StateLook(state or "", state or "", *DEFAULT)
    return StateLook(found.name, found.label.get(locale), *colours(found.color), final=found.final)
