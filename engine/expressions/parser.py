"""Parsing: Python's own parser, then a whitelist of node kinds; nothing is ever evaluated.

The source may span lines (YAML folded scalars); newlines are read as spaces, which keeps every
character at its offset so that positions map back into the definition file.
"""

from __future__ import annotations

import ast


class ExprError(Exception):
    """A problem in one expression, at character offset ``col`` of its source."""

    def __init__(self, col: int, message: str) -> None:
        super().__init__(message)
        self.col = col
        self.message = message


# Node kinds the language is made of; everything else is refused with a reason.
ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Compare, ast.Eq, ast.NotEq, ast.Lt,
    ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Call, ast.keyword, ast.Name, ast.Load,
    ast.Attribute, ast.Constant, ast.List, ast.Tuple,
)  # fmt: skip

REFUSED = {
    ast.Subscript: "subscripts (x[...]) are not allowed",
    ast.Lambda: "lambda is not allowed in expressions",
    ast.IfExp: "'... if ... else ...' is not supported; combine conditions with and/or",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Dict: "dictionaries are not allowed; write a list [a, b]",
    ast.Set: "sets are not allowed; write a list [a, b]",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "':=' is not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Await: "'await' is not allowed",
    ast.Is: "'is' is not supported; write == null or != null",
    ast.IsNot: "'is not' is not supported; write != null",
    ast.Mod: "operator '%' is not supported",
    ast.Pow: "operator '**' is not supported",
    ast.FloorDiv: "operator '//' is not supported",
    ast.BitAnd: "operator '&' is not supported; write 'and'",
    ast.BitOr: "operator '|' is not supported; write 'or'",
    ast.BitXor: "operator '^' is not supported",
    ast.Invert: "operator '~' is not supported; write 'not'",
    ast.MatMult: "operator '@' is not supported",
    ast.LShift: "operator '<<' is not supported",
    ast.RShift: "operator '>>' is not supported",
}


class Parsed:
    """A whitelisted tree plus the mapping from the parser's byte offsets to characters."""

    def __init__(self, source: str, tree: ast.expr) -> None:
        self.source = source
        self.tree = tree
        self._encoded = source.replace("\n", " ").encode("utf-8")

    def col(self, node: ast.AST) -> int:
        """The character offset of ``node`` (ast counts UTF-8 bytes: Chinese text would skew it)."""
        return self.chars(getattr(node, "col_offset", 0))

    def end(self, node: ast.AST) -> int:
        return self.chars(getattr(node, "end_col_offset", None) or 0)

    def chars(self, byte_offset: int) -> int:
        return len(self._encoded[:byte_offset].decode("utf-8", errors="ignore"))

    def segment(self, node: ast.AST) -> str:
        return self.source.replace("\n", " ")[self.col(node) : self.end(node)]


def parse(source: str) -> Parsed:
    """Parse ``source``; raises :class:`ExprError` for syntax errors and refused constructs."""
    text = source.replace("\n", " ").replace("\r", " ")
    if not text.strip():
        raise ExprError(0, "empty expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        # exc.offset counts characters, 1-based; the first line is the only line.
        col = max((exc.offset or 1) - 1, 0)
        raise ExprError(min(col, len(text)), f"syntax error: {exc.msg}") from None
    parsed = Parsed(source, tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ALLOWED):
            if isinstance(node, ast.Constant) and not isinstance(node.value, str | int | float | bool | type(None)):
                raise ExprError(parsed.col(node), f"literal {node.value!r} is not supported")
            # Operators carry no position of their own: report them at their expression.
            ops = getattr(node, "ops", None) or [getattr(node, "op", None)]
            for op in ops:
                if op is not None and not isinstance(op, ALLOWED):
                    raise ExprError(parsed.col(node), REFUSED.get(type(op), "operator not supported"))
            continue
        message = REFUSED.get(type(node), f"'{type(node).__name__}' is not allowed in expressions")
        raise ExprError(parsed.col(node), message)
    return parsed
