"""The workflow in real headless Chromium against the real server, at a desktop and a phone width:
a dispatcher opens a pending ticket, presses Dispatch, picks the technician in the dialog and
confirms; a supervisor finds the ticket in "Approvals waiting for me" and approves it.
Screenshots go to test-artifacts/ (gitignored). Skips like tests/test_browser.py without Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from engine import accounts
from tests.browser_support import ARTIFACTS, PASSWORD, playwright_api, serve_app
from tests.conftest import add_user
from tests.test_workflow_support import APP, USERS

# The service app of the workflow tests, with colours and English labels for what is pressed.
COLOURED = (
    APP.replace("pending: {label: 待受理}", "pending: {label: 待受理, color: gray}")
    .replace("dispatched: {label: 已派单}", "dispatched: {label: 已派单, color: blue}")
    .replace("in_progress: {label: 处理中}", "in_progress: {label: 处理中, color: orange}")
    .replace("closed: {label: 已关闭, final: true}", "closed: {label: 已关闭, final: true, color: green}")
    .replace("dispatch: {from: pending,", "dispatch: {label: {zh: 派单, en: Dispatch}, from: pending,")
    .replace("accept: {from: dispatched,", "accept: {label: {zh: 接单, en: Accept}, from: dispatched,")
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server on a fresh SQLite instance of the service app, with its users."""

    def setup(instance) -> None:  # noqa: ANN001 - engine.instance.Instance
        for name, (roles, teams) in USERS.items():
            add_user(instance, name, "svc", roles, teams)
            accounts.set_password(instance.engine, name, PASSWORD)

    yield from serve_app(tmp_path_factory.mktemp("browser-workflow"), "svc", COLOURED, setup)


def api_as(server: str, username: str, method: str, path: str, body: dict, version: int | None = None) -> dict:
    """One API call with ``username``'s session (the server owns the database)."""
    with httpx.Client(base_url=server, timeout=10) as http:
        page = http.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        http.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
        token = http.get("/").text.split('"X-CSRF-Token": "')[1].split('"')[0]
        headers = {"X-CSRF-Token": token, **({"If-Match": str(version)} if version is not None else {})}
        r = http.request(method, f"/api/v1/svc/{path}", json=body, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()


def new_ticket(server: str, summary: str) -> tuple[int, str]:
    """A pending ticket that costs enough to need the director's approval, made by rita."""
    made = api_as(server, "rita", "POST", "ticket", {"summary": summary, "est_cost": "6000"})
    return made["id"], made["number"]


def log_in(page: object, server: str, username: str, target: str) -> None:
    page.goto(f"{server}{target}")  # type: ignore[attr-defined]
    page.fill("input[name=username]", username)  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("form:has(input[name=password]) button[type=submit]")  # type: ignore[attr-defined]


def open_dialog(page: object, server: str, username: str, record: str, transition: str) -> object:
    """Log in as ``username`` on ``record``'s page and open ``transition``'s dialog, settled (its
    inputs wired up); the dialog's locator."""
    log_in(page, server, username, record)
    page.wait_for_url(re.compile(rf".*{record}(\?.*)?$"))  # type: ignore[attr-defined]
    page.locator(f"a[data-transition={transition}]").click()  # type: ignore[attr-defined]
    dialog = page.locator("#transition-dialog")  # type: ignore[attr-defined]
    playwright_api.expect(dialog).to_be_visible()
    playwright_api.expect(dialog).not_to_have_class(re.compile("htmx-added"))
    return dialog


@pytest.mark.parametrize("width,height", [(1280, 900), (375, 812)], ids=["desktop", "phone"])
def test_dispatch_then_approve(server: str, browser: object, width: int, height: int):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = f"{width}px"
    record_id, number = new_ticket(server, f"Pipe leaking in room {width}")
    record = f"/a/svc/ticket/{record_id}"
    expect = playwright_api.expect
    for who in ("dan", "sue"):
        context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")  # type: ignore[attr-defined]
        context.add_cookies([{"name": "lang", "value": "en", "url": server}])  # the language switch's cookie
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        try:
            if who == "dan":
                log_in(page, server, "dan", record)
                page.wait_for_url(re.compile(rf".*{record}(\?.*)?$"))
                expect(page.locator("#record-state")).to_have_text("待受理")
                page.locator("a[data-transition=dispatch]").click()
                dialog = page.locator("#transition-dialog")
                expect(dialog).to_be_visible()
                expect(dialog).not_to_have_class(re.compile("htmx-added"))
                dialog.locator("#transition-confirm").click()  # no technician yet: refused in the dialog
                expect(dialog.locator("#err-assignee")).to_be_visible()
                expect(dialog).not_to_have_class(re.compile("htmx-added"))  # settled: its inputs are wired up
                page.fill("#in-assignee", "to")
                page.locator("#results-assignee button", has_text="tom").click()
                expect(page.locator("#chips-assignee")).to_contain_text("tom")
                page.fill("#in-comment", "Please go this morning")
                page.screenshot(path=str(ARTIFACTS / f"workflow-dialog-{shot}.png"), full_page=False)
                dialog.locator("#transition-confirm").click()
                expect(page.locator("#record-state")).to_have_text("已派单")
                expect(page.locator("#transition-dialog")).to_have_count(0)
                expect(page.locator("#timeline")).to_contain_text("Please go this morning")
                expect(page.locator("#step-director_approval")).to_contain_text("sue")
                page.screenshot(path=str(ARTIFACTS / f"workflow-dispatched-{shot}.png"), full_page=True)
                page.goto(f"{server}/a/svc/ticket/workflow")
                expect(page.locator("#workflow-diagram svg")).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / f"workflow-diagram-{shot}.png"), full_page=True)
            else:
                log_in(page, server, "sue", "/")
                inbox = page.locator("#approvals-inbox")
                expect(inbox).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / f"workflow-inbox-{shot}.png"), full_page=True)
                inbox.locator("a", has_text=number).click()
                page.wait_for_url(re.compile(rf".*{record}$"))
                step = page.locator("#step-director_approval")
                step.locator("textarea[name=comment]").fill("Within budget")
                step.locator("button[value=approve]").click()
                expect(page.locator("#step-director_approval")).to_have_attribute("data-status", "approved")
                expect(page.locator("#step-director_approval")).to_contain_text("Within budget")
                page.screenshot(path=str(ARTIFACTS / f"workflow-approved-{shot}.png"), full_page=True)
            assert not errors, errors
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"workflow-failure-{who}-{shot}.png"), full_page=True)
            raise
        finally:
            context.close()


