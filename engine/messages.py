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
