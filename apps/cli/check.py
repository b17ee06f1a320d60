"""`run.py check`: validate every app definition and print each problem as FILE:LINE:COL: message.

Exit status 1 when there is any error (warnings alone do not fail), 0 with a one-line summary.
File names are shown under the definitions folder as it was given (``definitions/repair/app.yaml``),
so they can be pasted into an editor from the directory the command ran in.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from engine.compiler import compile_definitions, no_definitions_problem
from engine.errors import DefinitionError, Problem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true", help="print problems only, no summary")


def _shown(problem: Problem, definitions: str) -> Problem:
    """The problem with its file named as under the definitions folder given on the command line."""
    file = problem.loc.file
    if file.startswith("<") or os.path.isabs(file) or os.path.normpath(file).startswith(os.path.normpath(definitions)):
        return problem
    return replace(problem, loc=replace(problem.loc, file=os.path.normpath(os.path.join(definitions, file))))


def run(args: argparse.Namespace) -> int:
    definitions = Path(args.definitions)
    try:
        compiled = compile_definitions(definitions)
    except DefinitionError as exc:
        problems = exc.problems
        compiled = None
    else:
        problems = list(compiled.warnings)
        if not compiled.apps:
            problems.append(no_definitions_problem(definitions))
    for problem in sorted(_shown(p, args.definitions) for p in problems):
        print(problem)
    errors = [p for p in problems if p.severity == "error"]
    if errors or compiled is None:
        if not args.quiet:
            warnings = len(problems) - len(errors)
            print(f"{_count(len(errors), 'error')}" + (f", {_count(warnings, 'warning')}" if warnings else ""))
        return 1
    if not args.quiet:
        entities = sum(len(c.app.entities) for c in compiled.apps.values())
        warnings = f", {_count(len(problems), 'warning')}" if problems else ""
        print(f"ok: {_count(len(compiled.apps), 'app')}, {_count(entities, 'entity', 'entities')}{warnings}")
    return 0


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"
