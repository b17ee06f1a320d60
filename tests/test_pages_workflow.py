"""The workflow on the pages: transition buttons and their dialog, refusals shown in the dialog,
approvals decided on the record page, the workspace's approvals inbox, and the diagram page."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.test_pages_support import CSRF, session_cookie
from tests.test_workflow_support import APP, Flow, make_flow

HX = {"hx-request": "true"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def flow(db_url, write_definitions, open_instance) -> Flow:
    return make_flow(open_instance(write_definitions({"svc/app.yaml": APP}), db_url))


def page_client(flow: Flow, username: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=flow.app), base_url="http://test")
    client.cookies.set("lang", "en")
    client.cookies.set("kiln_session", session_cookie(flow.instance, {"uid": flow.users[username], "csrf": CSRF}))
    return client


def create(flow: Flow, who: str = "rita", **values: Any) -> dict[str, Any]:
    from engine import accounts

    actor = accounts.actor_for(flow.instance.engine, who, "svc")
    return flow.records().create("ticket", {"summary": "水管漏水", **values}, actor)


def dispatch(flow: Flow, record: dict[str, Any], assignee: str = "tom") -> dict[str, Any]:
    from engine import accounts, workflow

    actor = accounts.actor_for(flow.instance.engine, "dan", "svc")
    return workflow.transition(flow.records(), "ticket", record["id"], "dispatch", {"assignee": assignee}, record["version"], actor)


def transition_names(html: str) -> list[str]:
    return re.findall(r'data-transition="(\w+)"', html.split("</h1>")[1].split('id="workflow-dialog"')[0])


def snapshot(flow: Flow, record_id: int) -> tuple[dict[str, Any], int]:
    return flow.row(record_id), len(flow.history(record_id))


@pytest.mark.anyio
async def test_buttons_only_for_the_transitions_the_user_may_take(flow: Flow):
    t = create(flow)
    url = f"/a/svc/ticket/{t['id']}"
    async with page_client(flow, "dan") as c:
        r = await c.get(url)
    assert r.status_code == 200
    assert transition_names(r.text) == ["dispatch"]
    assert f'hx-get="{url}/transitions/dispatch" hx-target="#workflow-dialog" hx-swap="innerHTML"' in r.text
    assert re.search(r'id="record-state" data-state="pending" style="background:#[0-9a-f]+;', r.text)  # coloured badge
    async with page_client(flow, "dan") as c:
        twin = (await c.get(f"{url}.json")).json()
    assert [a["name"] for a in twin["transitions"]] == ["dispatch"] and twin["approvals"] == []
    async with page_client(flow, "rita") as c:
        assert transition_names((await c.get(url)).text) == []  # a reporter may not dispatch
        refused = await c.get(f"{url}/transitions/dispatch")
        assert refused.status_code == 403
        assert (await c.get(f"{url}/transitions/nope")).status_code == 404


@pytest.mark.anyio
async def test_the_dialog_asks_for_the_required_fields_and_a_comment(flow: Flow):
    t = create(flow)
    async with page_client(flow, "dan") as c:
        r = await c.get(f"/a/svc/ticket/{t['id']}/transitions/dispatch", headers=HX)
        assert r.status_code == 200 and "<html" not in r.text and r.headers["vary"].startswith("HX-Request")
        assert '<dialog open class="sheet" id="transition-dialog"' in r.text
        assert 'id="in-assignee"' in r.text and 'hx-get="/a/svc/ticket/lookup/assignee"' in r.text
        assert 'name="comment"' in r.text and f'name="version" value="{t["version"]}"' in r.text
        assert 'name="csrf_token"' in r.text
        assert 'id="in-report"' not in r.text  # only what the transition requires
        full = await c.get(f"/a/svc/ticket/{t['id']}/transitions/dispatch")  # without script: a page
        assert "<html" in full.text and 'id="transition-form"' in full.text


@pytest.mark.anyio
async def test_a_transition_through_the_page_changes_state_and_history(flow: Flow):
    t = create(flow)
    url = f"/a/svc/ticket/{t['id']}"
    async with page_client(flow, "dan") as c:
        body = {"csrf_token": CSRF, "version": str(t["version"]), "assignee": "tom", "comment": "today please"}
        r = await c.post(f"{url}/transitions/dispatch", data=body, headers=HX)
        assert r.status_code == 200 and r.headers["hx-redirect"] == url
        assert flow.row(t["id"])["state"] == "dispatched"
        last = flow.history(t["id"])[-1]
        assert last["action"] == "transition:dispatch" and last["comment"] == "today please"
        page = await c.get(url)
        assert 'data-state="dispatched"' in page.text and "已派单" in page.text
        assert "派单" not in transition_names(page.text)  # the label of the timeline entry, not a button
        assert "today please" in page.text


@pytest.mark.anyio
async def test_a_plain_form_post_redirects(flow: Flow):
    t = create(flow)
    async with page_client(flow, "dan") as c:
        body = {"csrf_token": CSRF, "version": str(t["version"]), "assignee": "tom"}
        r = await c.post(f"/a/svc/ticket/{t['id']}/transitions/dispatch", data=body)
    assert r.status_code == 303 and r.headers["location"] == f"/a/svc/ticket/{t['id']}"
    assert flow.row(t["id"])["state"] == "dispatched"


@pytest.mark.anyio
async def test_every_refusal_reshows_the_dialog_and_changes_nothing(flow: Flow):
    t = create(flow)
    before = snapshot(flow, t["id"])
    url = f"/a/svc/ticket/{t['id']}/transitions/dispatch"
    async with page_client(flow, "dan") as c:
        # a missing required field: 422, the message beside the field
        r = await c.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "assignee": "", "comment": "x"}, headers=HX)
        assert r.status_code == 422 and 'id="transition-dialog"' in r.text
        assert 'id="err-assignee"' in r.text and "required for “dispatch”" in r.text and "“dispatch” needs: assignee" in r.text
        assert ">x</textarea>" in r.text  # the comment is kept
        # a stale version: 409, said clearly, with a way to reload
        r = await c.post(url, data={"csrf_token": CSRF, "version": "99", "assignee": "tom"}, headers=HX)
        assert r.status_code == 409 and "Someone else changed this record" in r.text and 'id="reload-record"' in r.text
        # a value that is not valid: the user is not a technician
        r = await c.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "assignee": "rita"}, headers=HX)
        assert r.status_code == 422 and 'id="err-assignee"' in r.text
        # no version at all
        r = await c.post(url, data={"csrf_token": CSRF, "assignee": "tom"}, headers=HX)
        assert r.status_code == 422 and "version" in r.text
    async with page_client(flow, "rita") as c:  # the wrong role: 403 in the dialog
        r = await c.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "assignee": "tom"}, headers=HX)
        # the page names the roles by their labels (the API by their names: test_workflow.py)
        assert r.status_code == 403 and "only 值班组长 may take “dispatch”; you are 报修人 here" in r.text and 'id="transition-errors"' in r.text
    async with page_client(flow, "tom") as c:  # not visible to this technician: 404
        r = await c.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "assignee": "tom"}, headers=HX)
        assert r.status_code == 404 and 'id="transition-errors"' in r.text
    assert snapshot(flow, t["id"]) == before


@pytest.mark.anyio
async def test_a_required_comment_and_a_guard(flow: Flow):
    t = dispatch(flow, create(flow))
    async with page_client(flow, "dan") as c:
        url = f"/a/svc/ticket/{t['id']}/transitions/send_back"
        dialog = await c.get(url, headers=HX)
        assert 'aria-required="true"' in dialog.text.split('id="in-comment"')[1].split(">")[0]
        r = await c.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "comment": "  "}, headers=HX)
        assert r.status_code == 422 and 'id="err-comment"' in r.text
        assert flow.row(t["id"])["state"] == "dispatched"
    # finish's guard: a report with TODO does not pass (409), nothing changes
    from engine import accounts, workflow

    tom = accounts.actor_for(flow.instance.engine, "tom", "svc")
    t = workflow.transition(flow.records(), "ticket", t["id"], "accept", {}, t["version"], tom)
    async with page_client(flow, "tom") as c:
        url = f"/a/svc/ticket/{t['id']}/transitions/finish"
        r = await c.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "report": "TODO"}, headers=HX)
        assert r.status_code == 409 and "does not hold" in r.text
        assert flow.row(t["id"])["state"] == "in_progress"
        ok = await c.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "report": "fixed the pipe"}, headers=HX)
        assert ok.status_code == 200 and flow.row(t["id"])["state"] == "awaiting_check"


@pytest.mark.anyio
async def test_a_post_without_csrf_is_refused(flow: Flow):
    t = create(flow)
    async with page_client(flow, "dan") as c:
        r = await c.post(f"/a/svc/ticket/{t['id']}/transitions/dispatch", data={"version": str(t["version"]), "assignee": "tom"})
        assert r.status_code == 403
        r = await c.post(f"/a/svc/ticket/{t['id']}/approvals/director_approval", data={"decision": "approve"})
        assert r.status_code == 403
    assert flow.row(t["id"])["state"] == "pending"


@pytest.mark.anyio
async def test_a_blocked_transition_is_disabled_with_its_reason_and_the_approver_approves(flow: Flow):
    t = dispatch(flow, create(flow, est_cost=6000))
    record = f"/a/svc/ticket/{t['id']}"
    async with page_client(flow, "tom") as c:
        page = await c.get(record)
        assert re.search(r'<button type="button" class="transition" disabled data-transition="accept"', page.text)
        assert "“accept” is waiting for director_approval (pending with sam, sue)" in page.text
        assert 'id="step-director_approval" data-status="pending"' in page.text
        assert 'name="decision"' not in page.text  # not an approver
    async with page_client(flow, "sue") as c:
        home = await c.get("/")
        assert 'id="approvals-inbox"' in home.text and f'href="{record}"' in home.text
        assert re.search(r'id="inbox-count"[^>]*>1<', home.text)
        assert [i["record_id"] for i in (await c.get("/", headers={"accept": "application/json"})).json()["approvals"]] == [t["id"]]
        page = await c.get(record)
        assert 'value="approve"' in page.text and 'value="reject"' in page.text
        wrong = await c.post(f"{record}/approvals/director_approval", data={"csrf_token": CSRF, "decision": "maybe"}, headers=HX)
        assert wrong.status_code == 422 and 'id="approval-error"' in wrong.text and 'id="approvals"' in wrong.text
        r = await c.post(f"{record}/approvals/director_approval", data={"csrf_token": CSRF, "decision": "approve", "comment": "预算内"},
                         headers=HX)  # fmt: skip
        assert r.status_code == 200 and r.headers["hx-redirect"] == record
        page = await c.get(record)
        assert 'data-status="approved"' in page.text and "预算内" in page.text and 'name="decision"' not in page.text
        assert 'id="approvals-inbox"' not in (await c.get("/")).text
    async with page_client(flow, "sam") as c:  # decided already by sue: refused, shown, nothing changes
        late = await c.post(f"{record}/approvals/director_approval", data={"csrf_token": CSRF, "decision": "approve"}, headers=HX)
        assert late.status_code == 409 and "no pending approval" in late.text
    async with page_client(flow, "tom") as c:
        assert transition_names((await c.get(record)).text) == ["send_back", "accept"]
        assert 'disabled data-transition="accept"' not in (await c.get(record)).text


@pytest.mark.anyio
async def test_a_rejection_through_the_page_runs_on_reject(flow: Flow):
    t = dispatch(flow, create(flow, est_cost=7000))
    async with page_client(flow, "sam") as c:
        r = await c.post(f"/a/svc/ticket/{t['id']}/approvals/director_approval",
                         data={"csrf_token": CSRF, "decision": "reject", "comment": "先比价"})  # fmt: skip
        assert r.status_code == 303
    assert flow.row(t["id"])["state"] == "pending"
    assert [h["action"] for h in flow.history(t["id"])][-2:] == ["approval:director_approval", "transition:send_back"]


@pytest.mark.anyio
async def test_the_diagram_page_draws_every_state_and_transition(flow: Flow):
    async with page_client(flow, "dan") as c:
        listing = await c.get("/a/svc/ticket")
        assert 'href="/a/svc/ticket/workflow"' in listing.text
        r = await c.get("/a/svc/ticket/workflow")
    assert r.status_code == 200
    svg = r.text.split('id="workflow-diagram"><svg', 1)[1].split("</svg>")[0]
    workflow = flow.instance.compiled.apps["svc"].app.entity("ticket").workflow
    for s in workflow.states:
        assert f">{s.label.get('en')}</text>" in svg
    for t in workflow.transitions:
        assert f">{t.label.get('en')}</text>" in svg
        assert f'data-transition="{t.name}"' in r.text  # and a row of the table
    arrows = svg.count('marker-end="url(#kiln-arrow)"')
    assert arrows == 1 + sum(len(t.sources) for t in workflow.transitions)  # the initial arrow and one per source
    assert "cdn" not in r.text.lower() and "<script" not in svg
    table = r.text.split('id="workflow-transitions"')[1].split("</table>")[0]
    assert "not contains(report, &#34;TODO&#34;)" in table or "not contains(report, &quot;TODO&quot;)" in table


@pytest.mark.anyio
async def test_a_team_approver_with_no_role_opens_and_decides_the_record_but_sees_nothing_else(flow: Flow):
    other = create(flow, summary="别人的工单")
    t = dispatch(flow, create(flow, est_cost=30000))
    record = f"/a/svc/ticket/{t['id']}"
    async with page_client(flow, "bob") as c:  # the board: a team, no role in the app
        page = await c.get(record)
        assert page.status_code == 200 and 'id="step-board_countersign"' in page.text and 'value="approve"' in page.text
        listed = (await c.get("/a/svc/ticket.json")).json()["items"]
        assert [i["id"] for i in listed] == [t["id"]]  # only the granted record
        assert (await c.get(f"/a/svc/ticket/{other['id']}")).status_code == 404
        r = await c.post(f"{record}/approvals/board_countersign", data={"csrf_token": CSRF, "decision": "approve"}, headers=HX)
        assert r.status_code == 200


@pytest.mark.anyio
async def test_a_user_with_no_role_and_no_grant_cannot_probe_the_app(flow: Flow):
    async with page_client(flow, "bob") as c:
        assert (await c.get("/a/svc/ticket")).status_code == 404


@pytest.mark.anyio
async def test_the_list_names_people_by_their_display_names(flow: Flow):
    from sqlalchemy import update

    users = flow.instance.schema.system["kiln_users"]
    with flow.instance.engine.begin() as conn:
        conn.execute(update(users).where(users.c.username == "tom").values(display_name="汤姆"))
    dispatch(flow, create(flow), assignee="tom")
    async with page_client(flow, "dan") as c:
        listed = await c.get("/a/svc/ticket")
    rows = listed.text.split("<tbody")[1].split("</tbody>")[0]
    assert "汤姆" in rows and ">tom<" not in rows
