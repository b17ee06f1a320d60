"""Errors a user can act on: definition problems with a place, and record-level refusals."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.messages import Msg, Named


@dataclass(frozen=True, order=True)
class Loc:
    """A place in a definition file, 1-based."""

    file: str
    line: int
    col: int

    @classmethod
    def unknown(cls) -> Loc:
        return cls("<definition>", 1, 1)

    def shifted(self, offset: int) -> Loc:
        """The place ``offset`` characters further on the same line (inside a scalar)."""
        return Loc(self.file, self.line, self.col + offset)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, order=True)
class Problem:
    loc: Loc
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.loc}: {prefix}{self.message}"


class DefinitionError(Exception):
    """One or more problems in an app definition; ``str()`` lists them as FILE:LINE:COL: message."""

    def __init__(self, loc_or_problems: Loc | Iterable[Problem], message: str | None = None) -> None:
        if isinstance(loc_or_problems, Loc):
            self.problems = [Problem(loc_or_problems, message or "invalid definition")]
        else:
            self.problems = sorted(loc_or_problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A suffix naming the closest valid choice, or listing the valid ones when few."""
    options = sorted({str(c) for c in choices})
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    if options and len(options) <= 8:
        return "; expected one of: " + ", ".join(options)
    return ""


class RecordError(Exception):
    """Base of refusals by the record services; carries an HTTP-like status and a code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}

    def as_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "fields": self.fields}}


class ValidationFailed(RecordError):
    status = 422
    code = "validation_failed"


class NotFound(RecordError):
    status = 404
    code = "not_found"


def not_visible(entity: Any, record_id: Any) -> NotFound:
    """The refusal of a record that does not exist or that the user may not read (the two are
    one answer, so an id says nothing about records the user may not see)."""
    return NotFound(Msg("%(entity)s %(id)s does not exist or is not visible to you", entity=Named(entity.name, entity.label), id=record_id))


class Forbidden(RecordError):
    status = 403
    code = "forbidden"


class StaleVersion(RecordError):
    status = 409
    code = "stale_version"


class Conflict(RecordError):
    status = 409
    code = "conflict"


@dataclass
class ProblemList:
    """Collects problems during checking instead of stopping at the first."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, loc: Loc, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(loc, message, severity))

    def extend(self, problems: Iterable[Problem]) -> None:
        self.problems.extend(problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def raise_if_any(self) -> None:
        if self.errors:
            raise DefinitionError(self.problems)