def test_refusals_other_than_422_show_in_the_dialog_and_the_approvals_card(server: str, browser: object):
    """A 409 (the record changed meanwhile; the step decided meanwhile) is swapped in like a 422,
    so the user sees why nothing changed instead of a dialog that does not answer."""
    record_id, _ = new_ticket(server, "Changed while the dialog is open")
    record = f"/a/svc/ticket/{record_id}"
    expect = playwright_api.expect
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    context.add_cookies([{"name": "lang", "value": "en", "url": server}])
    page = context.new_page()
    try:
        dialog = open_dialog(page, server, "dan", record, "dispatch")
        page.fill("#in-assignee", "to")
        page.locator("#results-assignee button", has_text="tom").click()
        api_as(server, "rita", "PATCH", f"ticket/{record_id}", {"summary": "changed meanwhile"}, version=1)
        dialog.locator("#transition-confirm").click()
        expect(page.locator("#transition-errors")).to_contain_text("Someone else changed this record")
        expect(page.locator("#reload-record")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "workflow-dialog-stale.png"))
        context.close()

        current = api_as(server, "dan", "GET", f"ticket/{record_id}", {})
        api_as(server, "dan", "POST", f"ticket/{record_id}/transitions/dispatch", {"assignee": "tom"}, version=current["version"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
        context.add_cookies([{"name": "lang", "value": "en", "url": server}])
        page = context.new_page()
        log_in(page, server, "sue", record)
        page.wait_for_url(re.compile(rf".*{record}(\?.*)?$"))
        step = page.locator("#step-director_approval")
        expect(step.locator("button[value=approve]")).to_be_visible()
        api_as(server, "sam", "POST", f"ticket/{record_id}/approvals/director_approval", {"decision": "approve"})
        step.locator("button[value=approve]").click()
        expect(page.locator("#approval-error")).to_contain_text("there is no pending approval director_approval")
        expect(page.locator("#step-director_approval")).to_have_attribute("data-status", "approved")
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "workflow-failure-refusals.png"), full_page=True)
        raise
    finally:
        context.close()


@pytest.fixture(scope="module")
def pack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server on the service-ticket pack with its demo data; uploads under its own folder."""
    from engine import migrations, packs
    from engine.demo import load_demo
    from engine.instance import Instance
    from tests.test_serve import serve, stop, wait_healthy

    root = tmp_path_factory.mktemp("browser-pack")
    done = packs.install("service_ticket", root / "definitions")
    db_url = f"sqlite:///{root}/kiln.db"
    instance = Instance.open(root / "definitions", db_url, env={}, files_dir=root / "data" / "files")
    try:
        migrations.apply(instance.engine, instance.compiled)
        result = load_demo(instance, "service_ticket", done.pack.demo_file)
        for username, _ in result.users:
            accounts.set_password(instance.engine, username, PASSWORD)
    finally:
        instance.close()
    process, port = serve(root / "definitions", db_url, cwd=root)
    try:
        wait_healthy(process, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_the_report_uploaded_in_the_finish_dialog_finishes_the_job(pack_server: str, browser: object):
    """S5 in the pack, as the technician does it on a phone: 完工待验收 without the report is refused
    beside the field; the file uploaded in the dialog clears that message and the job finishes."""
    with httpx.Client(base_url=pack_server, timeout=10) as http:
        page = http.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        http.post("/login", data={"username": "chen_gang", "password": PASSWORD, "csrf_token": token})
        items = http.get("/api/v1/service_ticket/ticket", params={"state": "in_progress", "assignee": "chen_gang"}).json()["items"]
    record = f"/a/service_ticket/ticket/{items[0]['id']}"
    expect = playwright_api.expect
    context = browser.new_context(viewport={"width": 375, "height": 812}, locale="zh-CN")  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        dialog = open_dialog(page, pack_server, "chen_gang", record, "finish")
        dialog.locator("#transition-confirm").click()
        expect(dialog.locator("#err-report")).to_contain_text("完工待验收时必填")
        expect(dialog).not_to_have_class(re.compile("htmx-added"))
        page.set_input_files("#in-report", files=[{"name": "维修报告.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 done"}])
        expect(dialog.locator(".upload .chips")).to_contain_text("维修报告.pdf")
        expect(dialog.locator("#err-report")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "pack-finish-dialog-375px.png"))
        dialog.locator("#transition-confirm").click()
        expect(page.locator("#record-state")).to_have_text("待验收")
        expect(page.locator("#timeline")).to_contain_text("维修报告.pdf")
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "pack-finish-failure.png"), full_page=True)
        raise
    finally:
        context.close()
