"""The expression language (placeholder interface until the expressions work lands)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import Problem
from engine.model import App, Expr


@dataclass
class CompiledExpressions:
    by_expr: dict[Expr, object] = field(default_factory=dict)
    computed_types: dict[tuple[str, str], str] = field(default_factory=dict)

    def __getitem__(self, expr: Expr) -> object:
        return self.by_expr[expr]


def compile_app(app: App) -> tuple[CompiledExpressions, list[Problem]]:
    return CompiledExpressions(), []
