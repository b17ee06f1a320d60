"""`run.py token create NAME [--label TEXT]`: a new API token for a user, printed once.

Only the token is printed on stdout (``TOKEN=$(python run.py token create alice)``); the database
keeps its SHA-256 hash only.
"""

from __future__ import annotations

import argparse
import sys

from apps.cli.common import fail, open_database, subcommand_options
from engine import accounts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="create")
    create = sub.add_parser("create", help="create an API token for a user", description=__doc__.split("\n\n")[0])
    subcommand_options(create)
    create.add_argument("name", help="the username the token acts as")
    create.add_argument("--label", default="", help="what the token is for, e.g. erp-sync")


def run(args: argparse.Namespace) -> int:
    engine = open_database(args.db)
    if engine is None:
        return 1
    try:
        token = accounts.create_token(engine, args.name, args.label)
    except accounts.AccountError as exc:
        return fail(str(exc))
    finally:
        engine.dispose()
    print(token)
    print(f"API token for {args.name} (shown once); send it as: Authorization: Bearer TOKEN", file=sys.stderr)
    return 0
