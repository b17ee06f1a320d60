"""Notification channels: how one outbox row reaches its recipient (SPEC.md section 5).

Each channel is one function ``send(message, session)`` in a small module: :mod:`.email` (SMTP),
:mod:`.http` (``webhook`` and ``sms`` through an HTTP provider), :mod:`.robots` (the ``wecom`` and
``dingtalk`` group robots). ``in_app`` has no module: delivering it is writing a row
(engine/notifications.py), which engine/delivery.py does in the transaction that marks it sent.

A send returns on success and raises :class:`DeliveryError` when the message may go through on a
later attempt (server down, timeout, 5xx, 429), or :class:`Permanent` when retrying cannot help
(the recipient has no address, a 4xx, a channel that is not configured); the outbox row then ends
``failed`` at once. Every message carries the row's idempotency key (``Message.key``): e-mail as
its ``Message-ID``, HTTP as the ``Idempotency-Key`` and ``X-Kiln-Delivery`` headers.

A :class:`Session` lives for one delivery batch: one HTTP client (connection reuse, timeouts) and
one SMTP connection per server, closed at the end.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

HTTP_TIMEOUT = 10.0  # seconds, connect and read, per request
SMTP_TIMEOUT = 20.0


class DeliveryError(Exception):
    """The send failed; a later attempt may succeed."""


class Permanent(DeliveryError):
    """The send failed and retrying cannot help; the message says what to fix."""


@dataclass(frozen=True)
class Recipient:
    """The user a notification is for, with their addresses."""

    id: int
    username: str
    display_name: str
    email: str | None = None
    phone: str | None = None
    locale: str | None = None


@dataclass(frozen=True)
class Message:
    """One outbox row, ready to send: its payload, the channel's configuration of its app, and
    the recipient (a user for ``notify``; None for a rule's ``webhook``, whose recipient is the URL)."""

    id: int
    key: str
    app: str
    entity: str
    record_id: int | None
    event_key: str
    channel: str
    payload: Mapping[str, Any]
    config: Mapping[str, Any] = field(default_factory=dict)
    user: Recipient | None = None

    @property
    def subject(self) -> str:
        return str(self.payload.get("subject") or "")

    @property
    def body(self) -> str:
        return str(self.payload.get("body") or "")

    @property
    def text(self) -> str:
        """Subject and body as one short text (SMS, chat robots)."""
        subject, body = self.subject, self.body
        if subject and body and subject != body:
            return f"{subject}\n{body}"
        return body or subject

    def need_user(self) -> Recipient:
        if self.user is None:
            raise Permanent(f"the {self.channel} message has no user to go to")
        return self.user


class Session:
    """What the sends of one batch share; use as a context manager."""

    def __init__(self, http_timeout: float | None = None, smtp_timeout: float | None = None) -> None:
        timeout = HTTP_TIMEOUT if http_timeout is None else http_timeout
        self.http = httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": "Kiln"})
        self.smtp_timeout = SMTP_TIMEOUT if smtp_timeout is None else smtp_timeout
        self._smtp: dict[str, smtplib.SMTP] = {}

    def smtp(self, url: str, connect: Callable[[str, float], smtplib.SMTP]) -> smtplib.SMTP:
        if url not in self._smtp:
            self._smtp[url] = connect(url, self.smtp_timeout)
        return self._smtp[url]

    def drop_smtp(self, url: str) -> None:
        """Forget a connection after an error (the next send connects anew)."""
        conn = self._smtp.pop(url, None)
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        for url, conn in list(self._smtp.items()):
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                self.drop_smtp(url)
        self._smtp.clear()
        self.http.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Sender = Callable[[Message, Session], None]
