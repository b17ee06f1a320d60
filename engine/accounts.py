"""Users, their roles and teams per app, passwords and API tokens.

Passwords are stored as argon2id hashes (argon2-cffi); API tokens only as the SHA-256 of the
token, so a copy of the database lets no one log in or call the API. A token is random (256 bits),
so a plain hash is enough: a slow hash only matters for guessable secrets like passwords.

Roles and teams are per app (``kiln_user_roles``, ``kiln_teams``): a user may be a dispatcher in
one app and a reporter in another. ``add_user`` is also how an existing user gains roles, a team,
a manager or a new password (``run.py user add`` on an existing name updates it), so one command
covers adding people and resetting the admin's password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, MetaData, Table, delete, insert, select, update

from engine.actors import Actor
from engine.audit import record_change
from engine.db import read, write
from engine.errors import did_you_mean
from engine.model import App
from engine.tables import system_tables

USERNAME_RE = re.compile(r"^[\w.@-]{1,100}$")
TOKEN_PREFIX = "kiln_"
# A token's last use is written at most this often, so an API call is not a write per request.
LAST_USED_EVERY = dt.timedelta(minutes=5)

_hasher = PasswordHasher()


class AccountError(ValueError):
    """A refused account change; the message says what to do instead."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    is_admin: bool
    is_active: bool
    manager_id: int | None = None
    locale: str | None = None
    email: str | None = None
    phone: str | None = None


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a wrong username takes as long as a
    wrong password (no probing for which usernames exist)."""
    return _hasher.hash(secrets.token_urlsafe(16))


@cache
def tables() -> dict[str, Table]:
    """The system tables (the same definitions the compiled schema holds, for Core queries)."""
    return system_tables(MetaData())


def _users() -> Table:
    return tables()["kiln_users"]


def _user(row: object) -> User:
    m = row._mapping  # type: ignore[attr-defined]
    return User(
        m["id"], m["username"], m["display_name"], bool(m["is_admin"]), bool(m["is_active"]), m["manager_id"],
        m["locale"], m["email"], m["phone"],
    )  # fmt: skip


def generate_password() -> str:
    """16 URL-safe characters (96 bits): printed once, typed rarely."""
    return secrets.token_urlsafe(12)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


# -- lookups ---------------------------------------------------------------------------------------


def find_user(conn: Connection, username_or_id: str | int) -> User | None:
    users = _users()
    column = users.c.id if isinstance(username_or_id, int) else users.c.username
    row = conn.execute(select(users).where(column == username_or_id)).first()
    return _user(row) if row else None


def get_user(engine: Engine, username_or_id: str | int) -> User | None:
    with read(engine) as conn:
        return find_user(conn, username_or_id)


def roles_of(conn: Connection, user_id: int, app: str) -> frozenset[str]:
    roles = tables()["kiln_user_roles"]
    rows = conn.execute(select(roles.c.role).where(roles.c.user_id == user_id, roles.c.app == app))
    return frozenset(r for (r,) in rows)


def teams_of(conn: Connection, user_id: int, app: str) -> frozenset[str]:
    teams, members = tables()["kiln_teams"], tables()["kiln_team_members"]
    rows = conn.execute(
        select(teams.c.name).join(members, members.c.team_id == teams.c.id).where(members.c.user_id == user_id, teams.c.app == app)
    )
    return frozenset(t for (t,) in rows)


def actor_for(engine: Engine, username_or_id: str | int, app: str) -> Actor:
    """The acting user in ``app``: their roles and teams there. Raises AccountError when the user
    does not exist or is deactivated."""
    with read(engine) as conn:
        user = find_user(conn, username_or_id)
        if user is None or not user.is_active:
            raise AccountError(f"no active user {username_or_id!r}")
        return actor_of(user, roles_of(conn, user.id, app), teams_of(conn, user.id, app))


def actor_of(user: User, roles: frozenset[str], teams: frozenset[str]) -> Actor:
    return Actor(user.id, user.username, roles=roles, teams=teams, is_admin=user.is_admin, locale=user.locale)


def roles_by_app(engine: Engine, user_id: int) -> dict[str, frozenset[str]]:
    """Every app the user holds a role in, with those roles (one query: a page needs the roles of
    its own app and the list of apps for the app switcher)."""
    roles = tables()["kiln_user_roles"]
    found: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for app, role in conn.execute(select(roles.c.app, roles.c.role).where(roles.c.user_id == user_id)):
            found.setdefault(app, set()).add(role)
    return {app: frozenset(names) for app, names in found.items()}


def teams_in(engine: Engine, user_id: int, app: str) -> frozenset[str]:
    with engine.connect() as conn:
        return teams_of(conn, user_id, app)


def admin_exists(engine: Engine) -> bool:
    users = _users()
    with read(engine) as conn:
        return conn.execute(select(users.c.id).where(users.c.is_admin.is_(True)).limit(1)).first() is not None


# -- adding and changing users ---------------------------------------------------------------------


def check_membership(definition: App, roles: Iterable[str], team: str | None) -> None:
    """Refuse roles and a team the app does not define, naming the valid ones."""
    for role in roles:
        if role not in definition.role_names:
            raise AccountError(f"app {definition.name} has no role '{role}'{did_you_mean(role, definition.role_names)}")
    if team is not None and team not in definition.team_names:
        raise AccountError(f"app {definition.name} has no team '{team}'{did_you_mean(team, definition.team_names)}")


def add_user(
    engine: Engine,
    username: str,
    app: str | None,
    roles: Iterable[str] = (),
    team: str | None = None,
    manager: str | None = None,
    password: str | None = None,
    admin: bool = False,
    display_name: str | None = None,
    *,
    lead: bool = False,
    definition: App | None = None,
    password_hash: str | None = None,
    now: dt.datetime | None = None,
    email: str | None = None,
    phone: str | None = None,
    locale: str | None = None,
    by: Actor | None = None,
) -> tuple[int, str | None]:
    """Add a user, or update an existing one; returns (user id, password).

    A new user gets ``password`` or a generated one, returned so it can be shown once. An existing
    user keeps their password unless one is given, and gains (never loses) the roles, team, manager
    and admin flag named (an e-mail or phone given replaces theirs); the returned password is then
    None when unchanged. With ``definition`` (the app's model) the roles and the team are checked
    against it; ``lead`` makes the user the team's lead. ``password_hash`` (from
    :func:`hash_password`) stands in for ``password`` where many users share one known password
    (demo data), so it is hashed once, not once per user.
    With ``by`` (the administrator acting) the change is written to the audit trail in the same
    transaction; the command line and demo data pass none.
    """
    roles = [r for r in roles if r]
    if not USERNAME_RE.match(username):
        raise AccountError(f"'{username}' is not a valid username: use letters, digits and . _ @ - (at most 100)")
    if (roles or team) and not app:
        raise AccountError("roles and teams belong to an app: give --app APP")
    if lead and not team:
        raise AccountError("--lead needs --team")
    if definition is not None:
        check_membership(definition, roles, team)
    now = now or dt.datetime.now(dt.UTC)
    users = _users()
    with write(engine) as conn:
        manager_id = None
        if manager is not None:
            found = find_user(conn, manager)
            if found is None:
                raise AccountError(f"no user named '{manager}' to be the manager; add them first")
            manager_id = found.id
        existing = find_user(conn, username)
        if existing is None:
            if not password_hash:
                password = password or generate_password()
                password_hash = hash_password(password)
            user_id = conn.execute(
                insert(users).values(
                    username=username, display_name=display_name or username, password_hash=password_hash,
                    is_admin=admin, is_active=True, manager_id=manager_id, created_at=now, email=email or None,
                    phone=phone or None, locale=locale or None,
                ).returning(users.c.id)
            ).scalar_one()  # fmt: skip
            if by is not None:
                created = {"username": username, "display_name": display_name or username, "is_admin": admin,
                           "email": email or None, "phone": phone or None, "locale": locale or None, "manager": manager}
                _audit(conn, by, "user", user_id, "create", {k: [None, v] for k, v in created.items() if v}, now)
        else:
            user_id = existing.id
            if manager_id == user_id:
                raise AccountError(f"{username} cannot be their own manager")
            changes: dict[str, object] = {}
            if password or password_hash:
                changes["password_hash"] = hash_password(password) if password else password_hash
            if admin:
                changes["is_admin"] = True
            if display_name:
                changes["display_name"] = display_name
            if manager_id is not None:
                changes["manager_id"] = manager_id
            if email:
                changes["email"] = email
            if phone:
                changes["phone"] = phone
            if changes:
                conn.execute(update(users).where(users.c.id == user_id).values(**changes))
                if by is not None:
                    shown = {k: ([None, "(reset)"] if k == "password_hash" else [None, v]) for k, v in changes.items()}
                    _audit(conn, by, "user", user_id, "update", shown, now)
        if app:
            _grant_roles(conn, user_id, app, roles)
            if team:
                team_id = _team_id(conn, app, team, definition)
                _join_team(conn, team_id, user_id, lead)
    return user_id, password


def set_password(engine: Engine, username: str, password: str) -> None:
    users = _users()
    with write(engine) as conn:
        result = conn.execute(update(users).where(users.c.username == username).values(password_hash=hash_password(password)))
        if result.rowcount != 1:
            raise AccountError(f"no user named '{username}'")


def _grant_roles(conn: Connection, user_id: int, app: str, roles: Iterable[str]) -> None:
    table = tables()["kiln_user_roles"]
    missing = sorted(set(roles) - roles_of(conn, user_id, app))
    if missing:
        conn.execute(insert(table), [{"user_id": user_id, "app": app, "role": r} for r in missing])


def _team_id(conn: Connection, app: str, team: str, definition: App | None) -> int:
    """The team's row, created on first use (teams are defined in YAML, members join here)."""
    teams = tables()["kiln_teams"]
    found = conn.execute(select(teams.c.id).where(teams.c.app == app, teams.c.name == team)).scalar()
    if found is not None:
        return int(found)
    label = next((t.label.get() for t in definition.teams if t.name == team), team) if definition else team
    return int(conn.execute(insert(teams).values(app=app, name=team, label=label).returning(teams.c.id)).scalar_one())


