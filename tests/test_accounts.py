"""Accounts: argon2 password hashes, users with per-app roles and teams, managers, actors, tokens."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy import select

from engine import accounts
from engine.accounts import AccountError

DEFINITION = """
app: helpdesk
roles:
  agent: {label: 坐席}
  lead: {label: 组长}
teams:
  first_line: {label: 一线}
entities:
  request:
    fields:
      title: {type: text}
"""


@pytest.fixture
def instance(write_definitions, open_instance, db_url: str):
    folder = write_definitions({"helpdesk/app.yaml": DEFINITION})
    return open_instance(folder, db_url)


@pytest.fixture
def engine(instance):
    return instance.engine


def _stored_hash(engine, username: str) -> str:
    users = accounts.tables()["kiln_users"]
    with engine.connect() as conn:
        return conn.execute(select(users.c.password_hash).where(users.c.username == username)).scalar_one()


def test_password_is_stored_as_an_argon2_hash(engine):
    accounts.add_user(engine, "alice", "helpdesk", ["agent"], password="correct horse")
    stored = _stored_hash(engine, "alice")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert accounts.verify_password(engine, "alice", "correct horse")
    assert not accounts.verify_password(engine, "alice", "wrong horse")
    assert not accounts.verify_password(engine, "nobody", "correct horse")


def test_a_generated_password_is_returned_once_and_works(engine):
    user_id, password = accounts.add_user(engine, "bob", "helpdesk", ["agent"])
    assert password and len(password) >= 16
    user = accounts.authenticate(engine, "bob", password)
    assert user is not None and user.id == user_id and user.username == "bob" and not user.is_admin


def test_adding_an_existing_user_adds_roles_and_keeps_the_password(engine):
    first_id, password = accounts.add_user(engine, "carol", "helpdesk", ["agent"])
    again_id, unchanged = accounts.add_user(engine, "carol", "helpdesk", ["lead"], admin=True)
    assert again_id == first_id and unchanged is None
    assert accounts.verify_password(engine, "carol", password)
    actor = accounts.actor_for(engine, "carol", "helpdesk")
    assert actor.roles == {"agent", "lead"} and actor.is_admin
    accounts.add_user(engine, "carol", None, password="reset-it", admin=True)  # how an admin password is reset
    assert accounts.verify_password(engine, "carol", "reset-it") and not accounts.verify_password(engine, "carol", password)


def test_roles_and_teams_are_per_app(engine):
    accounts.add_user(engine, "dan", "helpdesk", ["agent"], team="first_line", lead=True)
    accounts.add_user(engine, "dan", "other", ["viewer"])
    helpdesk = accounts.actor_for(engine, "dan", "helpdesk")
    assert helpdesk.roles == {"agent"} and helpdesk.teams == {"first_line"} and helpdesk.id is not None
    assert accounts.actor_for(engine, "dan", "other").roles == {"viewer"}
    assert accounts.actor_for(engine, "dan", "other").teams == frozenset()
    assert accounts.actor_for(engine, helpdesk.id, "helpdesk").username == "dan"
    assert accounts.team_lead(engine, "helpdesk", "first_line") == "dan"


def test_unknown_role_or_team_is_refused_against_the_definition(instance, engine):
    definition = instance.compiled.app("helpdesk").app
    with pytest.raises(AccountError, match="has no role 'agnet'; did you mean 'agent'"):
        accounts.add_user(engine, "erin", "helpdesk", ["agnet"], definition=definition)
    with pytest.raises(AccountError, match="has no team 'second_line'"):
        accounts.add_user(engine, "erin", "helpdesk", ["agent"], team="second_line", definition=definition)
    assert accounts.get_user(engine, "erin") is None
    accounts.add_user(engine, "erin", "helpdesk", ["agent"], team="first_line", definition=definition)
    teams = accounts.tables()["kiln_teams"]
    with engine.connect() as conn:
        assert conn.execute(select(teams.c.label).where(teams.c.name == "first_line")).scalar_one() == "一线"


def test_manager(engine):
    with pytest.raises(AccountError, match="no user named 'boss'"):
        accounts.add_user(engine, "frank", "helpdesk", ["agent"], manager="boss")
    assert accounts.get_user(engine, "frank") is None  # nothing written
    boss_id, _ = accounts.add_user(engine, "boss", "helpdesk", ["lead"])
    accounts.add_user(engine, "frank", "helpdesk", ["agent"], manager="boss")
    assert accounts.get_user(engine, "frank").manager_id == boss_id
    with pytest.raises(AccountError, match="own manager"):
        accounts.add_user(engine, "boss", "helpdesk", manager="boss")


@pytest.mark.parametrize("name", ["", "with space", "x" * 101])
def test_invalid_usernames(engine, name: str):
    with pytest.raises(AccountError, match="not a valid username"):
        accounts.add_user(engine, name, "helpdesk", ["agent"])


def test_admin_exists(engine):
    assert not accounts.admin_exists(engine)
    accounts.add_user(engine, "admin", None, admin=True)
    assert accounts.admin_exists(engine)


def test_token_is_stored_hashed_and_finds_its_user(engine):
    user_id, _ = accounts.add_user(engine, "gina", "helpdesk", ["agent"])
    token = accounts.create_token(engine, "gina", "erp-sync")
    assert token.startswith("kiln_") and len(token) > 40
    tokens = accounts.tables()["kiln_api_tokens"]
    with engine.connect() as conn:
        row = conn.execute(select(tokens)).mappings().one()
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {str(v) for v in row.values()}
    assert row["name"] == "erp-sync" and row["user_id"] == user_id
    found = accounts.user_for_token(engine, token)
    assert found is not None and found.username == "gina"
    assert accounts.user_for_token(engine, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert accounts.user_for_token(engine, "") is None
    assert accounts.user_for_token(engine, "not-a-token") is None


def test_token_last_use_is_recorded_but_not_on_every_call(engine):
    accounts.add_user(engine, "hank", "helpdesk", ["agent"])
    token = accounts.create_token(engine, "hank")
    tokens = accounts.tables()["kiln_api_tokens"]

    def last_used():
        with engine.connect() as conn:
            return conn.execute(select(tokens.c.last_used_at)).scalar_one()

    t0 = dt.datetime(2026, 2, 18, 9, 0, tzinfo=dt.UTC)
    accounts.user_for_token(engine, token, now=t0)
    assert last_used() == t0
    accounts.user_for_token(engine, token, now=t0 + dt.timedelta(minutes=1))
    assert last_used() == t0
    accounts.user_for_token(engine, token, now=t0 + dt.timedelta(minutes=6))
    assert last_used() == t0 + dt.timedelta(minutes=6)


def test_deactivated_users_cannot_log_in_or_use_tokens(engine):
    accounts.add_user(engine, "ivy", "helpdesk", ["agent"], password="pw-ivy-123")
    token = accounts.create_token(engine, "ivy")
    users = accounts.tables()["kiln_users"]
    with engine.begin() as conn:
        conn.execute(users.update().where(users.c.username == "ivy").values(is_active=False))
    assert accounts.authenticate(engine, "ivy", "pw-ivy-123") is None
    assert accounts.user_for_token(engine, token) is None
    with pytest.raises(AccountError, match="no active user"):
        accounts.actor_for(engine, "ivy", "helpdesk")
    with pytest.raises(AccountError, match="deactivated"):
        accounts.create_token(engine, "ivy")


def test_token_for_an_unknown_user(engine):
    with pytest.raises(AccountError, match="no user named 'ghost'"):
        accounts.create_token(engine, "ghost")
