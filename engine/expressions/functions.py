"""The functions of the language: their signatures and how each call is type checked.

Each ``fn_<name>`` takes the call's syntax node and returns a typed node. Evaluation lives in
:mod:`engine.expressions.evaluate`, SQL in :mod:`engine.expressions.sql`; this table is the one
list of names both follow (and docs/expressions.md documents).
"""

from __future__ import annotations

import ast
import difflib
from typing import TYPE_CHECKING

from engine.errors import did_you_mean

from .durations import parse_duration
from .nodes import Call, Count, FieldRef, ListLit, Node
from .parser import ExprError
from .types import TIME_OF_DAY, comparable, describe

if TYPE_CHECKING:
    from .checker import Checker

# name -> (fewest, most positional arguments, keyword names)
SIGNATURES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "now": (0, 0, ()),
    "today": (0, 0, ()),
    "is_empty": (1, 1, ()),
    "contains": (2, 2, ()),
    "contains_any": (2, 2, ()),
    "time_between": (3, 3, ()),
    "hours_since": (1, 1, ()),
    "changed": (1, 1, ()),
    "previous": (1, 1, ()),
    "has_role": (1, 1, ()),
    "in_team": (1, 1, ()),
    "count": (2, 3, ("within",)),
    "len": (1, 1, ()),
    "date": (1, 1, ()),
}
# Functions that read the change being made: no SQL form.
CHANGE_FUNCTIONS = frozenset({"changed", "previous"})
# Functions whose value does not depend on the record: bound as literals in SQL.
CONSTANT_FUNCTIONS = frozenset({"now", "today", "has_role", "in_team"})


def _plural(n: int) -> str:
    return f"{n} argument" + ("" if n == 1 else "s")


