"""The tables an app model compiles to.

Each entity is one table ``<app>__<entity>`` with a column per single-valued field, the system
columns, and one ``entered_<state>_at`` per workflow state. Multi-valued fields (multiselect,
tags, ``multiple: true`` links, users, files) live in child tables ``<app>__<entity>__<field>``,
one row per value. Every column a list can filter or sort on gets an index ending in ``id``, so a
filtered keyset page reads the index in order and stops after one page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeEngine

from engine.db import UTCDateTime
from engine.model import App, Entity, Field
from engine.values import DECIMAL_DIGITS

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
IdType = BigInteger().with_variant(Integer(), "sqlite")

SYSTEM_COLUMNS = ("id", "number", "state", "created_at", "created_by", "updated_at", "version")
FILE_ID_LENGTH = 32


def table_name(app: str, entity: str) -> str:
    return f"{app}__{entity}"


def child_table_name(app: str, entity: str, field_name: str) -> str:
    return f"{app}__{entity}__{field_name}"


def entered_column(state: str) -> str:
    return f"entered_{state}_at"


COMPUTED_SCALE = 6  # decimal places of computed number and duration columns


def computed_column_type(value_type: str) -> TypeEngine:
    return {
        "number": Numeric(24, COMPUTED_SCALE),
        "integer": BigInteger(),
        "boolean": Boolean(),
        "date": Date(),
        "datetime": UTCDateTime(),
        "duration": Numeric(24, COMPUTED_SCALE),  # seconds
    }.get(value_type, Text())


def value_type(f: Field, computed_type: str | None = None) -> TypeEngine:
    """The column type that holds one value of field ``f``."""
    t = f.type
    if t in ("text", "email", "phone", "url", "textarea", "richtext", "location", "tags"):
        return Text()
    if t in ("select", "multiselect", "team"):
        return String(100)
    if t in ("integer",):
        return BigInteger()
    if t == "rating":
        return Integer()
    if t == "decimal":
        return Numeric(DECIMAL_DIGITS, f.scale)
    if t == "boolean":
        return Boolean()
    if t == "date":
        return Date()
    if t == "datetime":
        return UTCDateTime()
    if t == "time":
        return Time()
    if t in ("user",):
        return IdType
    if t == "link":
        return IdType
    if t in ("file", "image"):
        return String(FILE_ID_LENGTH)
    if t == "computed":
        return computed_column_type(computed_type or "text")
    raise ValueError(f"no column type for field type {t!r}")


def system_tables(metadata: MetaData) -> dict[str, Table]:
    """The instance-wide tables: users, teams, roles, tokens, audit, files, sequences, migrations,
    settings, failed logins, saved views and the tables of rules."""
    users = Table(
        "kiln_users", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("username", String(100), nullable=False, unique=True),
        Column("display_name", String(200), nullable=False, default=""),
        Column("password_hash", String(200), nullable=True),
        Column("email", String(200), nullable=True),
        Column("phone", String(50), nullable=True),
        Column("locale", String(10), nullable=True),
        Column("is_admin", Boolean, nullable=False, default=False),
        Column("is_active", Boolean, nullable=False, default=True),
        Column("manager_id", IdType, ForeignKey("kiln_users.id"), nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
    )  # fmt: skip
    teams = Table(
        "kiln_teams", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app", String(64), nullable=False),
        Column("name", String(100), nullable=False),
        Column("label", String(200), nullable=False, default=""),
        Column("lead_id", IdType, ForeignKey("kiln_users.id"), nullable=True),
        UniqueConstraint("app", "name", name="uq_kiln_teams_app_name"),
    )  # fmt: skip
    members = Table(
        "kiln_team_members", metadata,
        Column("team_id", IdType, ForeignKey("kiln_teams.id", ondelete="CASCADE"), primary_key=True),
        Column("user_id", IdType, ForeignKey("kiln_users.id", ondelete="CASCADE"), primary_key=True),
        Index("ix_kiln_team_members_user", "user_id"),
    )  # fmt: skip
    roles = Table(
        "kiln_user_roles", metadata,
        Column("user_id", IdType, ForeignKey("kiln_users.id", ondelete="CASCADE"), primary_key=True),
        Column("app", String(64), primary_key=True),
        Column("role", String(100), primary_key=True),
        Index("ix_kiln_user_roles_app_role", "app", "role"),
    )  # fmt: skip
    tokens = Table(
        "kiln_api_tokens", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("user_id", IdType, ForeignKey("kiln_users.id", ondelete="CASCADE"), nullable=False),
        Column("name", String(100), nullable=False, default=""),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("last_used_at", UTCDateTime, nullable=True),
    )  # fmt: skip
    audit = Table(
        "kiln_audit", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("record_id", BigInteger, nullable=False),
        Column("action", String(120), nullable=False),
        Column("actor_id", BigInteger, nullable=True),
        Column("actor", String(100), nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("changes", JSON, nullable=False),
        Column("rule", String(200), nullable=True),
        Column("comment", Text, nullable=True),
        Index("ix_kiln_audit_record", "app", "entity", "record_id", "id"),
    )  # fmt: skip
    files = Table(
        "kiln_files", metadata,
        Column("id", String(FILE_ID_LENGTH), primary_key=True),
        Column("filename", String(300), nullable=False),
        Column("content_type", String(200), nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("path", String(500), nullable=False),
        Column("created_by", BigInteger, nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
    )  # fmt: skip
    sequences = Table(
        "kiln_sequences", metadata,
        Column("app", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("prefix", String(100), primary_key=True),
        Column("value", BigInteger, nullable=False),
    )  # fmt: skip
    migrations = Table(
        "kiln_migrations", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app", String(64), nullable=False),
        Column("definition_hash", String(64), nullable=False),
        Column("applied_at", UTCDateTime, nullable=False),
        Column("summary", JSON, nullable=False),
        Index("ix_kiln_migrations_app", "app", "id"),
    )  # fmt: skip
    settings = Table(
        "kiln_settings", metadata,
        Column("key", String(100), primary_key=True),
        Column("value", Text, nullable=False),
    )  # fmt: skip
    # Failed logins, one row per failure and key ("user:<name>" or "ip:<address>"), kept in the
    # database so a lock-out holds across web processes (engine/logins.py).
    login_failures = Table(
        "kiln_login_failures", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("key", String(200), nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Index("ix_kiln_login_failures_key", "key", "at"),
        Index("ix_kiln_login_failures_at", "at"),
    )  # fmt: skip
    # A user's saved list views (engine/savedviews.py): the list's query string under a name.
    saved_views = Table(
        "kiln_saved_views", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("user_id", IdType, ForeignKey("kiln_users.id", ondelete="CASCADE"), nullable=False),
        Column("app", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("name", String(100), nullable=False),
        Column("query", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        UniqueConstraint("user_id", "app", "entity", "name", name="uq_kiln_saved_views_name"),
    )  # fmt: skip
    return {
        t.name: t
        for t in (
            users, teams, members, roles, tokens, audit, files, sequences, migrations, settings, login_failures,
            saved_views, *rule_tables(metadata), *workflow_tables(metadata), *time_tables(metadata),
            *rollup_tables(metadata),
        )
    }  # fmt: skip


def rollup_tables(metadata: MetaData) -> tuple[Table, ...]:
    """The dashboards' daily rollups (engine/rollups.py): per app, entity, measure, local day of
    creation and key (the JSON of the record's dimension values), the records and the integer
    total of the measure, changed by every write of a record in its own transaction; and per
    entity the signature of the rollup that was built (a rollup of another shape is never read)."""
    rollups = Table(
        "kiln_rollups", metadata,
        Column("app", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("measure", String(200), primary_key=True),
        Column("day", Date, primary_key=True),
        Column("key", String(1000), primary_key=True),
        Column("n", BigInteger, nullable=False),
        Column("total", BigInteger, nullable=False),
    )  # fmt: skip
    builds = Table(
        "kiln_rollup_builds", metadata,
        Column("app", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("signature", String(64), nullable=False),
        Column("built_at", UTCDateTime, nullable=False),
    )  # fmt: skip
    return rollups, builds


def rule_tables(metadata: MetaData) -> tuple[Table, ...]:
    """The tables of rules (engine/rules.py and its helpers): the notification outbox, the
    round-robin cursors, system tags and marks, the delivered in-app notifications and the
    satisfaction surveys' links."""
    # One row per (event, recipient, channel): the unique key makes queuing the same notification
    # twice a no-op, so a retried change never sends twice (engine/outbox.py).
    outbox = Table(
        "kiln_outbox", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("record_id", BigInteger, nullable=True),
        Column("event_key", String(300), nullable=False),
        Column("channel", String(32), nullable=False),
        Column("recipient", String(500), nullable=False),
        Column("payload", JSON, nullable=False),
        Column("status", String(16), nullable=False, default="pending"),
        Column("attempts", Integer, nullable=False, default=0),
        Column("created_at", UTCDateTime, nullable=False),
        Column("next_attempt_at", UTCDateTime, nullable=True),
        Column("sent_at", UTCDateTime, nullable=True),
        Column("last_error", Text, nullable=True),
        UniqueConstraint("event_key", "recipient", "channel", name="uq_kiln_outbox_event"),
        Index("ix_kiln_outbox_status", "status", "next_attempt_at", "id"),
        Index("ix_kiln_outbox_record", "app", "entity", "record_id", "id"),
    )  # fmt: skip
    # The turn counter of a round-robin assignment, one row per (app, entity, field, pool); taken
    # with an atomic upsert so concurrent creates never get the same turn (engine/assignment.py).
    cursors = Table(
        "kiln_assign_cursor", metadata,
        Column("app", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("field", String(64), primary_key=True),
        Column("pool", String(200), primary_key=True),
        Column("turn", BigInteger, nullable=False),
    )  # fmt: skip
    # Tags and marks of records of entities without a tags field (engine/tags.py).
    tags = Table(
        "kiln_tags", metadata,
        Column("app", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("record_id", BigInteger, primary_key=True),
        Column("tag", String(200), primary_key=True),
        Index("ix_kiln_tags_tag", "app", "entity", "tag", "record_id"),
    )  # fmt: skip
    marks = Table(
        "kiln_marks", metadata,
        Column("app", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("record_id", BigInteger, primary_key=True),
        Column("color", String(16), primary_key=True),
        Column("marked_at", UTCDateTime, nullable=False),
        Column("rule", String(200), nullable=True),
        Index("ix_kiln_marks_color", "app", "entity", "color", "record_id"),
    )  # fmt: skip
    # The in-app notifications (engine/notifications.py): one row per delivered in_app outbox row
    # (UNIQUE outbox_id: delivering it again adds nothing), read or not.
    notifications = Table(
        "kiln_notifications", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("user_id", IdType, ForeignKey("kiln_users.id", ondelete="CASCADE"), nullable=False),
        Column("outbox_id", BigInteger, nullable=False, unique=True),
        Column("app", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("record_id", BigInteger, nullable=True),
        Column("subject", Text, nullable=True),
        Column("body", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("read_at", UTCDateTime, nullable=True),
        Index("ix_kiln_notifications_user", "user_id", "id"),
        Index("ix_kiln_notifications_unread", "user_id", "read_at", "id"),
    )  # fmt: skip
    # One row per satisfaction-survey link (engine/surveys.py), per (event, recipient), minted
    # with the notification that carries it; the link's token is never stored, only its SHA-256.
    surveys = Table(
        "kiln_surveys", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("record_id", BigInteger, nullable=False),
        Column("user_id", BigInteger, nullable=False),
        Column("event_key", String(300), nullable=False),
        Column("field", String(64), nullable=False),
        Column("comment_field", String(64), nullable=True),
        Column("token_hash", String(64), nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
        Column("used_at", UTCDateTime, nullable=True),
        UniqueConstraint("event_key", "user_id", name="uq_kiln_surveys_event"),
    )  # fmt: skip
    return outbox, cursors, tags, marks, notifications, surveys


def time_tables(metadata: MetaData) -> tuple[Table, ...]:
    """The tables of time (engine/sla.py, engine/scan.py): the SLA clocks and the claims of
    scheduled rule runs."""
    # One row per (record, clock name). The time scan reads only the partial index on
    # next_check_at (NULL when met, paused or with nothing left to fire): an index range, never the
    # whole table. Breach counts per day read the partial index on breached_at.
    clocks = Table(
        "kiln_sla_clocks", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("record_id", BigInteger, nullable=False),
        Column("name", String(64), nullable=False),
        Column("entry", Integer, nullable=False),  # which of the entity's sla entries applies
        Column("calendar", String(64), nullable=False),
        Column("target_seconds", BigInteger, nullable=False),
        Column("started_at", UTCDateTime, nullable=False),
        Column("paused_at", UTCDateTime, nullable=True),
        Column("paused_seconds", BigInteger, nullable=False, default=0),
        Column("due_at", UTCDateTime, nullable=False),
        Column("breached_at", UTCDateTime, nullable=True),
        Column("met_at", UTCDateTime, nullable=True),
        Column("next_check_at", UTCDateTime, nullable=True),
        Column("escalation_level", Integer, nullable=False, default=0),
        UniqueConstraint("app", "entity", "record_id", "name", name="uq_kiln_sla_clocks_record"),
        Index(
            "ix_kiln_sla_clocks_next_check", "next_check_at", "id",
            postgresql_where=text("next_check_at IS NOT NULL"), sqlite_where=text("next_check_at IS NOT NULL"),
        ),
        Index(
            "ix_kiln_sla_clocks_breached", "app", "entity", "breached_at",
            postgresql_where=text("breached_at IS NOT NULL"), sqlite_where=text("breached_at IS NOT NULL"),
        ),
    )  # fmt: skip
    # A scheduled rule's due instant is run by whoever inserts its row, in the run's transaction.
    schedule_runs = Table(
        "kiln_schedule_runs", metadata,
        Column("due_at", UTCDateTime, primary_key=True),
        Column("app", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("rule", String(200), primary_key=True),
        Column("ran_at", UTCDateTime, nullable=False),
    )  # fmt: skip
    return clocks, schedule_runs


def workflow_tables(metadata: MetaData) -> tuple[Table, ...]:
    """The tables of approvals and cc (engine/approvals.py): approval steps, their approvers with
    each one's decision, and read grants (cc recipients and approvers may read the record)."""
    # One row per opened step; a record re-entering the state a `before:` transition starts from
    # gets a new step, so `state` and `opened_at` tell which visit a step belongs to.
    approvals = Table(
        "kiln_approvals", metadata,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("record_id", BigInteger, nullable=False),
        Column("name", String(64), nullable=False),
        Column("state", String(64), nullable=True),
        Column("mode", String(8), nullable=False),
        Column("status", String(16), nullable=False),
        Column("opened_at", UTCDateTime, nullable=False),
        Column("closed_at", UTCDateTime, nullable=True),
        Index("ix_kiln_approvals_record", "app", "entity", "record_id", "name", "id"),
        Index("ix_kiln_approvals_status", "status", "id"),
    )  # fmt: skip
    # Approvers are resolved to users when the step opens; the inbox reads this by user.
    approvers = Table(
        "kiln_approvers", metadata,
        Column("approval_id", IdType, ForeignKey("kiln_approvals.id", ondelete="CASCADE"), primary_key=True),
        Column("user_id", IdType, primary_key=True),
        Column("decision", String(16), nullable=True),
        Column("comment", Text, nullable=True),
        Column("decided_at", UTCDateTime, nullable=True),
        Index("ix_kiln_approvers_user", "user_id", "decision", "approval_id"),
    )  # fmt: skip
    # Read access granted to one user on one record; engine.permissions.read_clause ORs it in.
    grants = Table(
        "kiln_read_grants", metadata,
        Column("app", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("record_id", BigInteger, primary_key=True),
        Column("user_id", IdType, primary_key=True),
        Column("reason", String(100), nullable=False),
        Column("granted_at", UTCDateTime, nullable=False),
        Index("ix_kiln_read_grants_user", "user_id", "app", "entity", "record_id"),
    )  # fmt: skip
    return approvals, approvers, grants


@dataclass
class EntityTables:
    """The main table of an entity and the child tables of its multi-valued fields."""

    main: Table
    children: dict[str, Table] = field(default_factory=dict)


@dataclass
class Schema:
    """All tables of an instance: the system tables and, per app and entity, its tables."""

    metadata: MetaData
    system: dict[str, Table]
    entities: dict[tuple[str, str], EntityTables]

    def entity(self, app: str, entity: str) -> EntityTables:
        return self.entities[(app, entity)]

    def table(self, name: str) -> Table:
        return self.metadata.tables[name]


def entity_tables(
    metadata: MetaData, app: App, entity: Entity, computed_types: dict[str, str] | None = None,
    count_fields: tuple[tuple[str, ...], ...] = (),
) -> EntityTables:  # fmt: skip
    name = table_name(app.name, entity.name)
    columns: list = [
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("number", String(100), nullable=True),
        Column("state", String(64), nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("created_by", BigInteger, nullable=True),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("version", Integer, nullable=False, default=1),
    ]
    indexes: list[Index] = [
        Index(f"ix_{name}_state", "state", "id"),
        Index(f"ix_{name}_created_at", "created_at", "id"),
        Index(f"ix_{name}_updated_at", "updated_at", "id"),
        Index(f"ix_{name}_created_by", "created_by", "id"),
    ]
    constraints: list = [UniqueConstraint("number", name=f"uq_{name}_number")]
    for state in entity.states:
        columns.append(Column(entered_column(state), UTCDateTime, nullable=True))
    # Dashboards count closings by time (closed per day, the backlog at each day's end): the
    # records in a final state by the time they entered it, counted from the index alone
    # (benchmarks/dashboards.py).
    for state in entity.workflow.states if entity.workflow else ():
        if state.final:
            indexes.append(Index(f"ix_{name}_state_{entered_column(state.name)}", "state", entered_column(state.name)))
    children: dict[str, Table] = {}
    for f in entity.fields:
        if f.is_multi:
            children[f.name] = child_table(metadata, name, f)
            continue
        columns.append(Column(f.name, value_type(f, (computed_types or {}).get(f.name)), nullable=True))
        if f.unique:
            constraints.append(UniqueConstraint(f.name, name=f"uq_{name}_{f.name}"))
        elif f.filterable:
            indexes.append(Index(f"ix_{name}_{f.name}", f.name, "id"))
    # ``count(entity, F == this.F and G == this.G ..., within=...)`` reads the records of one
    # (F, G) created since a moment: an index on (F, G, created_at) counts them from one short
    # range of its own entries, where (F, id) alone would visit every record of that F value (a
    # device's whole history) and read each row for G.
    for fields in count_fields:
        index_name = f"ix_{name}_{'_'.join(fields)}_created"
        if len(index_name) > 63:  # PostgreSQL's limit on names
            index_name = f"ix_{name[:30]}_{hashlib.sha1(index_name.encode()).hexdigest()[:12]}_created"
        indexes.append(Index(index_name, *fields, "created_at"))
    main = Table(name, metadata, *columns, *constraints, *indexes)
    return EntityTables(main, children)


def child_table(metadata: MetaData, parent: str, f: Field) -> Table:
    """The values of a multi-valued field, a row each. On SQLite ``WITHOUT ROWID``: the rows are
    kept in their key's order, one b-tree where a rowid table needs a second for the key, so a
    record's values cost a page less to write (tables made before stay rowid tables, which read
    and write the same)."""
    name = f"{parent}__{f.name}"
    return Table(
        name, metadata,
        Column("record_id", IdType, ForeignKey(f"{parent}.id", ondelete="CASCADE"), primary_key=True),
        Column("position", Integer, primary_key=True),
        Column("value", value_type(f), nullable=False),
        Index(f"ix_{name}_value", "value", "record_id"),
        sqlite_with_rowid=False,
    )  # fmt: skip


def build_schema(
    apps: list[App], computed_types: dict[tuple[str, str, str], str] | None = None,
    count_fields: dict[tuple[str, str], tuple[tuple[str, ...], ...]] | None = None,
) -> Schema:  # fmt: skip
    """The SQLAlchemy tables for the instance's apps; ``computed_types`` maps (app, entity, field)
    of computed fields to their expression's value type, ``count_fields`` (app, entity) to the
    fields each of its ``count(..., within=)`` conditions matches on by equality."""
    metadata = MetaData()
    system = system_tables(metadata)
    entities = {}
    for app in apps:
        for entity in app.entities:
            types = {fname: t for (a, e, fname), t in (computed_types or {}).items() if a == app.name and e == entity.name}
            counted = (count_fields or {}).get((app.name, entity.name), ())
            entities[(app.name, entity.name)] = entity_tables(metadata, app, entity, types, counted)
    return Schema(metadata, system, entities)
