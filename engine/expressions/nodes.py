"""The typed tree the checker produces and both back ends (Python closures, SQL) compile.

Every node knows its value type (see :mod:`engine.expressions.types`), its place in the source
(``col``, a character offset) and whether it is *constant*: independent of the record, so the
SQL back end can evaluate it once in Python and bind the result (``now()``, ``user.team``,
``has_role(...)``, ``today() - "7d"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.model import Entity, Field


@dataclass(eq=False, kw_only=True)
class Node:
    col: int
    type: str
    const: bool = False
    elem: str | None = None  # element type of a list

    def children(self) -> list[Node]:
        return []


@dataclass(eq=False, kw_only=True)
class Const(Node):
    value: Any
    const: bool = True


@dataclass(eq=False, kw_only=True)
class ListLit(Node):
    items: list[Node]

    def children(self) -> list[Node]:
        return list(self.items)


@dataclass(frozen=True, eq=False)
class Hop:
    """One step of a field path: a field of an entity."""

    entity: Entity
    field: Field


@dataclass(eq=False, kw_only=True)
class FieldRef(Node):
    """``summary``, ``device.line``, ``this.device``: a value of the record (or of ``this``)."""

    root: str  # "record" or "this"
    hops: tuple[Hop, ...]

    @property
    def last(self) -> Field:
        return self.hops[-1].field

    @property
    def multi(self) -> bool:
        return self.hops[-1].field.is_multi

    @property
    def dotted(self) -> str:
        names = ".".join(h.field.name for h in self.hops)
        return f"this.{names}" if self.root == "this" else names


@dataclass(eq=False, kw_only=True)
class UserRef(Node):
    """The acting user (``user``) or one of its attributes (``user.team``)."""

    attr: str | None
    const: bool = True


@dataclass(eq=False, kw_only=True)
class Compare(Node):
    op: str  # == != < <= > >=
    left: Node
    right: Node

    def children(self) -> list[Node]:
        return [self.left, self.right]


@dataclass(eq=False, kw_only=True)
class IsNull(Node):
    operand: Node
    negate: bool

    def children(self) -> list[Node]:
        return [self.operand]


@dataclass(eq=False, kw_only=True)
class In(Node):
    """``x in [..]``, ``x in tags`` (a list-typed right side) or ``"s" in text`` (substring)."""

    left: Node
    right: Node
    negate: bool
    mode: str  # "list" or "text"

    def children(self) -> list[Node]:
        return [self.left, self.right]


@dataclass(eq=False, kw_only=True)
class BoolOp(Node):
    op: str  # and / or
    values: list[Node]

    def children(self) -> list[Node]:
        return list(self.values)


@dataclass(eq=False, kw_only=True)
class Not(Node):
    operand: Node

    def children(self) -> list[Node]:
        return [self.operand]


@dataclass(eq=False, kw_only=True)
class Arith(Node):
    op: str  # + - * /
    left: Node
    right: Node

    def children(self) -> list[Node]:
        return [self.left, self.right]


@dataclass(eq=False, kw_only=True)
class Neg(Node):
    operand: Node

    def children(self) -> list[Node]:
        return [self.operand]


@dataclass(eq=False, kw_only=True)
class LocalMidnight(Node):
    """A constant date used where a datetime is compared: the start of that day in the app's zone."""

    operand: Node

    def children(self) -> list[Node]:
        return [self.operand]


@dataclass(eq=False, kw_only=True)
class Call(Node):
    name: str
    args: list[Node]
    options: dict[str, Any] = field(default_factory=dict)  # checked literal arguments

    def children(self) -> list[Node]:
        return list(self.args)


@dataclass(eq=False, kw_only=True)
class Count(Node):
    """``count(entity, condition, within="7d")``; ``inner`` is a Compiled over the target entity."""

    target: Entity
    inner: Any  # engine.expressions.compiled.Compiled (kept untyped to avoid an import cycle)
    within: Any  # datetime.timedelta | None


def walk(node: Node):
    """Every node of a tree, parents first (not descending into count()'s inner condition)."""
    yield node
    for child in node.children():
        yield from walk(child)
