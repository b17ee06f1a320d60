"""The satisfaction survey's page (S6): ``/-/survey/<token>``, opened from a notification's link
without logging in (engine/surveys.py mints and checks the links).

``GET`` shows the record's number and title, a rating from 1 to the field's ``max`` and a comment
box; ``POST`` writes the answer through the records service as the recipient acting through the
survey, then thanks them. A link that is not valid (tampered, unknown) answers 404, one already
answered or expired 410, each with a page saying so; nothing is changed. A rating out of range
re-renders the form with the error (422).

The form posts with the CSRF token of the visitor's session cookie, as the login form does (the
cookie holds no user, only the token); the link's signed token is what authorises the answer.
The page is in the visitor's chosen language (``?lang=``, the language switch), else the
recipient's own, else the app's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from apps.web import i18n
from apps.web.pages.context import form_of, page, render
from engine import records as records_module
from engine import settings, surveys
from engine.errors import ValidationFailed
from engine.exports import record_title
from engine.instance import Instance


def routes() -> list[BaseRoute]:
    return [Route("/-/survey/{token}", survey_page, methods=["GET", "POST"], name="survey")]


def _now() -> dt.datetime:
    return records_module.utcnow()  # the records service's clock (tests move it)


@page
def survey_page(request: Request) -> Response:
    instance: Instance = request.app.state.instance
    token = request.path_params["token"]
    now = _now()
    system = instance.schema.system
    with instance.engine.connect() as conn:
        try:
            survey = surveys.open_survey(conn, system[surveys.TABLE], settings.session_secret(instance.engine), token, now)
        except surveys.SurveyError as exc:
            return _closed(request, exc, i18n.locale_for(request))
        compiled = instance.compiled.apps.get(survey.app)
        entity = compiled.app.entity(survey.entity) if compiled else None
        field = entity.field(survey.field) if entity else None
        record = instance.records(survey.app).load(conn, entity, survey.record_id) if entity and field else None
        users = system["kiln_users"]
        recipient = conn.execute(select(users.c.locale).where(users.c.id == survey.user_id)).scalar()
        respondent = surveys.respondent(conn, users, survey)
    if compiled is None or entity is None or field is None or record is None:
        error = surveys.SurveyError(404, "invalid", "the record of this survey no longer exists")
        return _closed(request, error, i18n.locale_for(request))
    locale = _locale(request, recipient, compiled.app.locale)
    data: dict[str, Any] = {
        "app_label": compiled.app.label.get(locale), "entity_label": entity.label.get(locale),
        "number": record.get("number") or f"#{record['id']}", "title": record_title(entity, record),
        "field_label": field.label.get(locale), "max": int(field.max or 5), "rating": None, "comment": "",
        "error": None, "token": token,
    }  # fmt: skip
    if request.method != "POST":
        return render(request, "survey/form.html", data, locale=locale)
    form = form_of(request)
    raw, comment = str(form.get("rating") or "").strip(), str(form.get("comment") or "")
    data.update(rating=raw, comment=comment)
    rating = int(raw) if raw.isdigit() else raw
    try:
        surveys.answer(instance.records(survey.app), survey, rating, comment, respondent, _now())
    except surveys.SurveyError as exc:
        return _closed(request, exc, locale)
    except ValidationFailed as exc:
        data["error"] = exc
        return render(request, "survey/form.html", data, status=422, locale=locale)
    return render(request, "survey/done.html", data, locale=locale)


def _locale(request: Request, recipient: str | None, app_locale: str) -> str:
    chosen = request.query_params.get("lang"), request.cookies.get(i18n.COOKIE), recipient, app_locale
    return next((found for found in map(i18n.normalise, chosen) if found), i18n.DEFAULT_LOCALE)


def _closed(request: Request, error: surveys.SurveyError, locale: str) -> Response:
    return render(request, "survey/closed.html", {"reason": error.reason}, status=error.status, locale=locale)
