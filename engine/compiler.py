"""The whole pipeline from a definitions folder to compiled apps.

folder -> :mod:`engine.loader` (merged, located document) -> :mod:`engine.schema` (Cerberus)
-> :mod:`engine.builder` (typed model) -> :mod:`engine.references` (cross-references) ->
:mod:`engine.expressions` (every expression parsed, type checked, compiled) -> :mod:`engine.tables`.
Every stage reports all of its problems at once; a later stage runs only on what the earlier ones
accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine import expressions, references, schema
from engine.builder import build_app
from engine.errors import DefinitionError, Loc, Problem, ProblemList
from engine.loader import app_folders, load_app_source
from engine.model import App
from engine.tables import Schema, build_schema


@dataclass
class CompiledApp:
    app: App
    expressions: expressions.CompiledExpressions
    definition_hash: str


@dataclass
class Compiled:
    """Every app of an instance, compiled, with the tables they need."""

    apps: dict[str, CompiledApp]
    schema: Schema
    warnings: list[Problem] = field(default_factory=list)

    def app(self, name: str) -> CompiledApp:
        return self.apps[name]


def compile_app_folder(folder: Path, env: Mapping[str, str] | None = None, base: Path | None = None) -> tuple[CompiledApp | None, list[Problem]]:
    """Compile one app folder; returns the app (None if any error) and every problem found."""
    problems = ProblemList()
    try:
        source = load_app_source(folder, env, base)
    except DefinitionError as exc:
        return None, exc.problems
    problems.extend(source.warnings)
    schema_problems = schema.validate(source.document)
    problems.extend(schema_problems)
    if any(p.severity == "error" for p in schema_problems):
        return None, problems.problems
    app = build_app(source.document, source.hash)
    problems.extend(references.check(app, source.document))
    compiled_exprs, expr_problems = expressions.compile_app(app)
    problems.extend(expr_problems)
    if problems.errors:
        return None, problems.problems
    return CompiledApp(app, compiled_exprs, source.hash), problems.problems


def compile_definitions(definitions: Path, env: Mapping[str, str] | None = None) -> Compiled:
    """Compile every app under ``definitions``; raises DefinitionError listing every problem."""
    env = os.environ if env is None else env
    problems: list[Problem] = []
    apps: dict[str, CompiledApp] = {}
    for folder in app_folders(definitions):
        compiled, found = compile_app_folder(folder, env, definitions)
        problems.extend(found)
        if compiled is None:
            continue
        if compiled.app.name in apps:
            problems.append(Problem(compiled.app.loc, f"app '{compiled.app.name}' is defined twice (folders {apps[compiled.app.name].app.loc.file} and {folder.name})"))
            continue
        apps[compiled.app.name] = compiled
    if any(p.severity == "error" for p in problems):
        raise DefinitionError(problems)
    computed, counted = {}, {}
    for name, compiled in apps.items():
        for (entity, fname), vtype in compiled.expressions.computed_types.items():
            computed[(name, entity, fname)] = vtype
        for entity, fields in compiled.expressions.count_fields().items():
            counted[(name, entity)] = fields
    tables = build_schema([c.app for c in apps.values()], computed, counted)
    return Compiled(apps, tables, [p for p in problems if p.severity != "error"])


def no_definitions_problem(definitions: Path) -> Problem:
    return Problem(Loc(str(definitions), 1, 1), "no app definitions found (expected <app>/app.yaml folders)")
