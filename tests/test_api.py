"""The records API of SPEC.md section 8 through an in-process ASGI client: every endpoint's
success and refusals, the error shape, and that a refused write changes nothing."""

from __future__ import annotations

import re

import pytest

from engine import accounts
from tests.test_api_support import APP, Api, error_of, make_api

pytestmark = pytest.mark.anyio
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
TICKETS = "repair__ticket"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api(db_url, write_definitions, open_instance) -> Api:
    return make_api(open_instance(write_definitions({"repair/app.yaml": APP}), db_url))


@pytest.fixture
async def device(api: Api) -> int:
    async with api.client() as c:
        r = await c.post("/api/v1/repair/device", json={"code": "D-1", "name": "灌装机"}, headers=api.auth("dan"))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def new_ticket(api: Api, who: str, device: int, **values) -> dict:
    async with api.client() as c:
        r = await c.post("/api/v1/repair/ticket", json={"summary": "轴承异响", "device": device, **values}, headers=api.auth(who))
    assert r.status_code == 201, r.text
    return r.json()


# -- auth ------------------------------------------------------------------------------------------


async def test_token_from_password_works_as_bearer(api: Api):
    accounts.set_password(api.instance.engine, "dan", "s3cret-pass")
    async with api.client() as c:
        r = await c.post("/api/v1/auth/token", json={"username": "dan", "password": "s3cret-pass"})
        assert r.status_code == 200
        token = r.json()["token"]
        listed = await c.get("/api/v1/repair/ticket", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200 and listed.json() == {"items": [], "next_cursor": None}


async def test_token_refusals_and_lockout(api: Api):
    accounts.set_password(api.instance.engine, "dan", "s3cret-pass")
    async with api.client() as c:
        assert error_of(await c.post("/api/v1/auth/token", content=b"{nope"))["code"] == "bad_json"
        assert (await c.post("/api/v1/auth/token", json=["dan"])).status_code == 400
        missing = await c.post("/api/v1/auth/token", json={"username": "dan"})
        assert missing.status_code == 400 and set(error_of(missing)["fields"]) == {"password"}
        statuses = [(await c.post("/api/v1/auth/token", json={"username": "dan", "password": "wrong"})).status_code for _ in range(6)]
        assert statuses[0] == 401 and statuses[-1] == 429  # engine.logins: 5 failures per username
        locked = await c.post("/api/v1/auth/token", json={"username": "dan", "password": "s3cret-pass"})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        assert error_of(locked)["code"] == "too_many_attempts"
    assert api.count("kiln_api_tokens") == len(api.tokens)  # no token was issued


async def test_every_endpoint_needs_a_user(api: Api, device: int):
    ticket = await new_ticket(api, "dan", device)
    before = api.count(TICKETS)
    async with api.client() as c:
        calls = [
            ("GET", "/api/v1/repair/ticket", {}), ("GET", "/api/v1/repair/ticket/count", {}),
            ("GET", f"/api/v1/repair/ticket/{ticket['id']}", {}), ("GET", f"/api/v1/repair/ticket/{ticket['id']}/history", {}),
            ("POST", "/api/v1/repair/ticket", {"json": {"summary": "x", "device": device}}),
            ("PATCH", f"/api/v1/repair/ticket/{ticket['id']}", {"json": {"summary": "x"}, "headers": {"If-Match": "1", "Authorization": "Bearer kiln_bad"}}),
            ("POST", "/api/v1/files", {"files": {"file": ("a.pdf", b"%PDF", "application/pdf")}}),
            ("GET", "/api/v1/files/" + "0" * 32, {}),
        ]  # fmt: skip
        for method, url, kwargs in calls:
            r = await c.request(method, url, **kwargs)
            assert r.status_code == 401 and error_of(r)["code"] == "unauthorized", (method, url, r.text)
    assert api.count(TICKETS) == before and api.row(TICKETS, ticket["id"])["summary"] == "轴承异响"
    assert api.count("kiln_files") == 0


async def test_a_browser_session_works_and_unsafe_requests_need_its_csrf_token(api: Api, device: int):
    cookies = {"kiln_session": api.session_cookie("dan", csrf="tok-1")}
    async with api.client() as c:
        c.cookies.update(cookies)
        assert (await c.get("/api/v1/repair/ticket")).status_code == 200
        refused = await c.post("/api/v1/repair/ticket", json={"summary": "x", "device": device})
        assert refused.status_code == 403 and error_of(refused)["code"] == "csrf"
        assert api.count(TICKETS) == 0
        made = await c.post("/api/v1/repair/ticket", json={"summary": "x", "device": device}, headers={"X-CSRF-Token": "tok-1"})
        assert made.status_code == 201 and made.json()["created_by"] == "dan"


# -- create ----------------------------------------------------------------------------------------


async def test_create_returns_the_record(api: Api, device: int):
    async with api.client() as c:
        r = await c.post(
            "/api/v1/repair/ticket", headers=api.auth("dan"),
            json={"summary": "轴承异响", "device": device, "assignee": "tom", "due": "2026-03-01T09:30:00+08:00", "est_cost": 12.5},
        )  # fmt: skip
    assert r.status_code == 201
    record = r.json()
    assert record["device"] == device and record["assignee"] == "tom" and record["created_by"] == "dan"
    assert record["state"] == "pending" and record["version"] == 1 and record["number"].startswith("MX")
    assert record["est_cost"] == "12.50" and record["urgency"] == "normal"
    assert record["due"] == "2026-03-01T01:30:00+00:00" and ISO.match(record["created_at"])
    assert record["sla"] == [] and record["tags"] == [] and record["flags"] == {}
    assert r.headers["etag"] == '"1"'
    assert api.row(TICKETS, record["id"])["summary"] == "轴承异响"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{", 400, "bad_json", None),
        (b"[1, 2]", 400, "bad_request", None),
        (b"", 400, "bad_json", None),
        (b'{"summary": "a\\u0000b"}', 400, "bad_json", None),
        (b'{"summary": "x"}', 422, "validation_failed", "device"),
        (b'{"summary": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "device": 1}', 422, "validation_failed", "summary"),
        (b'{"summary": "x", "device": 1, "urgency": "meh"}', 422, "validation_failed", "urgency"),
        (b'{"summary": "x", "device": 1, "version": 3}', 422, "validation_failed", "version"),
        (b'{"summary": "x", "device": 1, "nope": 3}', 422, "validation_failed", "nope"),
        (b'{"summary": "x", "device": 1, "packet_loss": 101}', 422, "validation_failed", "packet_loss"),
        (b'{"summary": "x", "device": 99999999999999999999}', 422, "validation_failed", "device"),
        (b'{"summary": "x", "device": 1, "report": "0123456789abcdef0123456789abcdef"}', 422, "validation_failed", "report"),
    ],
)
async def test_create_refusals_change_nothing(api: Api, device: int, body: bytes, status: int, code: str, field: str | None):
    async with api.client() as c:
        r = await c.post("/api/v1/repair/ticket", content=body, headers={**api.auth("dan"), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = error_of(r)
    assert error["code"] == code
    if field:
        assert field in error["fields"]
    assert api.count(TICKETS) == 0 and api.count("kiln_audit") == 1  # the device's create only


async def test_create_forbidden_and_unknown(api: Api, device: int):
    async with api.client() as c:
        forbidden = await c.post("/api/v1/repair/ticket", json={"summary": "x", "device": device}, headers=api.auth("tom"))
        assert forbidden.status_code == 403 and error_of(forbidden)["code"] == "forbidden"
        assert (await c.post("/api/v1/nope/ticket", json={}, headers=api.auth("dan"))).status_code == 404
        unknown = await c.post("/api/v1/repair/nope", json={}, headers=api.auth("dan"))
        assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"
        too_big = await c.post("/api/v1/repair/ticket", content=b'{"summary": "' + b"x" * 2_000_000 + b'"}', headers=api.auth("dan"))
        assert too_big.status_code == 413
    assert api.count(TICKETS) == 0


# -- list and count --------------------------------------------------------------------------------


async def test_list_where_filters_search_sort_and_cursor(api: Api, device: int):
    for i in range(5):
        await new_ticket(api, "dan", device, summary=f"故障{i}", urgency="high" if i % 2 else "normal", assignee="tom" if i < 2 else None)
    async with api.client(headers=api.auth("dan")) as c:
        def summaries(r) -> list[str]:
            assert r.status_code == 200, r.text
            return [t["summary"] for t in r.json()["items"]]

        assert summaries(await c.get("/api/v1/repair/ticket")) == ["故障4", "故障3", "故障2", "故障1", "故障0"]
        assert summaries(await c.get("/api/v1/repair/ticket", params={"where": 'urgency == "high"'})) == ["故障3", "故障1"]
        assert summaries(await c.get("/api/v1/repair/ticket", params={"filter[urgency]": "high"})) == ["故障3", "故障1"]
        assert summaries(await c.get("/api/v1/repair/ticket", params={"urgency": "normal", "assignee": "tom"})) == ["故障0"]
        assert summaries(await c.get("/api/v1/repair/ticket?summary=故障1&summary=故障2")) == ["故障2", "故障1"]
        assert summaries(await c.get("/api/v1/repair/ticket", params={"q": "障3"})) == ["故障3"]
        assert summaries(await c.get("/api/v1/repair/ticket", params={"sort": "summary", "state": "pending"}))[0] == "故障0"
        first = (await c.get("/api/v1/repair/ticket", params={"limit": 2, "sort": "-created_at"})).json()
        assert [t["summary"] for t in first["items"]] == ["故障4", "故障3"] and first["next_cursor"]
        rest = await c.get("/api/v1/repair/ticket", params={"limit": 2, "sort": "-created_at", "cursor": first["next_cursor"]})
        assert summaries(rest) == ["故障2", "故障1"]
        count = await c.get("/api/v1/repair/ticket/count", params={"urgency": "normal"})
        assert count.json() == {"count": 3, "more": False}
        assert (await c.get("/api/v1/repair/ticket/count", params={"q": "故障"})).json() == {"count": 5, "more": False}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"where": "urgency =="}, "where"), ({"where": "nope == 1"}, "where"), ({"sort": "nope"}, "sort"),
        ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"limit": "501"}, "limit"), ({"cursor": "!!!"}, "cursor"),
        ({"nope": "1"}, "nope"), ({"filter[urgency]": "meh"}, "urgency"), ({"id": "abc"}, "id"), ({"q": "a\x00"}, None),
    ],
)  # fmt: skip
async def test_bad_list_queries_are_400(api: Api, params: dict, field: str | None):
    async with api.client(headers=api.auth("dan")) as c:
        for path in ("/api/v1/repair/ticket", "/api/v1/repair/ticket/count"):
            if path.endswith("count") and set(params) & {"sort", "limit", "cursor"}:
                continue
            r = await c.get(path, params=params)
            assert r.status_code == 400, (path, r.text)
            if field:
                assert field in error_of(r)["fields"]