def _join_team(conn: Connection, team_id: int, user_id: int, lead: bool) -> None:
    teams, members = tables()["kiln_teams"], tables()["kiln_team_members"]
    joined = conn.execute(select(members.c.user_id).where(members.c.team_id == team_id, members.c.user_id == user_id)).first()
    if joined is None:
        conn.execute(insert(members).values(team_id=team_id, user_id=user_id))
    if lead:
        conn.execute(update(teams).where(teams.c.id == team_id).values(lead_id=user_id))


def team_lead(engine: Engine, app: str, team: str) -> str | None:
    """The username of a team's lead, if it has one."""
    teams, users = tables()["kiln_teams"], _users()
    with read(engine) as conn:
        return conn.execute(
            select(users.c.username).join(teams, teams.c.lead_id == users.c.id).where(teams.c.app == app, teams.c.name == team)
        ).scalar()


# -- passwords -------------------------------------------------------------------------------------


def authenticate(engine: Engine, username: str, password: str) -> User | None:
    """The active user whose password this is, else None. Rehashes a hash made with older
    parameters, so raising argon2's cost later upgrades hashes as people log in."""
    users = _users()
    with read(engine) as conn:
        row = conn.execute(select(users, users.c.password_hash.label("hash")).where(users.c.username == username)).first()
    stored = row._mapping["hash"] if row else None
    try:
        _hasher.verify(stored or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or stored is None or not row._mapping["is_active"]:
        return None
    if _hasher.check_needs_rehash(stored):
        with write(engine) as conn:
            conn.execute(update(users).where(users.c.id == row._mapping["id"]).values(password_hash=hash_password(password)))
    return _user(row)


def verify_password(engine: Engine, username: str, password: str) -> bool:
    return authenticate(engine, username, password) is not None


# -- API tokens ------------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, username: str, name: str = "", now: dt.datetime | None = None, by: Actor | None = None) -> str:
    """A new API token for the user; only its hash is stored, so it can be shown this once. With
    ``by`` (an administrator on the admin pages) the creation is audited."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with write(engine) as conn:
        user = find_user(conn, username)
        if user is None:
            raise AccountError(f"no user named '{username}'; add them with: python run.py user add {username} --app APP --roles ROLE")
        if not user.is_active:
            raise AccountError(f"user '{username}' is deactivated")
        conn.execute(
            insert(tables()["kiln_api_tokens"]).values(
                user_id=user.id, name=name, token_hash=token_hash(token), created_at=now or dt.datetime.now(dt.UTC)
            )
        )
        if by is not None:
            _audit(conn, by, "user", user.id, "create_token", {"token": [None, name or "(unnamed)"]}, now)
    return token


def user_for_token(engine: Engine, token: str, now: dt.datetime | None = None) -> User | None:
    """The active user a token belongs to, else None."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    tokens, users = tables()["kiln_api_tokens"], _users()
    with read(engine) as conn:
        row = conn.execute(
            select(users, tokens.c.id.label("token_id"), tokens.c.last_used_at)
            .join(tokens, tokens.c.user_id == users.c.id)
            .where(tokens.c.token_hash == token_hash(token))
        ).first()
    if row is None or not row._mapping["is_active"]:
        return None
    now = now or dt.datetime.now(dt.UTC)
    last = row._mapping["last_used_at"]
    if last is None or now - last > LAST_USED_EVERY:
        with write(engine) as conn:
            conn.execute(update(tokens).where(tokens.c.id == row._mapping["token_id"]).values(last_used_at=now))
    return _user(row)


def revoke_token(engine: Engine, user_id: int, token_id: int, by: Actor, now: dt.datetime | None = None) -> None:
    """Delete one of the user's tokens: a request carrying it is anonymous from then on."""
    tokens = tables()["kiln_api_tokens"]
    with write(engine) as conn:
        name = conn.execute(select(tokens.c.name).where(tokens.c.id == token_id, tokens.c.user_id == user_id)).first()
        if name is None:
            raise AccountError("no such token; it may have been revoked already")
        conn.execute(delete(tokens).where(tokens.c.id == token_id))
        _audit(conn, by, "user", user_id, "revoke_token", {"token": [name[0] or f"#{token_id}", None]}, now)


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None


def tokens_of(engine: Engine, user_id: int) -> list[Token]:
    tokens = tables()["kiln_api_tokens"]
    with read(engine) as conn:
        rows = conn.execute(
            select(tokens.c.id, tokens.c.name, tokens.c.created_at, tokens.c.last_used_at)
            .where(tokens.c.user_id == user_id)
            .order_by(tokens.c.id)
        )
        return [Token(*row) for row in rows]


# -- changes made by an administrator (the admin pages) ----------------------------------------------
#
# Each takes ``by``, the administrator acting, and writes its audit entry (app "-", entity "user" or
# "team") in the same transaction as the change, so a change and its entry commit together.

EDITABLE = ("display_name", "email", "phone", "locale", "is_active", "is_admin")


def _audit(conn: Connection, by: Actor, entity: str, record_id: int, action: str, changes: dict, now: dt.datetime | None) -> None:
    record_change(
        conn, tables()["kiln_audit"], app="-", entity=entity, record_id=record_id, action=action, actor=by,
        at=now or dt.datetime.now(dt.UTC), changes=changes,
    )  # fmt: skip


def list_users(engine: Engine, after: str | None = None, limit: int = 50, search: str = "") -> list[User]:
    """One page of users by username, after ``after`` (keyset: the unique username index, never
    OFFSET); ``limit + 1`` rows are read so the caller knows whether there is a next page."""
    users = _users()
    query = select(users).order_by(users.c.username).limit(limit + 1)
    if after:
        query = query.where(users.c.username > after)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(users.c.username.ilike(pattern, escape="\\") | users.c.display_name.ilike(pattern, escape="\\"))
    with read(engine) as conn:
        return [_user(row) for row in conn.execute(query)]


def update_user(
    engine: Engine, user_id: int, by: Actor, *, manager: str | None = None, password: str | None = None,
    now: dt.datetime | None = None, **fields: object,
) -> dict[str, list]:  # fmt: skip
    """Change the fields of :data:`EDITABLE` given in ``fields``, the manager (a username; "" for
    none) and the password; returns the audited changes ``{field: [before, after]}``."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise AccountError(f"cannot change {', '.join(sorted(unknown))}; editable: {', '.join(EDITABLE)}")
    if fields.get("display_name") is not None and not str(fields["display_name"]).strip():
        raise AccountError("the display name cannot be empty")
    users = _users()
    with write(engine) as conn:
        user = find_user(conn, user_id)
        if user is None:
            raise AccountError(f"no user with id {user_id}")
        if user_id == by.id and (fields.get("is_admin") is False or fields.get("is_active") is False):
            # An administrator locking themselves out could leave an instance with none.
            raise AccountError("you cannot remove your own admin rights or deactivate yourself; ask another administrator")
        values: dict[str, object] = {k: (v or None) if k in ("email", "phone", "locale") else v for k, v in fields.items()}
        if manager is not None:
            found = find_user(conn, manager) if manager else None
            if manager and found is None:
                raise AccountError(f"no user named '{manager}' to be the manager")
            if found is not None and found.id == user_id:
                raise AccountError(f"{user.username} cannot be their own manager")
            values["manager_id"] = found.id if found else None
        changes = {k: [getattr(user, k), v] for k, v in values.items() if getattr(user, k) != v}
        if password:
            values["password_hash"] = hash_password(password)
            changes["password"] = [None, "(reset)"]
        if changes:
            conn.execute(update(users).where(users.c.id == user_id).values(**values))
            _audit(conn, by, "user", user_id, "update", changes, now)
        return changes


def set_locale(engine: Engine, user_id: int, locale: str) -> None:
    """The user's own choice of language (the language switch); not an audited admin change."""
    users = _users()
    with write(engine) as conn:
        conn.execute(update(users).where(users.c.id == user_id).values(locale=locale))


def grant_role(engine: Engine, user_id: int, definition: App, role: str, by: Actor, now: dt.datetime | None = None) -> None:
    check_membership(definition, [role], None)
    with write(engine) as conn:
        if role not in roles_of(conn, user_id, definition.name):
            _grant_roles(conn, user_id, definition.name, [role])
            _audit(conn, by, "user", user_id, "grant_role", {"role": [None, f"{definition.name}:{role}"]}, now)


def revoke_role(engine: Engine, user_id: int, app: str, role: str, by: Actor, now: dt.datetime | None = None) -> None:
    table = tables()["kiln_user_roles"]
    with write(engine) as conn:
        done = conn.execute(delete(table).where(table.c.user_id == user_id, table.c.app == app, table.c.role == role))
        if done.rowcount:
            _audit(conn, by, "user", user_id, "revoke_role", {"role": [f"{app}:{role}", None]}, now)


@dataclass(frozen=True)
class Team:
    app: str
    name: str
    label: str
    members: tuple[User, ...]
    lead: str | None


def team(engine: Engine, definition: App, name: str) -> Team:
    """A team the app defines, with its members by username (no row yet: no members)."""
    check_membership(definition, [], name)
    teams, members, users = tables()["kiln_teams"], tables()["kiln_team_members"], _users()
    label = next(t.label.get(definition.locale) for t in definition.teams if t.name == name)
    with read(engine) as conn:
        row = conn.execute(select(teams.c.id, teams.c.lead_id).where(teams.c.app == definition.name, teams.c.name == name)).first()
        if row is None:
            return Team(definition.name, name, label, (), None)
        people = tuple(
            _user(r)
            for r in conn.execute(
                select(users).join(members, members.c.user_id == users.c.id).where(members.c.team_id == row.id).order_by(users.c.username)
            )
        )
    lead = next((u.username for u in people if u.id == row.lead_id), None)
    return Team(definition.name, name, label, people, lead)


def join_team(engine: Engine, definition: App, name: str, username: str, by: Actor, now: dt.datetime | None = None) -> None:
    check_membership(definition, [], name)
    with write(engine) as conn:
        user = find_user(conn, username)
        if user is None:
            raise AccountError(f"no user named '{username}'")
        team_id = _team_id(conn, definition.name, name, definition)
        if name not in teams_of(conn, user.id, definition.name):
            _join_team(conn, team_id, user.id, lead=False)
            _audit(conn, by, "team", team_id, "add_member", {"member": [None, username]}, now)


def leave_team(engine: Engine, definition: App, name: str, username: str, by: Actor, now: dt.datetime | None = None) -> None:
    """Remove a member; a lead who leaves is no longer the lead."""
    teams, members = tables()["kiln_teams"], tables()["kiln_team_members"]
    with write(engine) as conn:
        user = find_user(conn, username)
        row = conn.execute(select(teams.c.id, teams.c.lead_id).where(teams.c.app == definition.name, teams.c.name == name)).first()
        if user is None or row is None:
            raise AccountError(f"'{username}' is not a member of {name}")
        done = conn.execute(delete(members).where(members.c.team_id == row.id, members.c.user_id == user.id))
        if done.rowcount:
            if row.lead_id == user.id:
                conn.execute(update(teams).where(teams.c.id == row.id).values(lead_id=None))
            _audit(conn, by, "team", row.id, "remove_member", {"member": [username, None]}, now)


def set_team_lead(engine: Engine, definition: App, name: str, username: str | None, by: Actor,
                  now: dt.datetime | None = None) -> None:  # fmt: skip
    """Make a member the lead (joining them first if needed), or clear the lead with None."""
    check_membership(definition, [], name)
    teams, users = tables()["kiln_teams"], _users()
    with write(engine) as conn:
        team_id = _team_id(conn, definition.name, name, definition)
        before = conn.execute(
            select(users.c.username).join(teams, teams.c.lead_id == users.c.id).where(teams.c.id == team_id)
        ).scalar()
        if username:
            user = find_user(conn, username)
            if user is None:
                raise AccountError(f"no user named '{username}'")
            _join_team(conn, team_id, user.id, lead=True)
        else:
            conn.execute(update(teams).where(teams.c.id == team_id).values(lead_id=None))
        if before != (username or None):
            _audit(conn, by, "team", team_id, "set_lead", {"lead": [before, username or None]}, now)
