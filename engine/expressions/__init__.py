"""The expression language (SPEC.md section 2, docs/expressions.md).

One small, safe language with Python syntax, compiled twice: to Python closures for one
record and to a SQLAlchemy clause for many. Pipeline: :mod:`.parser` (Python's ``ast`` and a
whitelist; never ``eval``) -> :mod:`.checker` and :mod:`.functions` (names, types, positions)
-> :mod:`.evaluate` (Python) and :mod:`.sql` with :mod:`.dialect` (SQLite / PostgreSQL).
"""

from __future__ import annotations

from . import dialect as _dialect  # noqa: F401  (registers the SQLite functions on connect)
from .collect import CompiledExpressions, compile_app, compile_expression
from .compiled import Compiled, EvalContext, EvalError, NotSqlCompilable, SqlContext
from .durations import format_duration, parse_duration
from .functions import SIGNATURES as FUNCTIONS

__all__ = [
    "Compiled",
    "CompiledExpressions",
    "EvalContext",
    "EvalError",
    "FUNCTIONS",
    "NotSqlCompilable",
    "SqlContext",
    "compile_app",
    "compile_expression",
    "format_duration",
    "parse_duration",
]
