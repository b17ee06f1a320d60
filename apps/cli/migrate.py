"""`run.py migrate [--plan] [--allow-destructive] [--json] [--rollups]` (SPEC.md section 6).

``--plan`` prints what the migration would do and changes nothing (exit 0, also when the plan is
refused: the refusal is part of what it shows). Without it the plan is applied in one transaction;
a refused plan prints its reasons and exits 1 having changed nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine import migrations, rollups
from engine.compiler import Compiled, compile_definitions, no_definitions_problem
from engine.db import connect, write
from engine.errors import DefinitionError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", action="store_true", help="print the plan and change nothing")
    parser.add_argument(
        "--allow-destructive", action="store_true", help="drop the columns and tables the definition no longer has (kept otherwise)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--rollups", action="store_true", help="also recount the dashboards' rollups from the rows (after writing rows outside Kiln)"
    )


def load(definitions: Path) -> Compiled | None:
    """The compiled definitions, or None after printing every problem as FILE:LINE:COL: message."""
    try:
        compiled = compile_definitions(definitions)
    except DefinitionError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    for warning in compiled.warnings:
        print(warning, file=sys.stderr)
    if not compiled.apps:
        print(no_definitions_problem(definitions), file=sys.stderr)
        return None
    return compiled


def _show(plan: migrations.Plan, as_json: bool, file=sys.stdout) -> None:  # noqa: ANN001 - a text stream
    print(json.dumps(plan.as_json(), ensure_ascii=False, indent=2, default=str) if as_json else plan.render(), file=file)


def run(args: argparse.Namespace) -> int:
    compiled = load(Path(args.definitions))
    if compiled is None:
        return 1
    engine = connect(args.db)
    try:
        if args.plan:
            _show(migrations.plan(engine, compiled, allow_destructive=args.allow_destructive), args.json)
            return 0
        try:
            done = migrations.apply(engine, compiled, allow_destructive=args.allow_destructive)
        except migrations.MigrationRefused as refused:
            _show(refused.plan, args.json, file=sys.stderr)
            return 1
        if args.rollups:
            with write(engine) as conn:
                for app in compiled.apps.values():
                    counted = rollups.rebuild(conn, compiled.schema, app.app)
                    print(f"rollups recounted: {app.app.name}: {', '.join(counted) or 'none'}", file=sys.stderr)
        if args.json:
            _show(done, True)
        elif done.is_empty:
            print(done.render())
        else:
            print(done.render().replace("migration plan:", "applied:", 1))
        return 0
    finally:
        engine.dispose()
