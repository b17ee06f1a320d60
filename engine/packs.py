"""Template packs of the local marketplace (SPEC.md section 6).

A pack is a folder ``marketplace/<pack>/`` holding ``pack.yaml`` (name, version, label,
description, screenshots, requires), the app's definition files, and optionally ``demo.yaml``
(see :mod:`engine.demo`). Installing copies the definition files into ``definitions/<app>/``
untouched and records the pack's name, version and files in ``definitions/<app>/.pack.yaml`` (the
loader skips dot-files), so an upgrade can later replace exactly the pack's files and keep the
user's ``custom.yaml`` overlay.

``--as NAME`` installs a second copy under another app name without editing the pack's files:
the new name goes into a one-line ``custom.yaml`` (``app: NAME``), which the loader merges on top.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import DefinitionError, did_you_mean
from engine.loader import OVERLAY
from engine.model import Label
from engine.schema import name_problem
from engine.source import plain, read_yaml

MARKETPLACE = Path(__file__).resolve().parent.parent / "marketplace"
PACK_FILE = "pack.yaml"
DEMO_FILE = "demo.yaml"
INSTALLED_FILE = ".pack.yaml"
# Files of a pack folder that describe the pack rather than define the app: never copied (the
# loader would read demo.yaml as a partial definition).
META = frozenset({PACK_FILE, DEMO_FILE, "screenshots", "README.md"})


class PackError(Exception):
    """A pack that cannot be read or installed; the message says why and what to do."""


@dataclass(frozen=True)
class Pack:
    name: str
    version: str
    label: Label
    description: Label
    folder: Path
    app: str  # the app name its app.yaml declares
    screenshots: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    @property
    def demo_file(self) -> Path | None:
        path = self.folder / DEMO_FILE
        return path if path.is_file() else None

    def definition_files(self) -> list[Path]:
        """The files install copies, relative to the pack folder."""
        found = []
        for path in sorted(self.folder.rglob("*")):
            rel = path.relative_to(self.folder)
            if path.is_file() and rel.parts[0] not in META and not any(p.startswith(".") for p in rel.parts):
                found.append(rel)
        return found


@dataclass(frozen=True)
class Installed:
    """What ``install`` did: the app's name and folder, and the pack it came from."""

    app: str
    folder: Path
    pack: Pack
    files: list[Path] = field(default_factory=list)


def read_pack(folder: Path) -> Pack:
    """The pack in ``folder``; raises PackError naming the file when pack.yaml is wrong."""
    try:
        meta = plain(read_yaml(folder / PACK_FILE, f"{folder.name}/{PACK_FILE}"))
        app_doc = plain(read_yaml(folder / "app.yaml", f"{folder.name}/app.yaml"))
    except (OSError, DefinitionError) as exc:
        raise PackError(f"pack {folder.name}: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or "version" not in meta:
        raise PackError(f"{folder / PACK_FILE}: needs at least 'name' and 'version'")
    if not isinstance(app_doc, dict) or not isinstance(app_doc.get("app"), str):
        raise PackError(f"{folder / 'app.yaml'}: needs 'app: NAME'")
    return Pack(
        name=meta["name"],
        version=str(meta["version"]),
        label=Label.of(meta.get("label"), meta["name"]),
        description=Label.of(meta.get("description"), ""),
        folder=folder,
        app=app_doc["app"],
        screenshots=tuple(str(s) for s in meta.get("screenshots") or ()),
        requires=tuple(str(r) for r in meta.get("requires") or ()),
    )


def list_packs(marketplace: Path = MARKETPLACE) -> list[Pack]:
    """Every pack of the marketplace folder, by name."""
    if not marketplace.is_dir():
        return []
    folders = [p for p in marketplace.iterdir() if p.is_dir() and (p / PACK_FILE).is_file()]
    return sorted((read_pack(p) for p in folders), key=lambda pack: pack.name)


def get_pack(name: str, marketplace: Path = MARKETPLACE) -> Pack:
    packs = {p.name: p for p in list_packs(marketplace)}
    if name not in packs:
        raise PackError(f"no pack named '{name}' in {marketplace}{did_you_mean(name, packs)}; see: python run.py market list")
    return packs[name]


def installed(definitions: Path) -> dict[str, dict[str, Any]]:
    """App name (folder) -> the ``.pack.yaml`` record of every app installed from a pack."""
    found = {}
    if definitions.is_dir():
        for record in sorted(definitions.glob(f"*/{INSTALLED_FILE}")):
            data = yaml.safe_load(record.read_text(encoding="utf-8")) or {}
            found[record.parent.name] = data
    return found


def install(pack: Pack | str, definitions: Path, as_app: str | None = None, marketplace: Path = MARKETPLACE,
            now: dt.datetime | None = None) -> Installed:  # fmt: skip
    """Copy the pack's definition files into ``definitions/<app>/``; refuse if that folder exists.

    The copy is made in a hidden temporary folder and renamed into place, so a failure never
    leaves a half-installed app for the loader to trip over.
    """
    if isinstance(pack, str):
        pack = get_pack(pack, marketplace)
    app = as_app or pack.app
    problem = name_problem(app, "app")
    if problem:
        raise PackError(problem)
    target = definitions / app
    if target.exists():
        raise PackError(
            f"{target} already exists: app '{app}' is installed. To install another copy, give it a new name: "
            f"python run.py market install {pack.name} --as NEW_NAME"
        )
    have = {record.get("pack") for record in installed(definitions).values()}
    missing = [r for r in pack.requires if r not in have]
    if missing:
        raise PackError(f"pack {pack.name} needs the pack(s) {', '.join(missing)}; install them first")
    definitions.mkdir(parents=True, exist_ok=True)
    staging = definitions / f".installing-{app}-{uuid.uuid4().hex[:8]}"
    files = pack.definition_files()
    try:
        for rel in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(pack.folder / rel, staging / rel)
        if app != pack.app:
            if (staging / OVERLAY).exists():
                raise PackError(f"pack {pack.name} ships its own {OVERLAY}; it cannot be installed under another name")
            (staging / OVERLAY).write_text(
                f"# Installed with --as {app}: the pack's files are unchanged; this overlay renames the app.\napp: {app}\n",
                encoding="utf-8",
            )
        record = {
            "pack": pack.name,
            "version": pack.version,
            "app": app,
            "installed_at": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
            "files": [rel.as_posix() for rel in files],
        }
        (staging / INSTALLED_FILE).write_text(
            "# Written by `run.py market install`: which pack these files came from. Do not edit.\n"
            + yaml.safe_dump(record, allow_unicode=True, sort_keys=False),
            encoding="utf-8",
        )
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return Installed(app, target, pack, files)