async def test_out_of_range_values_are_400_not_500(api: Api):
    async with api.client(headers=api.auth("dan")) as c:
        r = await c.get("/api/v1/repair/ticket", params={"where": "id > 99999999999999999999999"})
        assert r.status_code == 400 and error_of(r)["code"] in ("bad_query", "bad_request")


# -- one record, update, history ---------------------------------------------------------------------


async def test_get_one(api: Api, device: int):
    ticket = await new_ticket(api, "rita", device)
    async with api.client() as c:
        r = await c.get(f"/api/v1/repair/ticket/{ticket['id']}", headers=api.auth("rita"))
        assert r.status_code == 200 and r.json() == ticket and r.headers["etag"] == '"1"'
        for who, path in (("ron", ticket["id"]), ("rita", 999), ("rita", "abc"), ("rita", "1e3"), ("rita", "99999999999999999999")):
            missing = await c.get(f"/api/v1/repair/ticket/{path}", headers=api.auth(who))
            assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"


async def test_update_with_if_match(api: Api, device: int):
    ticket = await new_ticket(api, "dan", device)
    url = f"/api/v1/repair/ticket/{ticket['id']}"
    async with api.client() as c:
        r = await c.patch(url, json={"summary": "新现象", "urgency": "high"}, headers={**api.auth("dan"), "If-Match": '"1"'})
        assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["summary"] == "新现象"
        assert r.headers["etag"] == '"2"'
        history = await c.get(url + "/history", headers=api.auth("dan"))
    entries = history.json()["items"]
    assert [e["action"] for e in entries] == ["create", "update"] and entries[1]["actor"] == "dan"
    assert entries[1]["changes"]["summary"] == ["轴承异响", "新现象"] and ISO.match(entries[1]["at"])


