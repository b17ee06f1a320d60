"""``POST /api/v1/auth/token`` and who is calling.

Every endpoint but this one and the OpenAPI document needs a user: an API token
(``Authorization: Bearer``) or the session cookie of a logged-in browser, both read by
:func:`apps.web.security.current_user`.

Failed logins count against the same lock-out as the login page (:mod:`engine.logins`: per
username and per client address, in the database, so it holds across web processes): a locked
username or address gets 429 with ``Retry-After``, whatever the password.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from apps.api.errors import ApiError, json_object, parse_json
from apps.web import security
from engine import accounts, logins
from engine.accounts import User
from engine.actors import Actor
from engine.errors import NotFound
from engine.instance import Instance


def instance(request: HTTPConnection) -> Instance:
    return request.app.state.instance


def require_user(request: HTTPConnection) -> User:
    user = security.current_user(request)
    if user is None:
        raise ApiError(
            401, "unauthorized", "log in or send an API token: Authorization: Bearer TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return user


def require_actor(request: HTTPConnection, app: str) -> Actor:
    """The caller as an actor of ``app`` (401 without a user, 404 for an unknown app)."""
    require_user(request)
    if app not in instance(request).compiled.apps:
        raise NotFound(f"no app named '{app}'")
    actor = security.actor(request, app)
    assert actor is not None  # require_user found the user
    return actor


def token(request: Request, raw: bytes) -> Response:
    """Exchange a username and password for a new API token."""
    body = json_object(parse_json(raw))
    username, password = body.get("username"), body.get("password")
    fields = {name: "required: a non-empty string" for name, value in (("username", username), ("password", password))
              if not isinstance(value, str) or not value}  # fmt: skip
    if fields:
        raise ApiError(400, "bad_request", "send {\"username\": ..., \"password\": ...}", fields)
    assert isinstance(username, str) and isinstance(password, str)
    engine = instance(request).engine
    address = request.client.host if request.client else None
    if logins.locked(engine, username, address):
        wait = int(logins.LIMITS.window.total_seconds())
        raise ApiError(429, "too_many_attempts", f"too many failed logins; try again in {wait // 60} minutes",
                       headers={"Retry-After": str(wait)})  # fmt: skip
    user = accounts.authenticate(engine, username, password)
    if user is None:
        logins.record_failure(engine, username, address)
        raise ApiError(401, "bad_credentials", "wrong username or password")
    logins.clear(engine, [username])
    return JSONResponse({"token": accounts.create_token(instance(request).engine, user.username, name="api login")})
