"""Type checking: Python syntax trees (already whitelisted) to typed nodes.

Names resolve against the entity's fields (``device.line`` follows links), string literals become
dates, times or durations where the other operand asks for one, and every mismatch is an
:class:`ExprError` at the offending character.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from decimal import Decimal

from engine.errors import Loc, did_you_mean
from engine.model import App, Entity, Field

from .functions import FunctionChecks
from .nodes import (
    Arith,
    BoolOp,
    Compare,
    Const,
    FieldRef,
    Hop,
    In,
    IsNull,
    ListLit,
    LocalMidnight,
    Neg,
    Node,
    Not,
    UserRef,
)
from .parser import ExprError, Parsed
from .types import LITERAL_HINTS, all_field_names, comparable, describe, field_type, lookup_field

ComputedTypes = Callable[[Entity, Field], str]

LITERAL_NAMES = {"true": True, "false": False, "null": None}
USER_ATTRS = {"id": ("user", None), "team": ("team", None), "username": ("text", None),
              "teams": ("list", "team"), "roles": ("list", "text")}  # fmt: skip
OPS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/",
}  # fmt: skip


class Checker(FunctionChecks):
    """Checks one expression (or, for count(), the inner condition) over ``entity``."""

    def __init__(
        self, parsed: Parsed, app: App, entity: Entity, loc: Loc, *,
        this_entity: Entity | None = None, computed: ComputedTypes | None = None,
    ) -> None:  # fmt: skip
        self.parsed = parsed
        self.app = app
        self.entity = entity
        self.loc = loc
        self.this_entity = this_entity
        self.computed = computed

    def check(self) -> Node:
        return self.visit(self.parsed.tree)

    def visit(self, node: ast.AST) -> Node:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:  # the parser's whitelist should have refused it already
            raise ExprError(self.col(node), f"'{type(node).__name__}' is not allowed here")
        return method(node)

    def col(self, node: ast.AST) -> int:
        return self.parsed.col(node)

    # -- literals and names --------------------------------------------------------------------

    def visit_Constant(self, node: ast.Constant) -> Node:
        value = node.value
        col = self.col(node)
        if value is None:
            return Const(col=col, type="null", value=None)
        if isinstance(value, bool):
            return Const(col=col, type="boolean", value=value)
        if isinstance(value, int):
            return Const(col=col, type="number", value=value)
        if isinstance(value, float):
            # The source text, not the float: 0.1 stays exactly 0.1.
            return Const(col=col, type="number", value=Decimal(self.parsed.segment(node) or repr(value)))
        return Const(col=col, type="text", value=value)

    def visit_List(self, node: ast.List | ast.Tuple) -> Node:
        items = [self.visit(item) for item in node.elts]
        elem = next((i.type for i in items if i.type != "null"), None)
        for item in items:
            if item.type == "list":
                raise ExprError(item.col, "lists cannot be nested")
        return ListLit(col=self.col(node), type="list", elem=elem, items=items, const=all(i.const for i in items))

    visit_Tuple = visit_List

    def visit_Name(self, node: ast.Name) -> Node:
        name, col = node.id, self.col(node)
        if name in LITERAL_NAMES:
            value = LITERAL_NAMES[name]
            return Const(col=col, type="null" if value is None else "boolean", value=value)
        if name == "user":
            return UserRef(col=col, type="user", attr=None)
        if name == "this":
            if self.this_entity is None:
                raise ExprError(col, "'this' is only valid inside count(...)")
            raise ExprError(col, f"write this.<field> (a field of {self.this_entity.name})")
        if name in self.function_names():
            raise ExprError(col, f"{name} is a function: write {name}(...)")
        return self.path(self.entity, [name], [col], "record")

    def visit_Attribute(self, node: ast.Attribute) -> Node:
        names: list[str] = []
        cols: list[int] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            names.insert(0, current.attr)
            cols.insert(0, self.parsed.end(current) - len(current.attr))
            current = current.value
        if not isinstance(current, ast.Name):
            raise ExprError(self.col(current), "attributes can only be read from field names (e.g. device.line)")
        root, root_col = current.id, self.col(current)
        if root == "user":
            if len(names) != 1 or names[0] not in USER_ATTRS:
                bad = names[0] if names[0] not in USER_ATTRS else names[1]
                raise ExprError(cols[names.index(bad)], f"user has no attribute '{bad}'{did_you_mean(bad, USER_ATTRS)}")
            type_, elem = USER_ATTRS[names[0]]
            return UserRef(col=root_col, type=type_, elem=elem, attr=names[0])
        if root == "this":
            if self.this_entity is None:
                raise ExprError(root_col, "'this' is only valid inside count(...)")
            return self.path(self.this_entity, names, cols, "this", root_col)
        return self.path(self.entity, [root, *names], [root_col, *cols], "record")

    def path(self, entity: Entity, names: list[str], cols: list[int], root: str, start: int | None = None) -> FieldRef:
        hops: list[Hop] = []
        for i, name in enumerate(names):
            f = lookup_field(entity, name)
            if f is None:
                where = f"entity {entity.name}"
                raise ExprError(cols[i], f"unknown field '{name}' in {where}{did_you_mean(name, all_field_names(entity))}")
            hops.append(Hop(entity, f))
            if i == len(names) - 1:
                break
            if f.type != "link":
                raise ExprError(cols[i + 1], f"{name} is a {f.type} field; it has no field '{names[i + 1]}'")
            if f.is_multi:
                raise ExprError(cols[i + 1], f"{name} links to many records; a path can only follow a single link")
            target = self.app.entity(f.entity or "")
            if target is None:
                raise ExprError(cols[i], f"{name} links to an unknown entity '{f.entity}'")
            entity = target
        last = hops[-1]
        value_type = field_type(last.field, self.computed_type(last.entity, last.field))
        col = cols[0] if start is None else start
        if last.field.is_multi:
            return FieldRef(col=col, type="list", elem=value_type, root=root, hops=tuple(hops))
        return FieldRef(col=col, type=value_type, root=root, hops=tuple(hops))

    def computed_type(self, entity: Entity, f: Field) -> str | None:
        if f.type != "computed":
            return None
        return self.computed(entity, f) if self.computed else "any"

    # -- operators -----------------------------------------------------------------------------

    def visit_BoolOp(self, node: ast.BoolOp) -> Node:
        op = "and" if isinstance(node.op, ast.And) else "or"
        values = [self.boolean(v, f"'{op}'") for v in node.values]
        return BoolOp(col=self.col(node), type="boolean", op=op, values=values, const=all(v.const for v in values))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Node:
        if isinstance(node.op, ast.Not):
            operand = self.boolean(node.operand, "'not'")
            return Not(col=self.col(node), type="boolean", operand=operand, const=operand.const)
        operand = self.visit(node.operand)
        if operand.type not in ("number", "duration", "any"):
            raise ExprError(self.col(node), f"a sign applies to numbers and durations, not {describe(operand.type)}")
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(operand, Const) and operand.value is not None:
            return Const(col=self.col(node), type=operand.type, value=-operand.value)
        return Neg(col=self.col(node), type=operand.type, operand=operand, const=operand.const)

    def visit_BinOp(self, node: ast.BinOp) -> Node:
        op = OPS[type(node.op)]
        left, right = self.visit(node.left), self.visit(node.right)
        col = self.col(node)
        if op in "+-":
            timed = ("datetime", "date", "duration")
            if left.type in timed and _is_text_literal(right):
                right = self.coerce(right, "duration")
            if right.type in timed and _is_text_literal(left) and op == "+":
                left = self.coerce(left, "duration")
        type_ = self.arith_type(op, left, right, col)
        const = left.const and right.const
        return Arith(col=col, type=type_, op=op, left=left, right=right, const=const)

    def arith_type(self, op: str, left: Node, right: Node, col: int) -> str:
        a, b = left.type, right.type
        if "null" in (a, b):
            raise ExprError(col, f"'{op}' with null is always null")
        if a == b == "number" or "any" in (a, b):
            return "number" if "any" not in (a, b) else (a if b == "any" else b)
        if op == "+" and a == b == "text":
            return "text"
        if op == "-" and a == b and a in ("datetime", "date"):
            return "duration"
        if op in "+-" and a == b == "duration":
            return "duration"
        if op in "+-" and a in ("datetime", "date") and b == "duration":
            if a == "date":
                self.whole_days(right)
            return a
        if op == "+" and a == "duration" and b in ("datetime", "date"):
            if b == "date":
                self.whole_days(left)
            return b
        raise ExprError(col, f"cannot apply '{op}' to {describe(a, left.elem)} and {describe(b, right.elem)}")

    def whole_days(self, node: Node) -> None:
        """A date moves by whole days only, and by a fixed amount, so both back ends agree."""
        if not isinstance(node, Const) or node.value is None:
            raise ExprError(node.col, "a date can only move by a fixed number of days (e.g. \"7d\")")
        if node.value.seconds or node.value.microseconds:
            raise ExprError(node.col, "a date can only move by whole days (e.g. \"7d\"); use a datetime for hours")

    # -- comparisons ---------------------------------------------------------------------------

    def visit_Compare(self, node: ast.Compare) -> Node:
        left = self.visit(node.left)
        parts: list[Node] = []
        for op_node, right_ast in zip(node.ops, node.comparators, strict=True):
            if isinstance(op_node, ast.In | ast.NotIn):
                parts.append(self.membership(left, right_ast, isinstance(op_node, ast.NotIn)))
                left = parts[-1]
                continue
            right = self.visit(right_ast)
            parts.append(self.compare(OPS[type(op_node)], left, right))
            left = right
        if len(parts) == 1:
            return parts[0]
        return BoolOp(col=self.col(node), type="boolean", op="and", values=parts, const=all(p.const for p in parts))

    def compare(self, op: str, left: Node, right: Node) -> Node:
        col = left.col
        if left.type == "null" or right.type == "null":
            other = right if left.type == "null" else left
            if op not in ("==", "!="):
                raise ExprError(col, f"null can only be compared with == or !=, not '{op}'")
            if other.type == "list":
                raise ExprError(other.col, "a multi-valued field is never null; use is_empty(...)")
            return IsNull(col=col, type="boolean", operand=other, negate=op == "!=", const=other.const)
        left, right = self.coerce_pair(left, right)
        a, b = left.type, right.type
        if not comparable(a, b, op):
            if op not in ("==", "!=") and a == b:
                raise ExprError(col, f"{describe(a, left.elem)} can only be compared with == and !=, not '{op}'")
            raise ExprError(col, f"cannot compare {describe(a, left.elem)} with {describe(b, right.elem)}")
        if {a, b} == {"date", "datetime"}:
            left, right = self.midnight(left), self.midnight(right)
        self.check_option(left, right)
        self.check_option(right, left)
        return Compare(col=col, type="boolean", op=op, left=left, right=right, const=left.const and right.const)

    def midnight(self, node: Node) -> Node:
        """A date compared with a datetime means the start of that day in the app's timezone."""
        if node.type != "date":
            return node
        if not node.const:
            raise ExprError(node.col, "a date field cannot be compared with a datetime; compare it with date(...) of the datetime")
        return LocalMidnight(col=node.col, type="datetime", operand=node, const=True)

    def coerce_pair(self, left: Node, right: Node) -> tuple[Node, Node]:
        special = ("date", "datetime", "time", "duration")
        if left.type in special and _is_text_literal(right):
            right = self.coerce(right, left.type)
        elif right.type in special and _is_text_literal(left):
            left = self.coerce(left, right.type)
        return left, right

    def coerce(self, node: Node, target: str) -> Node:
        from .types import coerce_text

        assert isinstance(node, Const)
        value = coerce_text(node.value, target)
        if value is None and target == "datetime":
            value, target = coerce_text(node.value, "date"), "date"
        if value is None:
            raise ExprError(node.col, f"'{node.value}' is not a {target}: {LITERAL_HINTS[target if target in LITERAL_HINTS else 'date']}")
        return Const(col=node.col, type=target, value=value)

    def check_option(self, ref: Node, value: Node) -> None:
        """A select (or state) compared with a string that is not one of its keys is a typo."""
        if not isinstance(ref, FieldRef) or not isinstance(value, Const) or not isinstance(value.value, str):
            return
        f = ref.last
        if f.type not in ("select", "multiselect") or not f.options:
            return
        keys = f.option_keys
        if value.value in keys:
            return
        if f.name == "state" and ref.hops[-1].entity.field("state") is None:
            entity = ref.hops[-1].entity.name
            raise ExprError(value.col, f"'{value.value}' is not a state of {entity}'s workflow{did_you_mean(value.value, keys)}")
        raise ExprError(value.col, f"'{value.value}' is not an option of {ref.dotted}{did_you_mean(value.value, keys)}")

    def membership(self, left: Node, right_ast: ast.AST, negate: bool) -> Node:
        col = left.col
        if left.type == "list":
            raise ExprError(col, "the left side of 'in' must be a single value, not a list")
        if isinstance(right_ast, ast.List | ast.Tuple):
            items = []
            for item_ast in right_ast.elts:
                item = self.visit(item_ast)
                if item.type == "null":
                    raise ExprError(item.col, "null cannot be in a list; write x == null")
                checked = self.compare("==", left, item)
                assert isinstance(checked, Compare)
                items.append(checked.right)
                left = checked.left
            right: Node = ListLit(col=self.col(right_ast), type="list", elem=left.type, items=items,
                                  const=all(i.const for i in items))  # fmt: skip
            return In(col=col, type="boolean", left=left, right=right, negate=negate, mode="list",
                      const=left.const and right.const)  # fmt: skip
        right = self.visit(right_ast)
        if right.type == "list":
            elem = right.elem or "any"
            if _is_text_literal(left) and elem in ("date", "datetime", "time", "duration"):
                left = self.coerce(left, elem)
            if not comparable(left.type, elem, "=="):
                raise ExprError(col, f"{describe(left.type)} cannot be in {describe('list', elem)}")
            self.check_option(right, left)
            return In(col=col, type="boolean", left=left, right=right, negate=negate, mode="list",
                      const=left.const and right.const)  # fmt: skip
        if right.type == "text" and left.type == "text":
            return In(col=col, type="boolean", left=left, right=right, negate=negate, mode="text",
                      const=left.const and right.const)  # fmt: skip
        raise ExprError(right.col, f"'in' needs a list [...], a multi-valued field or text on its right, not {describe(right.type)}")

    def boolean(self, node: ast.AST, where: str) -> Node:
        checked = self.visit(node)
        if checked.type not in ("boolean", "any"):
            raise ExprError(checked.col, f"{where} needs true/false operands, but this is {describe(checked.type, checked.elem)}")
        return checked


def _is_text_literal(node: Node) -> bool:
    return isinstance(node, Const) and isinstance(node.value, str)
