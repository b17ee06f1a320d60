"""CSV and XLSX exports: the list's own query, labels as people read them, never a hidden field,
only for roles with ``export: true`` (and admins), formulas defused."""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook

from engine import exports
from engine.queries import ListSpec
from tests.test_pages_support import Desk, make_tickets, open_desk


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def desk(write_definitions, open_instance, db_url: str) -> Desk:
    desk = open_desk(write_definitions, open_instance, db_url)
    make_tickets(desk, 4, by="root", secret_note="TOP-SECRET")
    desk.records().create("ticket", {"summary": "=HYPERLINK(\"http://evil\")", "category": "other", "secret_note": "TOP-SECRET"},
                          desk.actor("root"))  # fmt: skip
    return desk


def read_csv(body: bytes) -> list[list[str]]:
    assert body.startswith("\ufeff".encode())
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


@pytest.mark.anyio
async def test_csv_export_follows_the_list_filters(desk: Desk):
    async with desk.client("lena") as c:
        r = await c.get("/a/desk/ticket/export.csv?category=network&sort=summary")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="desk-ticket.csv"' in r.headers["content-disposition"]
    rows = read_csv(r.content)
    header = rows[0]
    assert header[:4] == ["ID", "number", "state", "Summary"] and "Category" in header
    assert [row[3] for row in rows[1:]] == ["ticket 00", "ticket 03"]
    category = header.index("Category")
    assert {row[category] for row in rows[1:]} == {"Network"}  # option labels, not keys
    assert rows[1][header.index("Site")] == "Main hall" and rows[1][2] == "Open"


@pytest.mark.anyio
async def test_a_hidden_field_is_never_exported(desk: Desk):
    async with desk.client("lena") as c:
        csv_body = (await c.get("/a/desk/ticket/export.csv")).content
        xlsx_body = (await c.get("/a/desk/ticket/export.xlsx")).content
    assert b"TOP-SECRET" not in csv_body and "Secret note" not in csv_body.decode("utf-8-sig")
    sheet = load_workbook(io.BytesIO(xlsx_body), read_only=True).active
    cells = [str(v) for row in sheet.iter_rows(values_only=True) for v in row]
    assert "TOP-SECRET" not in cells and "Secret note" not in cells
    async with desk.client("root") as c:  # an admin sees every field
        assert b"TOP-SECRET" in (await c.get("/a/desk/ticket/export.csv")).content


@pytest.mark.anyio
async def test_xlsx_export(desk: Desk):
    async with desk.client("lena") as c:
        r = await c.get("/a/desk/ticket/export.xlsx?q=ticket")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(r.content), read_only=True).active
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert rows[0][3] == "Summary" and sorted(row[3] for row in rows[1:]) == [f"ticket {i:02d}" for i in range(4)]


@pytest.mark.anyio
async def test_only_roles_that_may_export(desk: Desk):
    async with desk.client("alice") as c:
        r = await c.get("/a/desk/ticket/export.csv")
        assert r.status_code == 403
        assert "export.csv" not in (await c.get("/a/desk/ticket")).text
        assert (await c.get("/a/desk/ticket/export.pdf")).status_code in (403, 404)
    async with desk.client("lena") as c:
        assert "/a/desk/ticket/export.xlsx" in (await c.get("/a/desk/ticket")).text
        assert (await c.get("/a/desk/ticket/export.pdf")).status_code == 404
        assert (await c.get("/a/desk/ticket/export.csv?sort=nope")).status_code == 400


def test_formulas_are_defused_and_pages_are_walked(desk: Desk):
    records = desk.records()
    entity = records.entity("ticket")
    lines = list(exports.rows(records, entity, desk.actor("root"), ListSpec(sort="summary", limit=2), "en"))
    assert len(lines) == 6  # header + 5, read in keyset pages
    text = b"".join(exports.csv_chunks(lines)).decode("utf-8-sig")
    assert "'=HYPERLINK" in text and "\n=HYPERLINK" not in text


def test_export_pages_are_keyset_pages(desk: Desk, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(exports, "PAGE", 2)
    records = desk.records()
    lines = list(exports.rows(records, records.entity("ticket"), desk.actor("root"), ListSpec(), "en"))
    assert [line[1] for line in lines[1:]] == ["T0005", "T0004", "T0003", "T0002", "T0001"]
