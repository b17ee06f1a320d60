"""The command line of SPEC.md section 7: one module per command group, listed in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

# command -> (module under apps.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "serve the web app (and the job consumer with the SQLite queue)"),
    "check": ("check", "validate the definitions; prints FILE:LINE:COL: message per problem"),
    "migrate": ("migrate", "compute and apply the database change for the definitions"),
    "market": ("market", "template packs: list, install, upgrade, uninstall"),
    "user": ("users", "users: add"),
    "token": ("tokens", "API tokens: create"),
    "outbox": ("outbox", "the notification outbox: list, retry a row, deliver the due rows now"),
    "worker": ("worker", "a Huey consumer for the job queue (the time scan and deliveries)"),
    "jobs": ("jobs", "jobs: run-due (the time scan at an instant: SLA checks, escalations, scheduled rules)"),
    "bench": ("bench", "the benchmark suite (benchmarks/)"),
}

DEFAULT_DB = "sqlite:///data/kiln.db"


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=os.environ.get("KILN_DB", DEFAULT_DB), help="database URL (default: %(default)s)")
    parser.add_argument(
        "--definitions", default=os.environ.get("KILN_DEFINITIONS", "definitions"), help="definitions folder (default: %(default)s)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="Kiln: YAML app definitions into working business apps.")
    # --db and --definitions also before the command (run.py --db URL market list): kept apart,
    # since a command's own defaults would overwrite them, and applied in main.
    parser.add_argument("--db", dest="global_db", default=None, help="database URL, for any command")
    parser.add_argument("--definitions", dest="global_definitions", default=None, help="definitions folder, for any command")
    sub = parser.add_subparsers(dest="command")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"apps.cli.{module_name}")
        command = sub.add_parser(name, help=help_text, description=help_text)
        common_options(command)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str]) -> int:
    # SQLite keeps decimals as REAL; values are quantized to the field's scale on the way out.
    warnings.filterwarnings("ignore", message="Dialect sqlite\\+pysqlite does \\*not\\* support Decimal")
    parser = build_parser()
    args = parser.parse_args(list(argv) or ["serve", "--first-run"])
    if args.command is None and (args.global_db or args.global_definitions):
        args = parser.parse_args([*argv, "serve", "--first-run"])  # run.py --db URL: what run.py alone does, there
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    given = list(argv)
    after = given[given.index(args.command) + 1 :] if args.command in given else []
    for option, name in (("--db", "db"), ("--definitions", "definitions")):
        value = getattr(args, f"global_{name}")
        if value is not None and not any(a == option or a.startswith(f"{option}=") for a in after):  # the command's own wins
            setattr(args, name, value)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 1
