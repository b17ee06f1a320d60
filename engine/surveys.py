"""Satisfaction surveys (S6): the ``{survey_url}`` of a notification, a link that works without
login, once, until it expires (docs/notifications.md#satisfaction-surveys).

1. **Minted with the notification.** A ``notify`` whose template (or ``message``) uses
   ``{survey_url}`` calls :func:`mint` for each recipient, in the change's transaction: one
   ``kiln_surveys`` row per (event, recipient), shared by the recipient's channels, holding the
   record, the rating field, the comment field (if the template names one) and ``expires_at``.
2. **Filled at delivery.** The outbox payload carries only the row's id; the deliverer turns it
   into the link (:func:`fill`): ``<base URL>/-/survey/<token>``, the token being the id signed
   with the instance's secret (itsdangerous, as the session cookies are). The token is not stored
   anywhere: the row keeps its SHA-256 only, and an outbox row or a copied database gives no link.
3. **Answered once.** :func:`open_survey` checks the signature, the hash, ``used_at`` and
   ``expires_at``; :func:`answer` claims the row (``used_at`` set where it is NULL: a second
   answer finds nothing to claim) and writes the rating through the records service in the same
   transaction, so the change, its audit entry and what the rules do about it commit together
   with the claim, or none of it does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.actors import Actor
from engine.errors import ValidationFailed
from engine.messages import Msg
from engine.model import Entity, Field, Template

if TYPE_CHECKING:
    from engine.records import Records

PLACEHOLDER = "{survey_url}"
TABLE = "kiln_surveys"
PATH = "/-/survey/"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"  # what `python run.py` serves
COMMENT_MAX = 2000
EXPIRES = dt.timedelta(days=14)  # a template's survey.expires overrides it
SALT = "kiln.survey"


class SurveyError(Exception):
    """A link that cannot be answered: ``status`` 404 (unknown or tampered) or 410 (used, expired)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # "invalid", "used" or "expired"


@dataclass(frozen=True)
class Survey:
    """One link's row."""

    id: int
    app: str
    entity: str
    record_id: int
    user_id: int
    field: str
    comment_field: str | None
    expires_at: dt.datetime
    used_at: dt.datetime | None


