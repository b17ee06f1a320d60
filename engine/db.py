"""Database connections: one place that knows SQLite from PostgreSQL.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable at checkpoints, fast commits),
checkpoints in a thread of each writing process (engine/checkpoints.py) and a busy timeout;
write transactions start with ``BEGIN IMMEDIATE`` so two writers queue at the start instead of
failing half-way on a lock upgrade. Writers of a SQLite file also queue on a lock of their own
first (:class:`WriteLock`), since SQLite's busy handler waits by sleeping. PostgreSQL runs with
its defaults.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: writers queue on SQLite's own busy handler
    fcntl = None  # type: ignore[assignment]

from sqlalchemy import DateTime, Engine, bindparam, create_engine, event, insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeDecorator

from engine.checkpoints import Checkpointer

DEFAULT_URL = "sqlite:///data/kiln.db"
# SQLite's writers checkpoint past this many WAL pages (64 MB at 4 KB): the backstop of the
# background checkpoints, which keep the WAL below it at a thousand ticket creates a second.
WAL_AUTOCHECKPOINT = 16_000


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; SQLite stores naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:  # type: ignore[override]
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the engine stores aware UTC times only")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def is_sqlite(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3 URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


# Keys of ``Connection.info`` that hold what one transaction did (the records it created, say).
# ``info`` belongs to the pooled DBAPI connection and outlives the transaction, so they are
# dropped at its end, committed or rolled back.
TRANSACTION_SCOPED: set[str] = set()


# Made once: ``json.dumps`` with an option makes an encoder per call. The values are trees the
# engine builds from records (no cycles), so the encoder does not track the containers it is in.
_JSON = json.JSONEncoder(ensure_ascii=False, check_circular=False)


def _json_text(value: Any) -> str:
    """JSON columns (the audit trail's changes, outbox payloads) as UTF-8 text: 轴承 is 6 bytes,
    not the 12 of ``\\u8f74\\u627f``, so a Chinese ticket's trail takes a third less room
    and reads as written in the database."""
    return _JSON.encode(value)


def connect(url: str = DEFAULT_URL, **kwargs) -> Engine:
    """An Engine for ``url``; creates the folder of a SQLite file."""
    url = normalise_url(url)
    parsed = make_url(url)
    kwargs.setdefault("json_serializer", _json_text)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if _is_sqlite_file(database):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _configure_sqlite(engine)
        if _is_sqlite_file(database):  # checkpointed in the background once written to (engine/checkpoints.py)
            checkpointer = engine._kiln_checkpointer = Checkpointer(database)  # type: ignore[attr-defined]
            event.listen(engine, "engine_disposed", lambda _engine: checkpointer.stop())
    else:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
    event.listen(engine, "commit", _end_transaction)
    event.listen(engine, "rollback", _end_transaction)
    return engine


def _end_transaction(conn: Connection) -> None:
    for key in TRANSACTION_SCOPED:
        conn.info.pop(key, None)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's begin event decide how a transaction starts (see on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A writer checkpoints only past this many WAL pages: a thread of the process does it
        # first, outside the write lock (engine/checkpoints.py).
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("kiln_write", False)
        # Straight to the driver: this runs once per transaction, on the create hot path.
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _writer(engine: Engine) -> Engine:
    """The engine with the ``kiln_write`` option, made once and kept on the engine (it shares
    the engine's pool; kept there, it goes when the engine goes)."""
    writer = getattr(engine, "_kiln_writer", None)
    if writer is None:
        writer = engine.execution_options(kiln_write=True)
        engine._kiln_writer = writer  # type: ignore[attr-defined]
    return writer


class WriteLock:
    """Writers of one SQLite file, one at a time, across threads and processes.

    SQLite lets one writer in and makes the others poll: its busy handler sleeps 1, 2, 5, 10 ...
    up to 100 ms between tries, so two server processes creating records at once lost most of
    their time asleep. Here a writer first takes a thread lock, then an exclusive ``flock`` on a
    file beside the database, which the kernel hands to the next waiter the moment it is freed.
    Where ``flock`` does not exist (Windows) only the thread lock applies.
    """

    def __init__(self, database: str) -> None:
        self.path = f"{database}-writelock"
        self.thread_lock = threading.Lock()
        self.fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.thread_lock:
            if fcntl is None:
                yield
                return
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


def _is_sqlite_file(database: str) -> bool:
    """A SQLite database named by a path: not in memory, not a ``file:`` URI."""
    return database not in ("", ":memory:") and not database.startswith("file:")


def _write_lock(engine: Engine) -> WriteLock | None:
    """The engine's WriteLock: for a SQLite file, made once and kept on the engine."""
    lock = getattr(engine, "_kiln_write_lock", False)
    if lock is False:
        database = engine.url.database or ""
        lock = WriteLock(database) if engine.dialect.name == "sqlite" and _is_sqlite_file(database) else None
        engine._kiln_write_lock = lock  # type: ignore[attr-defined]
    return lock


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any exception."""
    lock = _write_lock(engine)
    if lock is None:
        with _writer(engine).begin() as conn:
            yield conn
        return
    checkpointer = getattr(engine, "_kiln_checkpointer", None)
    if checkpointer is not None:
        checkpointer.start()
    with lock.held(), _writer(engine).begin() as conn:
        yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


class Prepared:
    """A statement compiled once per dialect and handed straight to the driver's cursor.

    ``conn.execute(statement, params)`` costs about 0.1-0.2 ms of SQLAlchemy bookkeeping per call
    (cache lookup, execution context, result metadata) even with its compiled cache; on the create
    path (link check, number, row, audit entry) that was more than the database's own work. This
    keeps SQLAlchemy's compilation and its bind processors (aware datetimes, JSON) and runs on
    the connection's own DBAPI cursor, in the same transaction. Results are plain rows: use it
    for statements whose results need no type processing (ids, counters).
    """

    def __init__(self, statement: Any, keys: list[str] | None = None) -> None:
        self.statement = statement
        self.keys = keys
        self._compiled: dict[str, tuple[Any, dict[str, Any], list[tuple[str, Any]] | None]] = {}
        # Per dialect, the values the statement binds itself where the driver takes a tuple
        # (SQLite's ``OFFSET 0`` after a LIMIT); None when it binds none.
        self._own: dict[str, dict[str, Any] | None] = {}
        self._results: dict[str, tuple[list[str], list[Any]]] = {}

    def compiled_for(self, conn: Connection) -> tuple[Any, dict[str, Any], list[tuple[str, Any]] | None]:
        """The statement compiled for ``conn``'s database, once: the compiled form, its bind
        processors by parameter, and for positional drivers each parameter's key and processor
        in order (None for named ones)."""
        name = conn.dialect.name
        if name not in self._compiled:
            compiled = self.statement.compile(dialect=conn.dialect, column_keys=self.keys)
            # SQLAlchemy's own per-type bind processors; a private attribute, stable across 2.x.
            processors = dict(compiled._bind_processors)
            # For positional drivers (SQLite), each parameter's key and processor, in order.
            order = [(k, processors.get(k)) for k in compiled.positiontup] if compiled.positional else None
            self._own[name] = _own_values(compiled) if order is not None else None
            self._compiled[name] = (compiled, processors, order)
        return self._compiled[name]

    def dicts(self, conn: Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows of a SELECT as dicts of typed values (aware datetimes, decimals, booleans):
        each column's result processor, as ``conn.execute`` would apply it."""
        dialect = conn.dialect
        result = self.execute(conn, params)
        if dialect.name not in self._results:  # the driver's column types: PostgreSQL's numerics need them
            columns = list(self.statement.selected_columns)
            types = [d[1] for d in result.description]
            processors = [c.type.dialect_impl(dialect).result_processor(dialect, t) for c, t in zip(columns, types, strict=True)]
            self._results[dialect.name] = ([c.key for c in columns], processors)
        keys, processors = self._results[dialect.name]
        rows = result.rows
        if not any(processors):
            return [dict(zip(keys, row, strict=True)) for row in rows]
        return [
            {key: value if process is None or value is None else process(value) for key, process, value in zip(keys, processors, row, strict=True)}
            for row in rows
        ]

    def execute(self, conn: Connection, params: dict[str, Any]) -> PreparedResult:
        compiled, processors, order = self.compiled_for(conn)
        own = self._own[conn.dialect.name]
        if own is not None:  # the caller's values first
            params = {**own, **params}
        return self.run(conn, self._arguments(compiled, processors, order, params))

    def run(self, conn: Connection, arguments: Any) -> PreparedResult:
        """Run the statement with the driver's own ``arguments`` (bound values processed)."""
        compiled = self.compiled_for(conn)[0]
        cursor = conn.connection.dbapi_connection.cursor()  # the connection's own transaction
        try:
            cursor.execute(compiled.string, arguments)
            rows = cursor.fetchall() if cursor.description else []
            return PreparedResult(rows, cursor.rowcount, cursor.description)
        except conn.dialect.loaded_dbapi.Error as exc:
            # Raised as SQLAlchemy raises it (IntegrityError for a unique key ...), so callers
            # handle one family of errors whichever path ran the statement.
            raise DBAPIError.instance(compiled.string, arguments, exc, conn.dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()

    @staticmethod
    def _arguments(compiled: Any, processors: dict[str, Any], order: list[tuple[str, Any]] | None, params: dict[str, Any]) -> Any:
        if order is not None:  # every parameter given: straight into the driver's tuple
            arguments = []
            try:
                for key, process in order:
                    value = params[key]
                    arguments.append(value if value is None or process is None else process(value))
                return tuple(arguments)
            except KeyError:  # a default SQLAlchemy works out, or a parameter left out (its error)
                pass
        values = compiled.construct_params(params)
        for key, process in processors.items():
            if key in values and values[key] is not None:
                values[key] = process(values[key])
        return tuple(values[k] for k in compiled.positiontup) if compiled.positional else values


def _own_values(compiled: Any) -> dict[str, Any] | None:
    """The literal values ``compiled`` binds itself (not required, no callable default), by
    parameter; None when it has none."""
    own = {}
    for key in compiled.positiontup:
        bind = compiled.binds.get(key)
        if bind is not None and not bind.required and bind.callable is None:
            own[key] = bind.value
    return own or None


class PreparedRows:
    """The INSERT of several rows of a table as one multi-row ``VALUES`` statement, prepared per
    number of rows (child rows, audit entries).

    The driver's ``executemany`` runs a statement once per row; psycopg pipelines them but still
    waits for each result, so five audit entries were five round trips to PostgreSQL. One
    statement is one round trip there, and one statement step for SQLite."""

    CHUNK = 32  # rows per statement: a few statements per size, whatever the list's length

    def __init__(self, table: Any, keys: list[str]) -> None:
        self.table = table
        self.keys = keys
        self._sized: dict[int, Prepared] = {}
        # Per dialect and number of rows, for positional drivers (SQLite): each parameter as
        # (row, key, bind processor), in the statement's order; None for named ones.
        self._slots: dict[tuple[str, int], list[tuple[int, str, Any]] | None] = {}

    def execute(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), self.CHUNK):
            chunk = rows[start : start + self.CHUNK]
            prepared = self._sized.get(len(chunk))
            if prepared is None:
                prepared = self._sized[len(chunk)] = Prepared(self.statement(len(chunk)))
            slots = self._slots_of(conn, prepared, len(chunk))
            if slots is None:
                prepared.execute(conn, self.params(chunk))
                continue
            # The driver's tuple straight from the rows: no parameter names to make and look up
            # (an audit row has ten, a ticket's tags three each).
            arguments = []
            for i, key, process in slots:
                value = chunk[i][key]
                arguments.append(value if value is None or process is None else process(value))
            prepared.run(conn, tuple(arguments))

    def _slots_of(self, conn: Connection, prepared: Prepared, size: int) -> list[tuple[int, str, Any]] | None:
        key = (conn.dialect.name, size)
        if key not in self._slots:
            compiled, processors, order = prepared.compiled_for(conn)
            names = {f"{k}_r{i}": (i, k) for i in range(size) for k in self.keys}
            positional = order is not None and all(name in names for name, _ in order)
            self._slots[key] = [(*names[name], processors.get(name)) for name, _ in order] if positional else None  # type: ignore[union-attr]
        return self._slots[key]

    def statement(self, size: int, prefix: str = "") -> Any:
        columns = self.table.c
        rows = [{key: bindparam(f"{prefix}{key}_r{i}", type_=columns[key].type) for key in self.keys} for i in range(size)]
        return insert(self.table).values(rows)

    def params(self, rows: list[dict[str, Any]], prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{key}_r{i}": row[key] for i, row in enumerate(rows) for key in self.keys}


def insert_rows(conn: Connection, parts: list[tuple[PreparedRows, list[dict[str, Any]]]]) -> None:
    """Rows of several tables, the tables in order (a record's child rows, then its audit
    entries). PostgreSQL gets them as one statement, each table's INSERT but the last in a
    data-modifying ``WITH``: one round trip instead of one per table. SQLite, which has no round
    trips to save, gets a statement per table."""
    parts = [(rows_of, rows) for rows_of, rows in parts if rows]
    if conn.dialect.name != "postgresql" or len(parts) < 2 or any(len(rows) > PreparedRows.CHUNK for _, rows in parts):
        for rows_of, rows in parts:
            rows_of.execute(conn, rows)
        return
    params: dict[str, Any] = {}
    for i, (rows_of, rows) in enumerate(parts):
        params.update(rows_of.params(rows, prefix=f"t{i}_"))
    _together(tuple((rows_of, len(rows)) for rows_of, rows in parts)).execute(conn, params)


@functools.lru_cache(maxsize=256)
def _together(shape: tuple[tuple[PreparedRows, int], ...]) -> Prepared:
    """One statement inserting ``size`` rows into each part's table (PostgreSQL only)."""
    *first, (last, size) = shape
    ctes = [rows_of.statement(n, prefix=f"t{i}_").cte(f"t{i}") for i, (rows_of, n) in enumerate(first)]
    return Prepared(last.statement(size, prefix=f"t{len(first)}_").add_cte(*ctes))


class PreparedResult:
    """The rows and row count of a Prepared statement (the few accessors the engine uses)."""

    def __init__(self, rows: list[Any], rowcount: int, description: Any = None) -> None:
        self.rows = rows
        self.rowcount = rowcount
        self.description = description  # the driver's (name, type code, ...) per column

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0][0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self.rows]
