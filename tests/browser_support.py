"""What the browser tests share: Debian's Chromium driven by Playwright, the real server on a
fresh SQLite instance, and where screenshots go. Importing this module skips the importing test
module, saying why, when the playwright package or chromium is missing."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.test_serve import ROOT, serve, stop, wait_healthy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags that keep Chromium off this machine's closed network.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "correct horse battery"

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[dev]')")
if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed: run `make browser` as root (apt-get install chromium)", allow_module_level=True)


def serve_app(root: Path, app: str, definition: str, setup: Callable[[object], None]) -> Iterator[str]:
    """The real server on a fresh SQLite instance of ``definition``, after ``setup(instance)``
    (users, reference records); yields its base URL and stops it afterwards."""
    from engine import migrations
    from engine.instance import Instance

    (root / "definitions" / app).mkdir(parents=True)
    (root / "definitions" / app / "app.yaml").write_text(definition.lstrip(), encoding="utf-8")
    db_url = f"sqlite:///{root}/kiln.db"
    instance = Instance.open(root / "definitions", db_url, env={}, files_dir=root / "files")
    try:
        migrations.apply(instance.engine, instance.compiled)
        setup(instance)
    finally:
        instance.close()
    process, port = serve(root / "definitions", db_url)
    try:
        wait_healthy(process, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
