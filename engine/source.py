"""YAML 1.2 reading that remembers where every node came from.

Definitions are read with YAML 1.2 core-schema scalars: only ``true``/``false`` are booleans
(``on: created`` is a key named ``on``), dates and times stay strings (``09:00`` is not the
sexagesimal integer 540). Mappings and sequences come back as :class:`Node` containers that
carry the file, line and column of themselves, of each key and of each value, so that every
later check can point at the exact place in the user's file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.errors import DefinitionError, Loc


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema implicit types."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)


# libyaml's parser (C), where the wheel has it, with the same YAML 1.2 types: the pure-Python
# scanner is most of a compile's time. Its error messages are terser, so a document that fails
# is parsed again by the Python loader to report the problem.
if hasattr(yaml, "CSafeLoader"):

    class _FastLoader(yaml.CSafeLoader):  # type: ignore[misc,name-defined]
        yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
        yaml_constructors = _Loader.yaml_constructors

else:  # pragma: no cover - PyYAML built without libyaml
    _FastLoader = _Loader  # type: ignore[misc,assignment]


class Map(dict):
    """A mapping read from YAML: ``loc`` of itself, ``key_locs`` and ``value_locs`` per key."""

    __slots__ = ("loc", "key_locs", "value_locs")

    def __init__(self, *args: Any, loc: Loc | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loc = loc or Loc.unknown()
        self.key_locs: dict[str, Loc] = {}
        self.value_locs: dict[str, Loc] = {}

    def loc_of(self, key: str) -> Loc:
        return self.value_locs.get(key) or self.key_locs.get(key) or self.loc

    def loc_of_key(self, key: str) -> Loc:
        return self.key_locs.get(key) or self.loc


class Seq(list):
    """A sequence read from YAML: ``loc`` of itself and ``item_locs`` per index."""

    __slots__ = ("loc", "item_locs")

    def __init__(self, *args: Any, loc: Loc | None = None) -> None:
        super().__init__(*args)
        self.loc = loc or Loc.unknown()
        self.item_locs: list[Loc] = []

    def loc_of(self, index: int) -> Loc:
        return self.item_locs[index] if 0 <= index < len(self.item_locs) else self.loc


def _mark_loc(file: str, node: yaml.Node) -> Loc:
    # A quoted scalar's text starts one column after its quote: point at the text, so that
    # positions inside an expression (a column offset) land on the right character.
    quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
    return Loc(file, node.start_mark.line + 1, node.start_mark.column + 1 + quoted)


def _build(loader: _Loader, node: yaml.Node, file: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result = Map(loc=_mark_loc(file, node))
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | bool) or key is None:
                raise DefinitionError(_mark_loc(file, key_node), "a mapping key must be a plain name")
            key = str(key)
            if key in result:
                raise DefinitionError(
                    _mark_loc(file, key_node),
                    f"duplicate key '{key}' (first at line {result.key_locs[key].line})",
                )
            result[key] = _build(loader, value_node, file)
            result.key_locs[key] = _mark_loc(file, key_node)
            result.value_locs[key] = _mark_loc(file, value_node)
        return result
    if isinstance(node, yaml.SequenceNode):
        result_seq = Seq(loc=_mark_loc(file, node))
        for item in node.value:
            result_seq.append(_build(loader, item, file))
            result_seq.item_locs.append(_mark_loc(file, item))
        return result_seq
    return loader.construct_object(node, deep=True)


# PyYAML's messages name parser states; these say what the user most likely got wrong.
_SYNTAX_HINTS = (
    ("found '<block mapping start>'", "bad indentation: this key does not line up with the keys above it; "),
    ("but found '?'", "bad indentation: a key where a list item ('- ') was expected, or the other way round; "),
    ("mapping values are not allowed here", "unexpected ':' (quote a value that contains ': ', or fix the indentation); "),
    ("'\\t'", "a tab character: indent with spaces; "),
    ("flow sequence", "an unclosed '[': a ']' or a ',' is missing; "),
    ("flow mapping", "an unclosed '{': a '}' or a ',' is missing; "),
    ("quoted scalar", "an unclosed quote; "),
)


def _syntax_hint(problem: str) -> str:
    return next((hint for needle, hint in _SYNTAX_HINTS if needle in problem), "")


def parse_yaml(text: str, file: str) -> Any:
    """Parse one YAML document, keeping locations; syntax errors become DefinitionError."""
    if _FastLoader is not _Loader:
        fast = _FastLoader(text)
        try:
            node = fast.get_single_node()
            return Map(loc=Loc(file, 1, 1)) if node is None else _build(fast, node, file)
        except yaml.YAMLError:
            pass  # parsed again below for the precise message
        finally:
            fast.dispose()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Map(loc=Loc(file, 1, 1))
        return _build(loader, node, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        hint = _syntax_hint(problem)
        if "end of stream" in problem or "<stream end>" in problem:
            mark = exc.context_mark or mark  # an unclosed bracket or quote: point at where it opened
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise DefinitionError(Loc(file, line, col), f"YAML syntax error: {hint}{problem}") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(Loc(file, 1, 1), f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, display: str | None = None) -> Any:
    return parse_yaml(path.read_text(encoding="utf-8"), display or str(path))


@dataclass(frozen=True)
class PathLoc:
    """Resolves a document path (keys and indexes) to the best known location."""

    root: Any

    def __call__(self, path: Iterable[str | int]) -> Loc:
        node = self.root
        best = getattr(node, "loc", Loc.unknown())
        for part in path:
            if isinstance(node, Map) and str(part) in node:
                best = node.loc_of(str(part))
                node = node[str(part)]
            elif isinstance(node, Seq) and isinstance(part, int) and 0 <= part < len(node):
                best = node.loc_of(part)
                node = node[part]
            else:
                break
        return best


def plain(value: Any) -> Any:
    """A located tree as plain dicts and lists (for hashing and export)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
