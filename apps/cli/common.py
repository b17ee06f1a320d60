"""What the commands share: options after a sub-command, errors, definitions and the database."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sqlalchemy import Engine, inspect

from engine.compiler import Compiled, compile_definitions
from engine.db import connect
from engine.errors import DefinitionError


def subcommand_options(parser: argparse.ArgumentParser) -> None:
    """--db and --definitions on a sub-command too (``run.py user add x --db URL``); SUPPRESS
    keeps the value given before the sub-command when it is not repeated after it."""
    parser.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    parser.add_argument("--definitions", default=argparse.SUPPRESS, help="definitions folder")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def print_problems(exc: DefinitionError, definitions: str) -> None:
    """Definition problems as FILE:LINE:COL: message, files named as under the folder given."""
    for problem in exc.problems:
        file = problem.loc.file
        if not (file.startswith("<") or os.path.isabs(file) or os.path.normpath(file).startswith(os.path.normpath(definitions))):
            file = os.path.normpath(os.path.join(definitions, file))
        prefix = "" if problem.severity == "error" else f"{problem.severity}: "
        print(f"{file}:{problem.loc.line}:{problem.loc.col}: {prefix}{problem.message}", file=sys.stderr)


def load_definitions(definitions: str) -> Compiled | None:
    """The compiled definitions, or None after printing their problems."""
    try:
        return compile_definitions(Path(definitions))
    except DefinitionError as exc:
        print_problems(exc, definitions)
        return None


def open_database(url: str) -> Engine | None:
    """An engine on a database whose system tables exist, or None after saying how to create them."""
    engine = connect(url)
    if not inspect(engine).has_table("kiln_users"):
        engine.dispose()
        print("error: the database has no Kiln tables yet; create them with: python run.py migrate", file=sys.stderr)
        return None
    return engine
