"""The pages in real headless Chromium, against the real server, at a desktop and a phone width:
log in, create a ticket through a form whose section appears when a dropdown changes, filter
the list, open the record. Screenshots go to test-artifacts/ (gitignored) for a person to look at.

Needs Debian's chromium (``make browser`` installs it as root) and the ``playwright`` package
(its driver is bundled; no browser download). Without them the tests skip and say why.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import accounts
from tests.conftest import add_user
from tests.test_pages_support import APP
from tests.test_serve import ROOT, serve, stop, wait_healthy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "correct horse battery"
RECORD_URL = re.compile(r".*/a/desk/ticket/\d+$")

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[dev]')")
if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed: run `make browser` as root (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server on a fresh SQLite instance of the fixture app, with a user and a site."""
    from engine import migrations
    from engine.instance import Instance

    root = tmp_path_factory.mktemp("browser")
    (root / "definitions" / "desk").mkdir(parents=True)
    (root / "definitions" / "desk" / "app.yaml").write_text(APP.lstrip(), encoding="utf-8")
    db_url = f"sqlite:///{root}/kiln.db"
    instance = Instance.open(root / "definitions", db_url, env={}, files_dir=root / "files")
    try:
        migrations.apply(instance.engine, instance.compiled)
        add_user(instance, "alice", "desk", ["agent"])
        accounts.set_password(instance.engine, "alice", PASSWORD)
        instance.records("desk").create("site", {"name": "Main hall"}, accounts.actor_for(instance.engine, "alice", "desk"))
    finally:
        instance.close()
    process, port = serve(root / "definitions", db_url)
    try:
        wait_healthy(process, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.mark.parametrize("width,height", [(1280, 900), (375, 812)], ids=["desktop", "phone"])
def test_create_filter_and_open_a_ticket(server: str, browser: object, width: int, height: int):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = f"{width}px"
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{server}/a/desk/ticket/new?lang=en")
        assert "/login" in page.url
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("form:has(input[name=password]) button[type=submit]")
        page.wait_for_url("**/a/desk/ticket/new*")
        expect = playwright_api.expect

        # The Network section is not there until the category says network.
        expect(page.locator("legend", has_text="Network")).to_have_count(0)
        summary = f"Wi-Fi down in room 3 ({shot})"
        page.fill("#in-summary", summary)
        page.select_option("#in-category", "network")
        expect(page.locator("legend", has_text="Network")).to_be_visible()
        expect(page.locator("#in-summary")).to_have_value(summary)  # kept across the swap
        page.check("#in-can_ping")
        page.fill("#in-packet_loss", "12.5")
        page.fill("#in-site", "Main")  # search as you type
        page.locator("#results-site button", has_text="Main hall").click()
        expect(page.locator("#chips-site")).to_contain_text("Main hall")
        page.screenshot(path=str(ARTIFACTS / f"form-{shot}.png"), full_page=True)
        page.locator("#record-form button[type=submit]").click()
        page.wait_for_url(RECORD_URL)
        expect(page.locator("h1")).to_contain_text(summary)
        expect(page.locator("#value-packet_loss")).to_have_text("12.50")
        page.screenshot(path=str(ARTIFACTS / f"detail-{shot}.png"), full_page=True)

        # Filter the list by category: the URL holds the state; the count loads apart.
        page.goto(f"{server}/a/desk/ticket")
        page.locator("#filters summary").click()
        page.locator("#filters input[name=category][value=network]").check()
        page.locator("#filters button", has_text="Apply filters").click()
        page.wait_for_url("**/a/desk/ticket?*category=network*")
        expect(page.locator("#list-count")).to_contain_text("record")
        row = page.locator("tbody tr", has_text=summary)
        expect(row).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / f"list-{shot}.png"), full_page=True)
        row.locator("a").first.click()
        page.wait_for_url(RECORD_URL)
        expect(page.locator("#timeline")).to_contain_text("alice")
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"failure-{shot}.png"), full_page=True)
        raise
    finally:
        context.close()
