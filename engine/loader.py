"""Reading an app folder into one located document.

Every ``*.yaml`` / ``*.yml`` file below ``definitions/<app>/`` is a partial definition; mappings
merge by key and a leaf defined twice is an error naming both places. ``custom.yaml`` is the user's
overlay (section 6 of SPEC.md): merged last, its keys override. ``${VAR}`` and ``${VAR:-default}``
in strings are read from the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import DefinitionError, Loc, Problem, ProblemList
from engine.source import Map, Seq, parse_yaml, plain

OVERLAY = "custom.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class AppSource:
    """One app's merged document, before validation."""

    name: str
    folder: Path
    document: Map
    files: tuple[Path, ...]
    warnings: tuple[Problem, ...]

    @property
    def hash(self) -> str:
        """A stable hash of the merged definition (after ${VAR} substitution is not applied)."""
        return hashlib.sha256(json.dumps(plain(self.document), sort_keys=True, default=str).encode()).hexdigest()


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def app_folders(definitions: Path) -> list[Path]:
    """The app folders of a definitions directory: each subfolder holding YAML files."""
    if not definitions.is_dir():
        return []
    return sorted(p for p in definitions.iterdir() if p.is_dir() and not p.name.startswith((".", "_")) and _yaml_files(p))


def _yaml_files(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    # app.yaml first, the overlay last, the rest in path order, so merge order is stable.
    return sorted(files, key=lambda p: (p.name != "app.yaml", p.name == OVERLAY, str(p)))


def merge_partial(target: Map, source: Map, problems: ProblemList) -> None:
    """Merge a partial definition into ``target``; a leaf defined in both is a problem."""
    for key, value in source.items():
        if key not in target:
            target[key] = value
            target.key_locs[key] = source.key_locs.get(key, source.loc)
            target.value_locs[key] = source.value_locs.get(key, source.loc)
        elif isinstance(target[key], Map) and isinstance(value, Map):
            merge_partial(target[key], value, problems)
        else:
            first = target.loc_of_key(key)
            problems.add(source.loc_of_key(key), f"'{key}' is also defined at {first}; define it in one file only")


def merge_overlay(target: Map, overlay: Map) -> None:
    """Merge the user's overlay: mappings merge by key, anything else replaces."""
    for key, value in overlay.items():
        if key in target and isinstance(target[key], Map) and isinstance(value, Map):
            merge_overlay(target[key], value)
        else:
            target[key] = value
            target.key_locs[key] = overlay.key_locs.get(key, overlay.loc)
            target.value_locs[key] = overlay.value_locs.get(key, overlay.loc)


def substitute_env(node: Any, env: Mapping[str, str], problems: ProblemList, loc: Loc) -> Any:
    """Replace ``${VAR}`` in every string; an unset variable without default is a warning."""
    if isinstance(node, Map):
        for key in list(node):
            node[key] = substitute_env(node[key], env, problems, node.loc_of(key))
        return node
    if isinstance(node, Seq):
        for i, item in enumerate(node):
            node[i] = substitute_env(item, env, problems, node.loc_of(i))
        return node
    if isinstance(node, str) and "${" in node:

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is None:
                problems.add(loc, f"environment variable {name} is not set; using an empty value", "warning")
                return ""
            return default

        return _VAR.sub(replace, node)
    return node


def load_app_source(folder: Path, env: Mapping[str, str] | None = None, base: Path | None = None) -> AppSource:
    """Read and merge one app folder. Raises DefinitionError with every problem found."""
    env = os.environ if env is None else env
    base = base or folder.parent
    problems = ProblemList()
    files = _yaml_files(folder)
    document = Map(loc=Loc(_display(folder / "app.yaml", base), 1, 1))
    overlay: Map | None = None
    for path in files:
        display = _display(path, base)
        try:
            part = parse_yaml(path.read_text(encoding="utf-8"), display)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        if part is None:
            continue
        if not isinstance(part, Map):
            problems.add(getattr(part, "loc", Loc(display, 1, 1)), "a definition file must hold a mapping of keys")
            continue
        if path.name == OVERLAY and path.parent == folder:
            overlay = part
        else:
            merge_partial(document, part, problems)
    if overlay is not None:
        merge_overlay(document, overlay)
    if not files:
        problems.add(Loc(_display(folder, base), 1, 1), "no YAML files in this app folder")
    substitute_env(document, env, problems, document.loc)
    problems.raise_if_any()
    return AppSource(folder.name, folder, document, tuple(files), tuple(problems.problems))
