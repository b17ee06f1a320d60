"""The HTTP channels: ``webhook`` and ``sms`` (through an HTTP provider).

``webhook`` rows come two ways. A rule's ``webhook:`` action queues the request itself (the
recipient is the URL; ``method``, ``headers`` and ``body`` are in the payload). A ``notify`` with
``channels: [webhook]`` goes to the app's ``notifications.channels.webhook.url`` (with its
``headers``) as ``{event, app, entity, record, to: {username, email, phone}, subject, body}``.

``sms`` (``notifications.channels.sms: {provider: webhook, url, headers}``) posts
``{"to": PHONE, "text": TEXT}`` to the provider's URL; a user without a phone fails at once.

Every request carries the idempotency key as ``Idempotency-Key`` and ``X-Kiln-Delivery``. Any 2xx
is success; a timeout, a connection error, 408, 425, 429 and 5xx may pass later (retried); any
other answer (3xx, 4xx) is permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.channels import DeliveryError, Message, Permanent, Session

RETRYABLE = frozenset({408, 425, 429})


def send_webhook(message: Message, session: Session) -> None:
    payload = message.payload
    if payload.get("kind") == "webhook":
        method = str(payload.get("method") or "POST").upper()
        request(
            session,
            message,
            str(payload.get("url") or ""),
            payload.get("body"),
            payload.get("headers") or {},
            method,
        )
        return
    url = str(message.config.get("url") or "")
    if not url:
        raise Permanent(
            f"app {message.app}: notifications.channels.webhook has no url to send notifications to"
        )
    user = message.need_user()
    body = {
        "event": message.event_key, "app": message.app, "entity": message.entity, "record": payload.get("record"),
        "to": {"username": user.username, "email": user.email, "phone": user.phone},
        "subject": message.subject, "body": message.body,
    }  # fmt: skip
    request(session, message, url, body, message.config.get("headers") or {})


def send_sms(message: Message, session: Session) -> None:
    user = message.need_user()
    if not user.phone:
        raise Permanent(f"user {user.username} has no phone number")
    url = str(message.config.get("url") or "")
    if not url:
        raise Permanent(f"app {message.app}: notifications.channels.sms has no url")
    request(
        session, message, url, {"to": user.phone, "text": message.text}, message.config.get("headers") or {}
    )


def request(
    session: Session, message: Message, url: str, body: Any, headers: Mapping[str, Any], method: str = "POST",
    params: Mapping[str, str] | None = None,
) -> httpx.Response:  # fmt: skip
    """Send ``body`` as JSON; returns the 2xx response or raises DeliveryError / Permanent."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise Permanent(f"not an http(s) URL: {url!r}")
    sent = {
        **{str(k): str(v) for k, v in headers.items()},
        "Idempotency-Key": message.key,
        "X-Kiln-Delivery": message.key,
    }
    where = _where(url)
    try:
        # Added to the URL's own query (httpx's params= would replace it: robots keep a token there).
        target = httpx.URL(url).copy_merge_params(dict(params)) if params else url
        response = session.http.request(method, target, json=body, headers=sent)
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"{method} {where}: timed out ({exc.__class__.__name__})") from exc
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{method} {where}: {exc.__class__.__name__}: {exc}") from exc
    if response.is_success:
        return response
    error = f"{method} {where}: HTTP {response.status_code} {response.text[:200]}".rstrip()
    if response.status_code in RETRYABLE or response.status_code >= 500:
        raise DeliveryError(error)
    raise Permanent(error)


def _where(url: str) -> str:
    """The URL without its query (robot URLs carry their access token there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