def base_url() -> str:
    """Where users reach this instance: ``KILN_BASE_URL`` (``run.py serve`` sets it from its
    ``--host`` and ``--port`` when unset), else :data:`DEFAULT_BASE_URL`; no trailing slash."""
    return (os.environ.get("KILN_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def uses_survey(*texts: Any) -> bool:
    return any(PLACEHOLDER in str(t) for t in texts if t)


def rating_field(entity: Entity, template: Template | None) -> Field | None:
    """The field a survey's rating goes to: the template's ``survey.field``, else the entity's
    first ``rating`` field."""
    name = template.survey.field if template is not None and template.survey is not None else None
    if name is not None:
        return entity.field(name)
    return next((f for f in entity.active_fields if f.type == "rating"), None)


# -- minting and filling ---------------------------------------------------------------------------


def token(secret: str, survey_id: int) -> str:
    return URLSafeSerializer(secret, salt=SALT).dumps(survey_id)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def mint(
    conn: Connection, table: Table, secret: str, *, app: str, entity: str, record_id: int, user_id: int,
    event_key: str, field: str, comment_field: str | None, now: dt.datetime, expires: dt.timedelta,
) -> int:  # fmt: skip
    """The survey of (event, recipient): made now, or the one a replay of the event made."""
    values = {
        "app": app, "entity": entity, "record_id": record_id, "user_id": user_id, "event_key": event_key[:300],
        "field": field, "comment_field": comment_field, "created_at": now, "expires_at": now + expires,
    }  # fmt: skip
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(values).on_conflict_do_nothing(index_elements=["event_key", "user_id"])
    made = conn.execute(statement.returning(table.c.id)).scalar()
    if made is None:
        query = select(table.c.id).where(table.c.event_key == values["event_key"], table.c.user_id == user_id)
        return int(conn.execute(query).scalar_one())
    conn.execute(update(table).where(table.c.id == made).values(token_hash=digest(token(secret, made))))
    return int(made)


def fill(payload: Mapping[str, Any], secret: str, base: str | None = None) -> dict[str, Any]:
    """The payload with ``{survey_url}`` replaced by the link of its survey (``payload["survey"]``,
    an id); a payload without one is returned as it is."""
    survey_id = payload.get("survey")
    if survey_id is None:
        return dict(payload)
    url = f"{base or base_url()}{PATH}{token(secret, int(survey_id))}"
    filled = dict(payload)
    for key in ("subject", "body"):
        if isinstance(filled.get(key), str):
            filled[key] = filled[key].replace(PLACEHOLDER, url)
    filled["survey_url"] = url
    return filled


# -- answering -------------------------------------------------------------------------------------


def open_survey(conn: Connection, table: Table, secret: str, text: str, now: dt.datetime) -> Survey:
    """The survey of a link's token if it may be answered now; raises :class:`SurveyError`."""
    try:
        survey_id = URLSafeSerializer(secret, salt=SALT).loads(text)
    except BadSignature:
        raise SurveyError(404, "invalid", "this survey link is not valid") from None
    if not isinstance(survey_id, int):
        raise SurveyError(404, "invalid", "this survey link is not valid")
    row = conn.execute(select(table).where(table.c.id == survey_id)).mappings().first()
    if row is None or not row["token_hash"] or not hmac.compare_digest(row["token_hash"], digest(text)):
        raise SurveyError(404, "invalid", "this survey link is not valid")
    survey = Survey(
        row["id"], row["app"], row["entity"], row["record_id"], row["user_id"], row["field"], row["comment_field"],
        row["expires_at"], row["used_at"],
    )  # fmt: skip
    if survey.used_at is not None:
        raise SurveyError(410, "used", "this survey has already been answered")
    if survey.expires_at <= now:
        raise SurveyError(410, "expired", "this survey link has expired")
    return survey


def answer(
    records: Records, survey: Survey, rating: Any, comment: str | None, respondent: Actor, now: dt.datetime
) -> dict[str, Any]:
    """Write the answer: claim the survey and set the record's rating (and comment field), as
    ``respondent`` acting through the survey (no role needed; the history names both). Returns
    the record; raises :class:`SurveyError` when another answer claimed it first, and
    ValidationFailed (nothing written) for a rating out of range or a comment too long."""
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > COMMENT_MAX:
        raise ValidationFailed(Msg("the comment is longer than %(n)s characters", n=COMMENT_MAX), {"comment": "too long"})
    if rating in (None, ""):
        raise ValidationFailed(Msg("choose a rating"), {survey.field: "required"})
    table = records.schema.system[TABLE]
    entity = records.entity(survey.entity)
    changes: dict[str, Any] = {survey.field: rating}
    if comment is not None and survey.comment_field:
        changes[survey.comment_field] = comment
    with records.transaction() as conn:
        claim = (
            update(table)
            .where(table.c.id == survey.id, table.c.used_at.is_(None), table.c.expires_at > now)
            .values(used_at=now)
        )
        if conn.execute(claim).rowcount != 1:
            raise SurveyError(410, "used", "this survey has already been answered")
        note = comment if not survey.comment_field else None
        return records.update_in(conn, entity, survey.record_id, changes, None, respondent, now, note)


def respondent(conn: Connection, users: Table, survey: Survey) -> Actor:
    """Who answers: the recipient, acting through the survey (``rule`` "survey" in the history)."""
    username = conn.execute(select(users.c.username).where(users.c.id == survey.user_id)).scalar()
    return Actor(survey.user_id, username or f"user {survey.user_id}", is_system=True, rule="survey")
