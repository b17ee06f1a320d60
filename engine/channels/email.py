"""The ``email`` channel: SMTP, with the app's ``notifications.channels.email``.

Configuration: ``smtp`` is a URL, ``smtp://user:password@host:port`` (plain; add ``?starttls=true``
to upgrade with STARTTLS) or ``smtps://...`` (TLS from the start); the port defaults to 25 and 465,
the user name and password are URL-decoded. ``from`` is the sender (default ``kiln@<smtp host>``).
The recipient is the user's e-mail address; a user without one fails the row at once.

The message's ``Message-ID`` is the outbox row's idempotency key, so a copy sent again after a
crash (see docs/notifications.md) carries the same id and mail clients and servers can drop it.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

from engine.channels import DeliveryError, Message, Permanent, Session


def send(message: Message, session: Session) -> None:
    user = message.need_user()
    if not user.email:
        raise Permanent(f"user {user.username} has no e-mail address")
    url = str(message.config.get("smtp") or "")
    if not url:
        raise Permanent(f"app {message.app}: notifications.channels.email has no smtp URL")
    sender = str(message.config.get("from") or f"kiln@{urlsplit(url).hostname or 'localhost'}")
    mail = EmailMessage()
    mail["Subject"] = message.subject or (message.body.splitlines() or [message.app])[0][:100]
    mail["From"] = sender
    mail["To"] = user.email
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = f"<{message.key}@{sender.rpartition('@')[2] or 'kiln'}>"
    mail["X-Kiln-Delivery"] = message.key
    mail.set_content(message.body or message.subject)
    try:
        session.smtp(url, connect).send_message(mail)
    except smtplib.SMTPRecipientsRefused as exc:
        session.drop_smtp(url)
        code, reply = next(iter(exc.recipients.values()), (0, b""))
        error = f"the SMTP server refused {user.email}: {code} {_reply(reply)}"
        raise (Permanent if code >= 500 else DeliveryError)(error) from exc
    except smtplib.SMTPResponseException as exc:
        session.drop_smtp(url)
        error = f"SMTP {exc.smtp_code}: {_reply(exc.smtp_error)}"
        raise (Permanent if 500 <= exc.smtp_code < 600 else DeliveryError)(error) from exc
    except (smtplib.SMTPException, OSError) as exc:
        session.drop_smtp(url)
        raise DeliveryError(f"SMTP {_where(url)}: {exc.__class__.__name__}: {exc}") from exc


def connect(url: str, timeout: float) -> smtplib.SMTP:
    """An open, logged-in connection to the server of an ``smtp://`` or ``smtps://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise Permanent(f"the smtp URL must start with smtp:// or smtps://, not {parts.scheme or url!r}")
    host = parts.hostname or "localhost"
    if parts.scheme == "smtps":
        conn: smtplib.SMTP = smtplib.SMTP_SSL(
            host, parts.port or 465, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = smtplib.SMTP(host, parts.port or 25, timeout=timeout)
        if (parse_qs(parts.query).get("starttls") or ["false"])[0].lower() in ("1", "true", "yes"):
            conn.starttls(context=ssl.create_default_context())
    if parts.username:
        conn.login(unquote(parts.username), unquote(parts.password or ""))
    return conn


def _where(url: str) -> str:
    """host:port of the URL, without the credentials (errors are shown on pages)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (465 if parts.scheme == 'smtps' else 25)}"


def _reply(text: bytes | str) -> str:
    return (text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))[:300]
