"""`run.py market list` and `run.py market install PACK [--as APP] [--demo]` (SPEC.md section 6).

``install`` copies the pack's definition files into ``definitions/<app>/``; with ``--demo`` it
also creates the tables (the same migration ``run.py migrate`` applies) and loads the pack's demo
users and records. ``upgrade`` and ``uninstall`` are not built yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apps.cli.common import fail, print_problems, subcommand_options
from engine import migrations, packs
from engine.demo import DemoError, DemoResult, load_demo
from engine.errors import DefinitionError
from engine.instance import Instance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,install}")
    listing = sub.add_parser("list", help="the packs of the marketplace folder")
    subcommand_options(listing)
    install = sub.add_parser("install", help="install a pack as an app")
    subcommand_options(install)
    install.add_argument("pack", help="the pack's name (see market list)")
    install.add_argument("--as", dest="as_app", metavar="APP", help="install under another app name (a second copy)")
    install.add_argument("--demo", action="store_true", help="also create the tables and load the pack's demo data")
    for name in ("upgrade", "uninstall"):
        later = sub.add_parser(name, help="(not yet available)")
        subcommand_options(later)
        later.add_argument("app")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return list_packs(Path(args.definitions))
    if args.action == "install":
        return install(args.definitions, args.db, args.pack, args.as_app, args.demo)
    return fail(f"market {args.action} is not available yet")


def list_packs(definitions: Path) -> int:
    try:
        found = packs.list_packs()
    except packs.PackError as exc:
        return fail(str(exc))
    by_pack: dict[str, list[str]] = {}
    for app, record in packs.installed(definitions).items():
        by_pack.setdefault(str(record.get("pack")), []).append(f"{app} ({record.get('version')})")
    if not found:
        print(f"no packs in {packs.MARKETPLACE}")
    for pack in found:
        where = f"  installed as: {', '.join(by_pack[pack.name])}" if pack.name in by_pack else ""
        print(f"{pack.name} {pack.version}  {pack.label.get('zh')} / {pack.label.get('en')}{where}")
        description = pack.description.get("zh").strip()
        if description:
            print(f"    {description}")
    return 0


def install(definitions: str, db: str, pack_name: str, as_app: str | None, demo: bool) -> int:
    try:
        done = packs.install(pack_name, Path(definitions), as_app)
    except packs.PackError as exc:
        return fail(str(exc))
    print(f"installed pack {done.pack.name} {done.pack.version} as app {done.app} in {done.folder}")
    if not demo:
        print("next: python run.py migrate   (creates its tables)")
        return 0
    if done.pack.demo_file is None:
        print(f"pack {done.pack.name} has no demo data", file=sys.stderr)
        return 0
    result = migrate_and_load_demo(definitions, db, done)
    if result is None:
        return 1
    print_demo(result)
    return 0


def migrate_and_load_demo(definitions: str, db: str, done: packs.Installed) -> DemoResult | None:
    """Migrate every app (the new one's tables) and load the pack's demo data into the new app;
    None after printing why not."""
    try:
        instance = Instance.open(Path(definitions), db)
    except DefinitionError as exc:
        print_problems(exc, definitions)
        fail("the pack is installed but the definitions do not compile; fix them, then: python run.py migrate")
        return None
    try:
        migrations.apply(instance.engine, instance.compiled)
        print(f"migrated {db}")
        assert done.pack.demo_file is not None
        return load_demo(instance, done.app, done.pack.demo_file)
    except (migrations.MigrationRefused, DemoError) as exc:
        fail(str(exc))
        return None
    finally:
        instance.close()


def print_demo(result: DemoResult) -> None:
    counts = ", ".join(f"{n} {entity}" for entity, n in result.counts.items())
    print(f"demo data: {counts}")
    if result.users:
        print("demo users (all with the password below):")
        for username, roles in result.users:
            print(f"    {username:<16} {', '.join(roles)}")
        print(f"demo password: {result.password}")
