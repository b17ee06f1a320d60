"""Prepared statements (engine/db.py): the parameters a statement binds itself, and the rows of a
multi-row insert bound straight from the rows, on both databases."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, bindparam, select
from sqlalchemy.exc import InvalidRequestError

from engine.db import Prepared, PreparedRows, UTCDateTime, connect


@pytest.fixture
def items(db_url: str):
    engine = connect(db_url)
    table = Table(
        "items", MetaData(), Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
        Column("name", String(50)), Column("at", UTCDateTime), Column("n", Integer),
    )  # fmt: skip
    table.create(engine)
    try:
        yield engine, table
    finally:
        table.drop(engine)
        engine.dispose()


def test_rows_are_bound_from_the_rows_and_a_limit_binds_its_own_offset(items):
    engine, table = items
    at = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
    rows = [{"name": f"轴承{i}", "at": at, "n": i} for i in range(40)]  # two statements: 32 rows, then 8
    with engine.begin() as conn:
        PreparedRows(table, ["name", "at", "n"]).execute(conn, rows)
        # LIMIT ? OFFSET ?: the caller gives the limit, the statement its own offset (0)
        first = Prepared(select(table.c.n).where(table.c.n >= bindparam("low")).order_by(table.c.n).limit(bindparam("cap", type_=Integer())))
        assert first.execute(conn, {"low": 5, "cap": 3}).scalars() == [5, 6, 7]
        with pytest.raises(InvalidRequestError):  # a parameter left out is still an error
            first.execute(conn, {"low": 5})
    with engine.connect() as conn:
        stored = conn.execute(select(table.c.name, table.c.at, table.c.n).order_by(table.c.n)).all()
    assert [(r.name, r.at, r.n) for r in stored] == [(r["name"], at, r["n"]) for r in rows]