class FunctionChecks:
    """Mixed into the Checker: one method per function."""

    @staticmethod
    def function_names() -> tuple[str, ...]:
        return tuple(SIGNATURES)

    def visit_Call(self: Checker, node: ast.Call) -> Node:
        col = self.col(node)
        if not isinstance(node.func, ast.Name):
            raise ExprError(col, "only plain function calls are allowed, e.g. contains(summary, \"x\")")
        name = node.func.id
        if name not in SIGNATURES:
            close = difflib.get_close_matches(name, SIGNATURES, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ExprError(col, f"unknown function '{name}'{hint} (functions: {', '.join(sorted(SIGNATURES))})")
        fewest, most, keywords = SIGNATURES[name]
        given = len(node.args)
        if not fewest <= given <= most:
            wanted = _plural(fewest) if fewest == most else f"{fewest} to {most} arguments"
            raise ExprError(col, f"{name}() takes {wanted}, got {given}")
        for kw in node.keywords:
            if kw.arg not in keywords:
                allowed = f"; it takes: {', '.join(keywords)}" if keywords else ""
                raise ExprError(self.col(kw.value), f"{name}() has no argument '{kw.arg}'{allowed}")
        return getattr(self, f"fn_{name}")(node, col)

    # -- helpers -------------------------------------------------------------------------------

    def _literal(self: Checker, node: ast.AST, what: str) -> str:
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            raise ExprError(self.col(node), f"{what} must be a quoted text")
        return node.value

    def _arg(self: Checker, node: ast.AST, types: tuple[str, ...], fn: str) -> Node:
        arg = self.visit(node)
        if arg.type not in (*types, "any"):
            wanted = " or ".join(types)
            raise ExprError(arg.col, f"{fn}() needs {wanted} here, not {describe(arg.type, arg.elem)}")
        return arg

    def _call(self: Checker, col: int, fn: str, type_: str, args: list[Node], **options: object) -> Call:
        const = fn in CONSTANT_FUNCTIONS or (fn not in CHANGE_FUNCTIONS and bool(args) and all(a.const for a in args))
        return Call(col=col, type=type_, name=fn, args=args, options=dict(options), const=const)

    # -- the functions -------------------------------------------------------------------------

    def fn_now(self: Checker, node: ast.Call, col: int) -> Node:
        return self._call(col, "now", "datetime", [])

    def fn_today(self: Checker, node: ast.Call, col: int) -> Node:
        return self._call(col, "today", "date", [])

    def fn_is_empty(self: Checker, node: ast.Call, col: int) -> Node:
        return self._call(col, "is_empty", "boolean", [self.visit(node.args[0])])

    def fn_len(self: Checker, node: ast.Call, col: int) -> Node:
        return self._call(col, "len", "number", [self._arg(node.args[0], ("text", "list"), "len")])

    def fn_date(self: Checker, node: ast.Call, col: int) -> Node:
        return self._call(col, "date", "date", [self._arg(node.args[0], ("datetime",), "date")])

    def fn_hours_since(self: Checker, node: ast.Call, col: int) -> Node:
        return self._call(col, "hours_since", "number", [self._arg(node.args[0], ("datetime",), "hours_since")])

    def fn_contains(self: Checker, node: ast.Call, col: int) -> Node:
        haystack = self._arg(node.args[0], ("text", "list"), "contains")
        needle = self._element(haystack, node.args[1], "contains")
        return self._call(col, "contains", "boolean", [haystack, needle])

    def fn_contains_any(self: Checker, node: ast.Call, col: int) -> Node:
        haystack = self._arg(node.args[0], ("text", "list"), "contains_any")
        options = node.args[1]
        if not isinstance(options, ast.List | ast.Tuple):
            raise ExprError(self.col(options), "contains_any() needs a list [...] as its second argument")
        items = [self._element(haystack, item, "contains_any") for item in options.elts]
        needles = ListLit(col=self.col(options), type="list", elem=haystack.elem or "text", items=items,
                          const=all(i.const for i in items))  # fmt: skip
        return self._call(col, "contains_any", "boolean", [haystack, needles])

    def _element(self: Checker, haystack: Node, node: ast.AST, fn: str) -> Node:
        needle = self.visit(node)
        wanted = haystack.elem if haystack.type == "list" else "text"
        if needle.type == "null":
            raise ExprError(needle.col, f"{fn}() cannot look for null")
        if not comparable(needle.type, wanted or "any", "=="):
            raise ExprError(needle.col, f"{fn}() looks for {describe(wanted or 'any')} here, not {describe(needle.type)}")
        if haystack.type == "list":
            self.check_option(haystack, needle)
        return needle

    def fn_time_between(self: Checker, node: ast.Call, col: int) -> Node:
        moment = self._arg(node.args[0], ("datetime", "time"), "time_between")
        start = self._literal(node.args[1], "the start of time_between()")
        end = self._literal(node.args[2], "the end of time_between()")
        for text, arg in ((start, node.args[1]), (end, node.args[2])):
            if not TIME_OF_DAY.match(text):
                raise ExprError(self.col(arg), f"'{text}' is not a time of day; write it as \"20:00\" or \"07:59:59\"")
        # Compare at the precision written, bounds included: "07:59" covers 07:59:00-07:59:59.
        width = 8 if len(start) == 8 or len(end) == 8 else 5
        start = start + ":00" if len(start) < width else start
        end = end + ":59" if len(end) < width else end
        return self._call(col, "time_between", "boolean", [moment], start=start, end=end, width=width)

    def _field_name(self: Checker, node: ast.AST, fn: str) -> FieldRef:
        if not isinstance(node, ast.Name):
            raise ExprError(self.col(node), f"{fn}() takes a field name of {self.entity.name}")
        ref = self.visit(node)
        if not isinstance(ref, FieldRef):
            raise ExprError(self.col(node), f"{fn}() takes a field name of {self.entity.name}")
        return ref

    def fn_changed(self: Checker, node: ast.Call, col: int) -> Node:
        return self._call(col, "changed", "boolean", [self._field_name(node.args[0], "changed")])

    def fn_previous(self: Checker, node: ast.Call, col: int) -> Node:
        ref = self._field_name(node.args[0], "previous")
        call = self._call(col, "previous", ref.type, [ref])
        call.elem = ref.elem
        return call

    def fn_has_role(self: Checker, node: ast.Call, col: int) -> Node:
        role = self._literal(node.args[0], "the role")
        if role not in self.app.role_names:
            raise ExprError(self.col(node.args[0]), f"unknown role '{role}'{did_you_mean(role, self.app.role_names)}")
        return self._call(col, "has_role", "boolean", [], name=role)

    def fn_in_team(self: Checker, node: ast.Call, col: int) -> Node:
        team = self._literal(node.args[0], "the team")
        if team not in self.app.team_names:
            raise ExprError(self.col(node.args[0]), f"unknown team '{team}'{did_you_mean(team, self.app.team_names)}")
        return self._call(col, "in_team", "boolean", [], name=team)

    def fn_count(self: Checker, node: ast.Call, col: int) -> Node:
        from .checker import Checker
        from .compiled import Compiled

        target_ast = node.args[0]
        if isinstance(target_ast, ast.Name):
            target_name = target_ast.id
        elif isinstance(target_ast, ast.Constant) and isinstance(target_ast.value, str):
            target_name = target_ast.value
        else:
            raise ExprError(self.col(target_ast), "count() takes an entity name first, e.g. count(ticket, ...)")
        target = self.app.entity(target_name)
        if target is None:
            names = [e.name for e in self.app.entities]
            raise ExprError(self.col(target_ast), f"unknown entity '{target_name}'{did_you_mean(target_name, names)}")
        condition_ast = node.args[1]
        inner_checker = Checker(self.parsed, self.app, target, self.loc, this_entity=self.entity, computed=self.computed)
        root = inner_checker.boolean(condition_ast, "count()'s condition")
        start = self.col(condition_ast)
        inner = Compiled(root, source=self.parsed.segment(condition_ast), loc=self.loc.shifted(start),
                         app=self.app, entity=target, this_entity=self.entity)  # fmt: skip
        if inner.uses_changes:
            raise ExprError(start, "changed() and previous() cannot be used inside count()")
        within_ast = node.args[2] if len(node.args) > 2 else next((k.value for k in node.keywords if k.arg == "within"), None)
        within = None
        if within_ast is not None:
            text = self._literal(within_ast, "within")
            within = parse_duration(text)
            if within is None:
                raise ExprError(self.col(within_ast), f"'{text}' is not a duration; write e.g. within=\"7d\"")
        return Count(col=col, type="number", target=target, inner=inner, within=within)

