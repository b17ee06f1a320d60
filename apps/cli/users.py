"""`run.py user add NAME --app APP --roles R1,R2 [--team T] [--lead] [--manager NAME] [--password P] [--admin]
[--email E] [--phone P]`.

Adds a user, or updates an existing one (roles, team, manager and admin are added; the password,
e-mail and phone change only when given), so ``user add admin --admin --password NEW`` is how an
admin password is reset. A new user without ``--password`` gets a generated one, printed once.

The helpers at the bottom are shared by the other account and pack commands (tokens, market).
"""

from __future__ import annotations

import argparse

from apps.cli.common import fail, load_definitions, open_database, subcommand_options
from engine import accounts
from engine.errors import did_you_mean


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="add")
    add = sub.add_parser("add", help="add a user or update one", description=__doc__.split("\n\n")[1])
    subcommand_options(add)
    add.add_argument("name", help="the username (letters, digits, . _ @ -)")
    add.add_argument("--app", help="the app the roles and team belong to (required unless --admin)")
    add.add_argument("--roles", default="", help="comma-separated roles of the app, e.g. dispatcher,technician")
    add.add_argument("--team", help="a team of the app to join")
    add.add_argument("--lead", action="store_true", help="make the user the lead of --team")
    add.add_argument("--manager", help="the username of the user's direct manager")
    add.add_argument("--password", help="the password (default: a generated one, printed once)")
    add.add_argument("--display-name", help="the name shown in pages (default: the username)")
    add.add_argument("--email", help="the e-mail address notifications go to (channel email)")
    add.add_argument("--phone", help="the mobile number notifications go to (channels sms, wecom, dingtalk)")
    add.add_argument("--admin", action="store_true", help="an instance administrator (users, packs, the studio)")


def run(args: argparse.Namespace) -> int:
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if not args.app and not args.admin:
        return fail("give --app APP (the app the user works in), or --admin for an instance administrator")
    definition = None
    if args.app:
        compiled = load_definitions(args.definitions)
        if compiled is None:
            return 1
        if args.app not in compiled.apps:
            hint = did_you_mean(args.app, compiled.apps) or f"; there are no apps in {args.definitions}"
            return fail(f"unknown app '{args.app}'{hint}")
        definition = compiled.app(args.app).app
    engine = open_database(args.db)
    if engine is None:
        return 1
    try:
        existed = accounts.get_user(engine, args.name) is not None
        _, password = accounts.add_user(
            engine, args.name, args.app, roles, team=args.team, manager=args.manager, password=args.password,
            admin=args.admin, display_name=args.display_name, lead=args.lead, definition=definition, email=args.email,
            phone=args.phone,
        )  # fmt: skip
    except accounts.AccountError as exc:
        return fail(str(exc))
    finally:
        engine.dispose()
    what = [f"{args.app}: {', '.join(roles) or 'no roles'}"] if args.app else []
    if args.team:
        what.append(f"team {args.team}" + (" (lead)" if args.lead else ""))
    if args.admin:
        what.append("instance admin")
    print(f"{'updated' if existed else 'added'} user {args.name}" + (f" ({'; '.join(what)})" if what else ""))
    if password and not args.password:
        print(f"password: {password}")
        print("(shown once: it is stored only as a hash)")
    elif existed and not args.password:
        print("password unchanged (give --password to reset it)")
    return 0
