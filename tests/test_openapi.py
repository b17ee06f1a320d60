"""The OpenAPI 3.1 document: generated from the definitions, valid, served without login, and
fuzzed with schemathesis against the in-process app (no input makes a 500)."""

from __future__ import annotations

import time

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error

from engine.openapi import document
from tests.test_api_support import APP, Api, make_api

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api(db_url, write_definitions, open_instance) -> Api:
    return make_api(open_instance(write_definitions({"repair/app.yaml": APP}), db_url))


def test_the_document_is_valid_openapi_3_1(api: Api):
    doc = document(api.instance.compiled)
    validate(doc)  # openapi-spec-validator picks the 3.1 validator from "openapi": "3.1.0"
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearer"] == {**doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert doc["components"]["schemas"]["Error"]["properties"]["error"]["required"] == ["code", "message", "fields"]
    paths = set(doc["paths"])
    assert {"/auth/token", "/files", "/files/{file_id}", "/openapi.json"} <= paths
    for entity in ("device", "ticket"):
        assert {f"/repair/{entity}", f"/repair/{entity}/count", f"/repair/{entity}/{{id}}", f"/repair/{entity}/{{id}}/history"} <= paths
    assert doc["paths"]["/auth/token"]["post"]["security"] == []


def test_entity_schemas_follow_the_fields(api: Api):
    schemas = document(api.instance.compiled)["components"]["schemas"]
    record, create, update = schemas["repair.ticket"], schemas["repair.ticket.create"], schemas["repair.ticket.update"]
    props = record["properties"]
    assert props["id"]["readOnly"] and props["version"]["readOnly"] and props["created_at"]["format"] == "date-time"
    assert props["state"]["enum"] == ["pending", "closed"] and props["entered_closed_at"]["readOnly"]
    assert props["summary"]["maxLength"] == 20 and props["est_cost"]["format"] == "decimal"
    assert props["photos"]["type"] == "array" and props["photos"]["items"]["pattern"] == "^[0-9a-f]{32}$"
    assert create["required"] == ["summary", "device"]  # urgency has a default
    assert create["properties"]["urgency"]["enum"] == ["high", "normal", None]
    assert create["properties"]["packet_loss"]["minimum"] == 0 and create["properties"]["packet_loss"]["maximum"] == 100
    assert create["additionalProperties"] is False and "id" not in create["properties"] and "state" not in create["properties"]
    assert "required" not in update


async def test_served_without_login(api: Api):
    async with api.client() as c:
        r = await c.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.json() == document(api.instance.compiled)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_schemathesis_finds_no_server_error(tmp_path, write_definitions, open_instance):
    """A few hundred generated requests (valid and invalid) over every operation, as a
    dispatcher: none may answer 500. SQLite only, to stay within a minute."""
    instance = open_instance(write_definitions({"repair/app.yaml": APP}), f"sqlite:///{tmp_path}/fuzz.db")
    api = make_api(instance)
    headers = api.auth("dan")
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    started, calls = time.monotonic(), []

    @given(case=st.one_of(*(op.as_strategy() for op in operations)))
    @hypothesis.settings(max_examples=300, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])  # fmt: skip
    def fuzz(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), **headers}
        response = case.call()
        calls.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    fuzz()
    assert len(calls) >= 200 and time.monotonic() - started < 90
    assert 500 not in calls
