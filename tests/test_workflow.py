"""Workflow transitions (SPEC.md section 3) through the API and the engine: the service-ticket path
with roles, only and requires; every refusal, each changing nothing; what a user may take now."""

from __future__ import annotations

import datetime as dt

import pytest

from engine import workflow
from engine.actors import SYSTEM
from engine.compiler import compile_definitions
from engine.errors import Conflict, ValidationFailed
from tests.test_workflow_support import APP, Flow, error_of, make_flow

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def flow(db_url, write_definitions, open_instance) -> Flow:
    return make_flow(open_instance(write_definitions({"svc/app.yaml": APP}), db_url))


async def test_the_service_ticket_path(flow: Flow):
    async with flow.client() as c:
        t = await flow.create(c)
        assert t["state"] == "pending" and t["entered_pending_at"] and t["entered_dispatched_at"] is None
        t = await flow.step(c, "dan", t, "dispatch", assignee="tom", urgency="normal")
        assert t["state"] == "dispatched" and t["assignee"] == "tom" and t["version"] == 2 and t["entered_dispatched_at"]
        t = await flow.step(c, "tom", t, "accept", comment="on my way")
        assert t["state"] == "in_progress" and t["entered_in_progress_at"]
        t = await flow.step(c, "tom", t, "finish", report="replaced the valve")
        assert t["state"] == "awaiting_check" and t["report"] == "replaced the valve"
        r = await c.post(f"/api/v1/svc/ticket/{t['id']}/transitions/confirm", json={"version": t["version"]}, headers=flow.auth("rita"))
        assert r.status_code == 200, r.text
        t = r.json()
        assert t["state"] == "closed" and t["version"] == 5 and r.headers["etag"] == '"5"'
        assert all(t[f"entered_{s}_at"] for s in ("pending", "dispatched", "in_progress", "awaiting_check", "closed"))
    history = flow.history(t["id"])
    assert [h["action"] for h in history] == ["create", "transition:dispatch", "transition:accept", "transition:finish", "transition:confirm"]
    assert history[1]["actor"] == "dan" and history[1]["changes"]["state"] == ["pending", "dispatched"]
    assert history[1]["changes"]["assignee"] == [None, "tom"] and history[2]["comment"] == "on my way"


async def test_every_refusal_changes_nothing(flow: Flow):
    async with flow.client() as c:
        t = await flow.create(c)

        async def refused(who: str, name: str, status: int, code: str, version: int | None = None, **body) -> dict:
            before, entries = flow.row(t["id"]), len(flow.history(t["id"]))
            url = f"/api/v1/svc/ticket/{t['id']}/transitions/{name}"
            r = await c.post(url, json=body, headers=flow.auth(who, t["version"] if version is None else version))
            assert r.status_code == status, (name, who, r.text)
            assert flow.row(t["id"]) == before and len(flow.history(t["id"])) == entries
            error = error_of(r)
            assert error["code"] == code, error
            return error

        unknown = await refused("dan", "dispach", 404, "not_found", assignee="tom")
        assert "did you mean 'dispatch'" in unknown["message"]
        await refused("ron", "dispatch", 404, "not_found", assignee="tom")  # ron may not read rita's ticket
        role = await refused("rita", "dispatch", 403, "forbidden", assignee="tom")
        assert "only dispatcher may dispatch" in role["message"]
        requires = await refused("dan", "dispatch", 422, "validation_failed")
        assert requires["fields"] == {"assignee": "required to dispatch"}
        stale = await refused("dan", "dispatch", 409, "stale_version", version=t["version"] + 7, assignee="tom")
        assert "reload" in stale["message"]
        wrong_from = await refused("dan", "accept", 409, "conflict")
        assert wrong_from["message"] == "cannot accept from 待受理; possible from: 已派单"
        bad_value = await refused("dan", "dispatch", 422, "validation_failed", assignee="nobody")
        assert "no such user" in bad_value["fields"]["assignee"]

        t = await flow.step(c, "dan", t, "dispatch", assignee="tom")
        comment = await refused("dan", "send_back", 422, "validation_failed")
        assert comment["fields"] == {"comment": "required"}
        only = await refused("max", "accept", 403, "forbidden")  # a technician, but not the assignee
        assert "only the assignee" in only["message"]
        # tom may take accept, but not change what his role may not update (est_cost is hidden from him)
        hidden = await refused("tom", "accept", 422, "validation_failed", est_cost=1)
        assert set(hidden["fields"]) == {"est_cost"}

        t = await flow.step(c, "tom", t, "accept")
        empty_roles = await refused("rita", "finish", 403, "forbidden", report="done")  # finish: whoever may update
        assert "you may not change" in empty_roles["message"]
        guard = await refused("tom", "finish", 409, "conflict", report="TODO: parts")
        assert guard["fields"] == {"when": 'not contains(report, "TODO")'} and "does not hold" in guard["message"]
        missing = await refused("tom", "finish", 422, "validation_failed", report="")
        assert missing["fields"] == {"report": "required to finish"}

        no_version = await c.post(f"/api/v1/svc/ticket/{t['id']}/transitions/finish", json={"report": "ok"}, headers=flow.auth("tom"))
        assert no_version.status_code == 428 and flow.row(t["id"])["state"] == "in_progress"
        bad_body = await c.post(f"/api/v1/svc/ticket/{t['id']}/transitions/finish", content=b"[1]", headers=flow.auth("tom", t["version"]))
        assert bad_body.status_code == 400 and flow.row(t["id"])["state"] == "in_progress"


