"""Duration literals: ``30m``, ``2h``, ``7d``, ``1h30m``, ``90s``, ``2w``.

Used where the language expects a duration (a comparison with a duration, ``datetime +/- ...``,
``within=``); the SLA and rule services parse their ``target:``/``after:`` the same way.
"""

from __future__ import annotations

import datetime as dt
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE)
_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[wdhms]\s*)+$", re.IGNORECASE)
_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> dt.timedelta | None:
    """The duration a text spells, or None when it is not one."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        return None
    seconds = sum(float(n) * _SECONDS[unit.lower()] for n, unit in _PART.findall(text))
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """``1h30m`` for 5400 seconds: the inverse of :func:`parse_duration` for whole seconds."""
    seconds = int(value.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit in "dhms":
        n, seconds = divmod(seconds, _SECONDS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return sign + ("".join(parts) or "0s")
