"""Messages for people that pages can show in the reader's language.

A :class:`Msg` is the English text (so the API, logs and tests read it as a plain string) that
also remembers its msgid and parameters; the pages' translator looks the msgid up in the
catalogs (locales/) and fills the parameters in.
"""

from __future__ import annotations

from typing import Any


class Msg(str):
    msgid: str
    params: dict[str, Any]

    def __new__(cls, msgid: str, **params: Any) -> Msg:
        message = super().__new__(cls, msgid % params if params else msgid)
        message.msgid = msgid
        message.params = params
        return message


class Named:
    """A name from the definition in a message (a transition, a field, a state, a user): the
    name in the English text the API and the logs read, its label in the reader's language on the
    pages (``dispatch needs: assignee`` there reads ``派单需要填写：处理人``)."""

    __slots__ = ("name", "label")

    def __init__(self, name: str, label: Any = None) -> None:
        self.name = name
        self.label = label  # an engine.model.Label, or None to show the name

    def __str__(self) -> str:
        return self.name

    def shown(self, locale: str) -> str:
        return self.label.get(locale) if self.label is not None else self.name


class Names:
    """Several :class:`Named` in a message, listed."""

    __slots__ = ("items",)

    def __init__(self, items: list[Named]) -> None:
        self.items = items

    def __str__(self) -> str:
        return ", ".join(str(i) for i in self.items)

    def shown(self, locale: str) -> str:
        return ("、" if locale == "zh" else ", ").join(i.shown(locale) for i in self.items)