@pytest.mark.parametrize(
    ("who", "headers", "body", "status", "code"),
    [
        ("dan", {}, {"summary": "y"}, 428, "precondition_required"),
        ("dan", {"If-Match": "one"}, {"summary": "y"}, 400, "bad_request"),
        ("dan", {"If-Match": "7"}, {"summary": "y"}, 409, "stale_version"),
        ("dan", {"If-Match": "1"}, [1], 400, "bad_request"),
        ("dan", {"If-Match": "1"}, {"summary": None}, 422, "validation_failed"),
        ("dan", {"If-Match": "1"}, {"state": "closed"}, 422, "validation_failed"),
        ("tom", {"If-Match": "1"}, {"est_cost": 3}, 422, "validation_failed"),  # hidden from technicians
        ("sue", {"If-Match": "1"}, {"summary": "y"}, 403, "forbidden"),  # reads all, updates none
        ("ron", {"If-Match": "1"}, {"summary": "y"}, 404, "not_found"),  # not his
    ],
)
async def test_update_refusals_change_nothing(api: Api, device: int, who, headers, body, status, code):
    ticket = await new_ticket(api, "rita", device, assignee="tom", est_cost="5")
    async with api.client() as c:
        r = await c.patch(f"/api/v1/repair/ticket/{ticket['id']}", json=body, headers={**api.auth(who), **headers})
    assert r.status_code == status, r.text
    assert error_of(r)["code"] == code
    row = api.row(TICKETS, ticket["id"])
    assert row["version"] == 1 and row["summary"] == "轴承异响" and row["state"] == "pending" and str(row["est_cost"]) == "5.00"


async def test_history_is_scoped(api: Api, device: int):
    ticket = await new_ticket(api, "rita", device)
    async with api.client() as c:
        assert (await c.get(f"/api/v1/repair/ticket/{ticket['id']}/history", headers=api.auth("rita"))).status_code == 200
        r = await c.get(f"/api/v1/repair/ticket/{ticket['id']}/history", headers=api.auth("ron"))
        assert r.status_code == 404 and error_of(r)["code"] == "not_found"


async def test_unknown_paths_and_methods_answer_json(api: Api):
    async with api.client(headers=api.auth("dan")) as c:
        r = await c.get("/api/v1/repair/ticket/1/nope/more")
        assert r.status_code == 404 and error_of(r)["code"] == "not_found"
        r = await c.delete("/api/v1/repair/ticket/1")
        assert r.status_code == 405 and "PATCH" in r.headers["allow"] and error_of(r)["code"] == "method_not_allowed"
