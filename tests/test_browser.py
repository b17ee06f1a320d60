"""The pages in real headless Chromium, against the real server, at a desktop and a phone width:
log in, create a ticket through a form whose section appears when a dropdown changes, filter
the list, open the record. Screenshots go to test-artifacts/ (gitignored) for a person to look at.

Needs Debian's chromium (``make browser`` installs it as root) and the ``playwright`` package
(its driver is bundled; no browser download). Without them the tests skip and say why.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from engine import accounts
from tests.browser_support import ARTIFACTS, PASSWORD, playwright_api, serve_app
from tests.conftest import add_user
from tests.test_pages_support import APP

RECORD_URL = re.compile(r".*/a/desk/ticket/\d+$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server on a fresh SQLite instance of the fixture app, with a user and a site."""

    def setup(instance) -> None:  # noqa: ANN001 - engine.instance.Instance
        add_user(instance, "alice", "desk", ["agent"])
        accounts.set_password(instance.engine, "alice", PASSWORD)
        instance.records("desk").create("site", {"name": "Main hall"}, accounts.actor_for(instance.engine, "alice", "desk"))

    yield from serve_app(tmp_path_factory.mktemp("browser"), "desk", APP, setup)


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