async def test_available_transitions_follow_state_roles_and_only(flow: Flow):
    async with flow.client() as c:
        t = await flow.create(c)

        async def names(who: str) -> list[str]:
            r = await c.get(f"/api/v1/svc/ticket/{t['id']}/transitions", headers=flow.auth(who))
            assert r.status_code == 200, r.text
            return [item["name"] for item in r.json()["items"]]

        assert await names("dan") == ["dispatch"] and await names("rita") == []
        r = await c.get(f"/api/v1/svc/ticket/{t['id']}/transitions", headers=flow.auth("dan"))
        assert r.json()["items"][0] == {"name": "dispatch", "label": "dispatch", "to": "dispatched", "requires": ["assignee"],
                                        "comment": "optional", "blocked": None}  # fmt: skip
        assert (await c.get(f"/api/v1/svc/ticket/{t['id']}/transitions", headers=flow.auth("ron"))).status_code == 404
        t = await flow.step(c, "dan", t, "dispatch", assignee="tom")
        assert await names("tom") == ["send_back", "accept"] and await names("max") == ["send_back"]


def test_the_system_skips_roles_and_only_but_not_requires_or_from(flow: Flow):
    records = flow.records()
    now = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    created = records.create("ticket", {"summary": "门锁坏了"}, records_actor(flow, "rita"), now=now)
    with records.transaction() as conn:
        entity = records.entity("ticket")
        with pytest.raises(ValidationFailed) as refused:
            workflow.transition_in(records, conn, entity, created["id"], "dispatch", {}, SYSTEM, now)
        assert refused.value.fields == {"assignee": "required to dispatch"}
        with pytest.raises(Conflict):
            workflow.transition_in(records, conn, entity, created["id"], "accept", {}, SYSTEM, now)
        rule = SYSTEM.as_rule("自动派单")
        workflow.transition_in(records, conn, entity, created["id"], "dispatch", {"assignee": "tom"}, rule, now)
        after = workflow.transition_in(records, conn, entity, created["id"], "accept", {}, rule, now + dt.timedelta(minutes=5))
    assert after["state"] == "in_progress" and after["entered_in_progress_at"] == now + dt.timedelta(minutes=5)
    last = flow.history(created["id"])[-1]
    assert last["action"] == "transition:accept" and last["actor"] == "system" and last["rule"] == "自动派单"


def test_diagram_lists_states_and_transitions(write_definitions):
    compiled = compile_definitions(write_definitions({"svc/app.yaml": APP}), env={})
    text = workflow.diagram(compiled.app("svc").app.entity("ticket"))
    assert text.startswith("stateDiagram-v2\n    [*] --> pending\n")
    assert "    pending: 待受理" in text and "    dispatched --> in_progress: accept" in text
    assert "    closed --> in_progress: reopen" in text and "    closed --> [*]" in text


def records_actor(flow: Flow, name: str):
    from engine.accounts import actor_for

    return actor_for(flow.instance.engine, name, "svc")
