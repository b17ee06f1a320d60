"""The chat group robots: ``wecom`` (WeCom, 企业微信) and ``dingtalk`` (DingTalk, 钉钉).

Both post a text message to the group of the robot's webhook URL
(``notifications.channels.wecom: {url}``, ``notifications.channels.dingtalk: {url, secret}``):
WeCom ``{"msgtype": "text", "text": {"content": ..., "mentioned_mobile_list": [PHONE]}}``,
DingTalk ``{"msgtype": "text", "text": {"content": ...}, "at": {"atMobiles": [PHONE]}}``. The
recipient user is @-mentioned by their phone number when they have one; the group gets the
message either way. A DingTalk robot with "加签" (signing) on gets ``timestamp`` and ``sign`` query
parameters: ``sign`` is Base64(HMAC-SHA256(key=secret, "<timestamp>\\n<secret>")), the timestamp
in milliseconds of the wall clock (DingTalk refuses one more than an hour off its own).

Both answer HTTP 200 with ``{"errcode": 0, ...}``; another errcode is an error, retried (rate
limits are the common one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from engine.channels import DeliveryError, Message, Permanent, Session
from engine.channels.http import request


def send_wecom(message: Message, session: Session) -> None:
    text: dict[str, Any] = {"content": message.text}
    phone = message.user.phone if message.user else None
    if phone:
        text["mentioned_mobile_list"] = [phone]
    _post(session, message, {"msgtype": "text", "text": text})


def send_dingtalk(message: Message, session: Session) -> None:
    phone = message.user.phone if message.user else None
    body = {
        "msgtype": "text", "text": {"content": message.text + (f" @{phone}" if phone else "")},
        "at": {"atMobiles": [phone] if phone else [], "isAtAll": False},
    }  # fmt: skip
    secret = message.config.get("secret")
    params = sign(str(secret)) if secret else None
    _post(session, message, body, params)


def sign(secret: str, timestamp_ms: int | None = None) -> dict[str, str]:
    """DingTalk's ``timestamp`` and ``sign`` query parameters (httpx URL-encodes them)."""
    timestamp = str(timestamp_ms if timestamp_ms is not None else round(time.time() * 1000))
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return {"timestamp": timestamp, "sign": base64.b64encode(digest).decode("ascii")}


def _post(
    session: Session, message: Message, body: dict[str, Any], params: dict[str, str] | None = None
) -> None:
    url = str(message.config.get("url") or "")
    if not url:
        raise Permanent(f"app {message.app}: notifications.channels.{message.channel} has no url")
    response = request(session, message, url, body, {}, params=params)
    try:
        answer = response.json()
    except ValueError:
        return  # a 2xx without JSON: nothing says it failed
    code = answer.get("errcode", 0) if isinstance(answer, dict) else 0
    if code not in (0, "0"):
        raise DeliveryError(
            f"{message.channel} robot: errcode {code} {str(answer.get('errmsg', ''))[:200]}".rstrip()
        )
