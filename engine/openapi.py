"""The OpenAPI 3.1 document of the JSON API, generated from the compiled definitions.

Each entity gets three schemas: the record as the API returns it (``<app>.<entity>``: system
fields read-only, every field nullable, no ``additionalProperties: false`` because a role's
hidden fields are simply absent), and the bodies of a create and an update (writable fields only,
required fields on create, nothing else accepted). Every path of SPEC.md section 8 that exists so
far is listed per entity, with the error responses and the bearer security scheme.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.model import Entity, Field
from engine.queries import MAX_LIMIT

if TYPE_CHECKING:
    from engine.compiler import Compiled

INT64 = {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}
ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}
DATETIME = {"type": "string", "format": "date-time"}
FILE_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "a file id from POST /api/v1/files"}
LIST_PARAMS = ("where", "sort", "limit", "cursor", "q")
ERRORS = {
    "400": "Bad request: malformed JSON, a body that is not an object, a bad query",
    "401": "No user: send Authorization: Bearer TOKEN",
    "403": "The user's roles do not allow this",
    "404": "No such app, entity, record or file, or not visible to the user",
    "409": "The record changed since it was read (stale If-Match version)",
    "413": "The body or file is larger than the limit",
    "415": "The file's type is not accepted by the field",
    "422": "Validation failed; fields names each bad field",
    "428": "If-Match is required",
    "429": "Too many failed logins",
}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        out["type"] = [*kind, "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def value_schema(f: Field, output: bool = False) -> dict[str, Any]:
    """One value of ``f`` (one element, for multi-valued fields)."""
    t = f.type
    schema: dict[str, Any]
    if t in ("text", "textarea", "richtext", "location", "phone"):
        schema = {"type": "string"}
    elif t == "email":
        schema = {"type": "string", "format": "email"}
    elif t == "url":
        schema = {"type": "string", "format": "uri"}
    elif t == "integer":
        schema = dict(INT64)
    elif t == "rating":
        schema = {"type": "integer", "minimum": 1, "maximum": int(f.max) if f.max is not None else 5}
    elif t == "decimal":
        # Decimals come back as strings (exact); a client may send a number or a string.
        schema = {"type": "string", "format": "decimal"} if output else {"type": ["number", "string"]}
    elif t == "boolean":
        schema = {"type": "boolean"}
    elif t in ("date", "time"):
        schema = {"type": "string", "format": t}
    elif t == "datetime":
        schema = dict(DATETIME)
    elif t in ("select", "multiselect"):
        schema = {"type": "string", "enum": list(f.option_keys)}
    elif t == "tags":
        schema = {"type": "string", "minLength": 1}
    elif t == "user":
        schema = {"type": "string", "description": "a username"}
    elif t == "team":
        schema = {"type": "string", "maxLength": 100}
    elif t == "link":
        schema = {**ID, "description": f"the id of a {f.entity} record"}
    elif t in ("file", "image"):
        schema = dict(FILE_ID)
    else:  # computed: whatever its expression yields
        schema = {}
    if f.max_length is not None and schema.get("type") == "string":
        schema["maxLength"] = f.max_length
    if t in ("integer", "decimal") and not output:
        if f.min is not None:
            schema["minimum"] = float(f.min) if t == "decimal" else int(f.min)
        if f.max is not None:
            schema["maximum"] = float(f.max) if t == "decimal" else int(f.max)
    return schema


def field_schema(f: Field, output: bool = False, required: bool = False) -> dict[str, Any]:
    one = value_schema(f, output)
    if f.is_multi:
        schema: dict[str, Any] = {"type": "array", "items": one}
    elif f.is_computed or (required and not output):
        schema = one
    else:
        schema = _nullable(one)
    if f.is_computed:
        schema["readOnly"] = True
    schema["title"] = f.label.get("en")
    return schema


def record_schema(entity: Entity) -> dict[str, Any]:
    props: dict[str, Any] = {"id": {**ID, "readOnly": True}}
    required = ["id", "created_at", "updated_at", "version"]
    if entity.number:
        props["number"] = {"type": ["string", "null"], "readOnly": True}
    if entity.workflow:
        props["state"] = {"type": "string", "enum": list(entity.states), "readOnly": True}
        required.append("state")
    props["created_at"] = {**DATETIME, "readOnly": True}
    props["created_by"] = {"type": ["string", "null"], "readOnly": True, "description": "a username"}
    props["updated_at"] = {**DATETIME, "readOnly": True}
    props["version"] = {"type": "integer", "minimum": 1, "readOnly": True, "description": "send it back as If-Match"}
    for f in entity.active_fields:
        props[f.name] = field_schema(f, output=True)
    for state in entity.states:
        props[f"entered_{state}_at"] = {"type": ["string", "null"], "format": "date-time", "readOnly": True}
    for key, schema in (("sla", {"type": "array", "items": {"type": "object"}}), ("tags", {"type": "array", "items": {"type": "string"}}),
                        ("flags", {"type": "object"})):  # fmt: skip
        props.setdefault(key, {**schema, "readOnly": True, "description": "single-record responses only"})
    return {"type": "object", "title": str(entity.label), "properties": props, "required": required,
            "description": "Fields a role hides are left out of its responses."}  # fmt: skip


def input_schema(entity: Entity, creating: bool) -> dict[str, Any]:
    writable = [f for f in entity.active_fields if not f.is_computed]
    needed = [f.name for f in writable if creating and f.required and f.default is None]
    props = {f.name: field_schema(f, required=f.name in needed) for f in writable}
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if needed:
        schema["required"] = needed
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, dict[str, Any]], *errors: str) -> dict[str, Any]:
    return {**ok, **{code: {"$ref": f"#/components/responses/E{code}"} for code in ("401", *errors)}}


def _param(name: str, where: str, schema: dict[str, Any], description: str = "", required: bool = False) -> dict[str, Any]:
    param = {"name": name, "in": where, "schema": schema, "required": required or where == "path"}
    if description:
        param["description"] = description
    return param


def _list_params(entity: Entity) -> list[dict[str, Any]]:
    params = [
        _param("where", "query", {"type": "string"}, "a condition in the expression language, e.g. urgency == \"high\""),
        _param("q", "query", {"type": "string"}, "text to search for in the text fields and the number"),
    ]
    if entity.workflow:
        params.append(_param("state", "query", {"type": "string", "enum": list(entity.states)}, "only records in this state"))
    for f in entity.active_fields:
        if f.is_computed or f.type in ("file", "image"):
            continue
        name = f.name if f.name not in LIST_PARAMS and f.name != "state" else f"filter[{f.name}]"
        params.append(_param(name, "query", value_schema(f), f"only records whose {f.name} is this value (repeat for any of several)"))
    return params


def entity_paths(app: str, entity: Entity) -> dict[str, Any]:
    schema, prefix = f"{app}.{entity.name}", f"/{app}/{entity.name}"
    record = _ref(schema)
    page_params = [
        _param("sort", "query", {"type": "string"}, "a field or system field, '-' first for descending; default -id"),
        _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}),
        _param("cursor", "query", {"type": "string"}, "next_cursor of the previous page"),
    ]
    record_id = _param("id", "path", ID)
    tag = [schema]
    return {
        prefix: {
            "get": {"operationId": f"{schema}.list", "tags": tag, "summary": f"List the {entity.name} records the user may see",
                    "parameters": [*_list_params(entity), *page_params],
                    "responses": _responses({"200": _json({"type": "object", "required": ["items", "next_cursor"], "properties": {
                        "items": {"type": "array", "items": record}, "next_cursor": {"type": ["string", "null"]}}})}, "400", "404")},
            "post": {"operationId": f"{schema}.create", "tags": tag, "summary": f"Create a {entity.name} record",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(f"{schema}.create")}}},
                     "responses": _responses({"201": _json(record, "Created")}, "400", "403", "404", "413", "422")},
        },
        f"{prefix}/count": {
            "get": {"operationId": f"{schema}.count", "tags": tag, "summary": "How many records match (counted up to 10,000)",
                    "parameters": _list_params(entity),
                    "responses": _responses({"200": _json({"type": "object", "required": ["count", "more"], "properties": {
                        "count": {"type": "integer", "minimum": 0}, "more": {"type": "boolean"}}})}, "400", "404")},
        },
        f"{prefix}/{{id}}": {
            "get": {"operationId": f"{schema}.get", "tags": tag, "summary": "One record", "parameters": [record_id],
                    "responses": _responses({"200": _json(record)}, "404")},
            "patch": {"operationId": f"{schema}.update", "tags": tag, "summary": "Change some fields",
                      "parameters": [record_id, _param("If-Match", "header", {"type": "string"}, "the version read", required=True)],
                      "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(f"{schema}.update")}}},
                      "responses": _responses({"200": _json(record)}, "400", "403", "404", "409", "413", "422", "428")},
        },
        f"{prefix}/{{id}}/history": {
            "get": {"operationId": f"{schema}.history", "tags": tag, "summary": "The audit trail, oldest first", "parameters": [record_id],
                    "responses": _responses({"200": _json({"type": "object", "required": ["items"], "properties": {
                        "items": {"type": "array", "items": _ref("HistoryEntry")}}})}, "404")},
        },
    }  # fmt: skip


def workflow_paths(app: str, entity: Entity) -> dict[str, Any]:
    """Transitions and approvals of an entity with a workflow (apps/api/workflow.py)."""
    assert entity.workflow is not None
    schema, prefix = f"{app}.{entity.name}", f"/{app}/{entity.name}/{{id}}"
    record_id, tag = _param("id", "path", ID), [schema]
    names = [t.name for t in entity.workflow.transitions]
    body = {"type": "object", "description": "the fields the transition requires (or any other the user may set), and",
            "properties": {"comment": {"type": ["string", "null"]}, "version": {**INT64, "minimum": 1, "description": "instead of If-Match"}}}
    paths: dict[str, Any] = {
        f"{prefix}/transitions": {"get": {
            "operationId": f"{schema}.transitions", "tags": tag, "summary": "The transitions the user may take now",
            "parameters": [record_id], "responses": _responses({"200": _json({"type": "object", "required": ["items"], "properties": {
                "items": {"type": "array", "items": _ref("AvailableTransition")}}})}, "404")}},
        f"{prefix}/transitions/{{name}}": {"post": {
            "operationId": f"{schema}.transition", "tags": tag, "summary": "Take a workflow transition",
            "parameters": [record_id, _param("name", "path", {"type": "string", "enum": names}),
                           _param("If-Match", "header", {"type": "string"}, "the version read (or version in the body)")],
            "requestBody": {"content": {"application/json": {"schema": body}}},
            "responses": _responses({"200": _json(_ref(schema))}, "400", "403", "404", "409", "413", "422", "428")}},
        f"{prefix}/approvals": {"get": {
            "operationId": f"{schema}.approvals", "tags": tag, "summary": "The record's approval steps, oldest first",
            "parameters": [record_id], "responses": _responses({"200": _json({"type": "object", "required": ["items"], "properties": {
                "items": {"type": "array", "items": _ref("ApprovalStep")}}})}, "404")}},
    }
    if entity.workflow.approvals:
        decision = {"type": "object", "required": ["decision"], "properties": {
            "decision": {"type": "string", "enum": ["approve", "reject"]}, "comment": {"type": ["string", "null"]}}}
        paths[f"{prefix}/approvals/{{name}}"] = {"post": {
            "operationId": f"{schema}.decide", "tags": tag, "summary": "Approve or reject a pending approval step",
            "parameters": [record_id, _param("name", "path", {"type": "string", "enum": [a.name for a in entity.workflow.approvals]})],
            "requestBody": {"required": True, "content": {"application/json": {"schema": decision}}},
            "responses": _responses({"200": _json({"type": "object", "required": ["approval", "record"], "properties": {
                "approval": _ref("ApprovalStep"), "record": _ref(schema)}})}, "400", "403", "404", "409", "413", "422")}}
    return paths  # fmt: skip


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "fields"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"}, "description": "field name -> what is wrong"}}}}},
    "HistoryEntry": {"type": "object", "properties": {
        "id": {"type": "integer"}, "action": {"type": "string"}, "actor": {"type": "string"}, "at": DATETIME,
        "changes": {"type": "object", "description": "field -> [before, after]"}, "rule": {"type": ["string", "null"]},
        "comment": {"type": ["string", "null"]}}},
    "AvailableTransition": {"type": "object", "properties": {
        "name": {"type": "string"}, "label": {"type": "string"}, "to": {"type": "string"},
        "requires": {"type": "array", "items": {"type": "string"}}, "comment": {"type": "string", "enum": ["required", "optional", "none"]},
        "blocked": {"type": ["string", "null"], "description": "why it cannot run yet (a pending approval, a guard)"}}},
    "ApprovalStep": {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "label": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "approved", "rejected"]}, "mode": {"type": "string", "enum": ["any", "all"]},
        "state": {"type": ["string", "null"]}, "opened_at": DATETIME, "closed_at": {"type": ["string", "null"], "format": "date-time"},
        "approvers": {"type": "array", "items": {"type": "object", "properties": {
            "user": {"type": ["string", "null"]}, "decision": {"type": ["string", "null"]}, "comment": {"type": ["string", "null"]},
            "decided_at": {"type": ["string", "null"], "format": "date-time"}}}}}},
    "File": {"type": "object", "required": ["id", "filename", "size", "content_type"], "properties": {
        "id": FILE_ID, "filename": {"type": "string"}, "size": {"type": "integer", "minimum": 0}, "content_type": {"type": "string"}}},
}  # fmt: skip


def static_paths() -> dict[str, Any]:
    """The paths that do not depend on the definitions."""
    credentials = {"type": "object", "required": ["username", "password"], "properties": {
        "username": {"type": "string", "minLength": 1}, "password": {"type": "string", "minLength": 1}}}
    return {
        "/auth/token": {"post": {
            "operationId": "auth.token", "tags": ["auth"], "summary": "Exchange a username and password for an API token",
            "security": [], "requestBody": {"required": True, "content": {"application/json": {"schema": credentials}}},
            "responses": {"200": _json({"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}),
                          **{c: {"$ref": f"#/components/responses/E{c}"} for c in ("400", "401", "413", "429")}}}},
        "/files": {"post": {
            "operationId": "files.upload", "tags": ["files"], "summary": "Upload a file (streamed; the part named file)",
            "parameters": [_param("field", "query", {"type": "string", "pattern": "^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$"},
                                  "<app>.<entity>.<field>: check the file against that field's max_size and accept")],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}},
            "responses": _responses({"201": _json(_ref("File"), "Stored")}, "400", "413", "415")}},
        "/files/{file_id}": {"get": {
            "operationId": "files.download", "tags": ["files"], "summary": "Download a file the user may read",
            "parameters": [_param("file_id", "path", FILE_ID)],
            "responses": _responses({"200": {"description": "The file", "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}}, "404")}},
        "/me/approvals": {"get": {
            "operationId": "me.approvals", "tags": ["workflow"], "summary": "The approval steps waiting for the user's decision",
            "responses": _responses({"200": _json({"type": "object", "required": ["items"], "properties": {"items": {"type": "array",
                "items": {"type": "object", "properties": {"app": {"type": "string"}, "entity": {"type": "string"},
                                                           "record_id": {"type": "integer"}, "approval": {"type": "string"}}}}}})})}},
        "/me/notifications": {"get": {
            "operationId": "me.notifications", "tags": ["notifications"], "summary": "The user's in-app notifications, newest first",
            "parameters": [_param("before", "query", {"type": "integer", "minimum": 0}, "the next_before of the previous page"),
                           _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}, "at most this many")],
            "responses": _responses({"200": _json({"type": "object", "required": ["items", "next_before", "unread"], "properties": {
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "app": {"type": "string"}, "entity": {"type": "string"},
                    "record_id": {"type": ["integer", "null"]}, "subject": {"type": ["string", "null"]}, "body": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"}, "read": {"type": "boolean"},
                    "href": {"type": ["string", "null"]}}}},
                "next_before": {"type": ["integer", "null"]}, "unread": {"type": "integer"}}})}, "400")}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["meta"], "summary": "This document", "security": [],
            "responses": {"200": _json({"type": "object"})}}},
    }  # fmt: skip


def document(compiled: Compiled) -> dict[str, Any]:
    schemas: dict[str, Any] = dict(SCHEMAS)
    paths: dict[str, Any] = static_paths()
    for app_name, app in sorted(compiled.apps.items()):
        for entity in app.app.entities:
            name = f"{app_name}.{entity.name}"
            schemas[name] = record_schema(entity)
            schemas[f"{name}.create"] = input_schema(entity, creating=True)
            schemas[f"{name}.update"] = input_schema(entity, creating=False)
            paths.update(entity_paths(app_name, entity))
            if entity.workflow is not None:
                paths.update(workflow_paths(app_name, entity))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kiln API", "version": "1", "description": "The JSON API of the apps of this instance (SPEC.md section 8)."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {f"E{code}": _json(_ref("Error"), text) for code, text in ERRORS.items()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token from `run.py token create NAME` or POST /auth/token"}},
        },
    }  # fmt: skip
