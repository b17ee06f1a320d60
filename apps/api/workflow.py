"""Transitions and approvals over HTTP (SPEC.md section 8).

``POST /<app>/<entity>/<id>/transitions/<name>`` takes the transition's fields and ``comment`` in
the body and the version as ``If-Match`` (or ``"version"`` in the body); ``GET .../transitions``
lists the ones the caller may take now; ``POST .../approvals/<name>`` records a decision;
``GET .../approvals`` lists a record's steps; ``GET /me/approvals`` is the caller's inbox. The
checks all live in :mod:`engine.workflow` and :mod:`engine.approvals`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from apps.api.auth import instance, require_user
from apps.api.errors import ApiError, endpoint, json_object, parse_json
from apps.api.records import etag_of, record_id_of, records_for, version_from_if_match, with_extras
from engine import approvals, workflow
from engine.actors import Actor

# Keys of a transition body that are not field values.
CONTROL = frozenset({"comment", "version"})


def routes() -> list[BaseRoute]:
    """Listed before the records routes: ``/me/approvals`` would otherwise read as app ``me``."""
    return [
        Route("/me/approvals", endpoint(inbox), methods=["GET"], name="api_inbox"),
        Route("/{app}/{entity}/{id}/transitions", endpoint(available), methods=["GET"], name="api_transitions"),
        Route("/{app}/{entity}/{id}/transitions/{name}", endpoint(transition, body=True), methods=["POST"], name="api_transition"),
        Route("/{app}/{entity}/{id}/approvals", endpoint(steps), methods=["GET"], name="api_approvals"),
        Route("/{app}/{entity}/{id}/approvals/{name}", endpoint(decide, body=True), methods=["POST"], name="api_decide"),
    ]


def _body(raw: bytes) -> dict[str, Any]:
    """The JSON object of the body; an empty body is an empty object (a transition may need nothing)."""
    return json_object(parse_json(raw)) if raw.strip() else {}


def _comment(body: dict[str, Any]) -> str | None:
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise ApiError(400, "bad_request", "comment must be text", {"comment": "expected text"})
    return comment


def _version(request: Request, body: dict[str, Any]) -> int:
    if "version" in body and request.headers.get("if-match") is None:
        version = body["version"]
        if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**31:
            raise ApiError(400, "bad_request", "version must be the record's version, a whole number", {"version": "invalid"})
        return version
    return version_from_if_match(request)


def transition(request: Request, raw: bytes) -> Response:
    records, entity, actor = records_for(request)
    record_id = record_id_of(request)
    body = _body(raw)
    values = {k: v for k, v in body.items() if k not in CONTROL}
    version = _version(request, body)
    name = request.path_params["name"]
    record = workflow.transition(records, entity, record_id, name, values, version, actor, comment=_comment(body))
    return JSONResponse(with_extras(record), headers=etag_of(record))


def available(request: Request) -> Response:
    records, entity, actor = records_for(request)
    locale = actor.locale or records.app.locale
    items = workflow.available(records, entity, record_id_of(request), actor)
    return JSONResponse({"items": [t.as_json(locale) for t in items]})


def decide(request: Request, raw: bytes) -> Response:
    records, entity, actor = records_for(request)
    record_id = record_id_of(request)
    body = _body(raw)
    decision = body.get("decision")
    if decision not in approvals.DECISIONS:
        raise ApiError(422, "validation_failed", "decision must be approve or reject", {"decision": "expected approve or reject"})
    result = approvals.decide(records, entity, record_id, request.path_params["name"], decision, _comment(body), actor)
    return JSONResponse({"approval": result["approval"], "record": with_extras(result["record"])})


def steps(request: Request) -> Response:
    records, entity, actor = records_for(request)
    return JSONResponse({"items": approvals.steps(records, entity, record_id_of(request), actor)})


def inbox(request: Request) -> Response:
    user = require_user(request)
    kiln = instance(request)
    records_by_app = {name: kiln.records(name) for name in sorted(kiln.compiled.apps)}
    actor = Actor(user.id, user.username, is_admin=user.is_admin)
    return JSONResponse({"items": approvals.inbox(records_by_app, actor)})
