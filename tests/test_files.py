"""Uploads and downloads: streamed to disk with a size limit, type checks, who may download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.test_api_support import APP, Api, error_of, make_api

pytestmark = pytest.mark.anyio
PDF = b"%PDF-1.7\n" + b"x" * 500


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api(db_url, write_definitions, open_instance) -> Api:
    return make_api(open_instance(write_definitions({"repair/app.yaml": APP}), db_url))


def stored_files(api: Api) -> list[Path]:
    root = api.instance.files_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def upload(api: Api, who: str, name: str = "report.pdf", data: bytes = PDF, content_type: str = "application/pdf",
                 field: str | None = None):  # fmt: skip
    async with api.client() as c:
        params = {"field": field} if field else {}
        return await c.post("/api/v1/files", params=params, files={"file": (name, data, content_type)}, headers=api.auth(who))


async def test_upload_stores_the_file_and_its_row(api: Api):
    r = await upload(api, "rita", field="repair.ticket.report")
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"id", "filename", "size", "content_type"} and len(body["id"]) == 32 and int(body["id"], 16) >= 0
    assert body == {"id": body["id"], "filename": "report.pdf", "size": len(PDF), "content_type": "application/pdf"}
    files = api.instance.schema.system["kiln_files"]
    with api.instance.engine.connect() as conn:
        row = conn.execute(select(files).where(files.c.id == body["id"])).mappings().one()
    assert row["sha256"] == hashlib.sha256(PDF).hexdigest() and row["created_by"] == api.users["rita"]
    assert (api.instance.files_dir / row["path"]).read_bytes() == PDF
    assert stored_files(api) == [api.instance.files_dir / row["path"]]  # no partial file left beside it


async def test_a_streamed_body_over_the_limit_is_cut_off(api: Api, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KILN_MAX_UPLOAD", "64KB")
    sent = 0
    boundary = "kilnboundary"

    async def body():  # a 1 GB upload, produced lazily: it must never be read whole
        nonlocal sent
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
        yield head.encode()
        chunk = b"x" * 16384
        for _ in range(65536):
            sent += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    async with api.client() as c:
        r = await c.post("/api/v1/files", content=body(), headers={**api.auth("dan"), "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and error_of(r)["code"] == "too_large"
    assert sent < 1024 * 1024  # stopped near 64 KB, not after a gigabyte
    assert stored_files(api) == [] and api.count("kiln_files") == 0


async def test_a_declared_length_over_the_limit_is_refused_before_reading(api: Api, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KILN_MAX_UPLOAD", "1KB")
    r = await upload(api, "dan", data=b"x" * 200_000)
    assert r.status_code == 413 and stored_files(api) == [] and api.count("kiln_files") == 0


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"field": "repair.ticket.report", "data": b"x" * 3000}, 413, "too_large"),  # max_size: 2KB
        ({"field": "repair.ticket.report", "name": "tool.exe", "content_type": "application/x-msdownload"}, 415, "unsupported_media_type"),
        ({"field": "repair.ticket.photos", "name": "notes.txt", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"field": "repair.ticket.summary"}, 400, "bad_request"),
        ({"field": "nope"}, 400, "bad_request"),
    ],
)  # fmt: skip
async def test_field_limits_and_types(api: Api, kwargs: dict, status: int, code: str):
    r = await upload(api, "dan", **kwargs)
    assert r.status_code == status and error_of(r)["code"] == code
    assert stored_files(api) == [] and api.count("kiln_files") == 0


async def test_an_image_field_takes_images(api: Api):
    r = await upload(api, "dan", name="photo.png", data=b"\x89PNG....", content_type="image/png", field="repair.ticket.photos")
    assert r.status_code == 201 and r.json()["content_type"] == "image/png"


async def test_malformed_uploads(api: Api):
    async with api.client(headers=api.auth("dan")) as c:
        not_multipart = await c.post("/api/v1/files", content=b"hello", headers={"Content-Type": "text/plain"})
        assert not_multipart.status_code == 415
        no_file = await c.post("/api/v1/files", data={"other": "x"}, files={"notfile": ("a.pdf", b"x", "application/pdf")})
        assert no_file.status_code == 400 and "file" in error_of(no_file)["fields"]
        cut = await c.post("/api/v1/files", content=b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc",
                           headers={"Content-Type": "multipart/form-data; boundary=b"})  # fmt: skip
        assert cut.status_code == 400
    assert stored_files(api) == [] and api.count("kiln_files") == 0


async def test_download_by_uploader_and_by_readers_of_a_referencing_record(api: Api):
    file_id = (await upload(api, "rita", field="repair.ticket.report")).json()["id"]
    url = f"/api/v1/files/{file_id}"
    async with api.client() as c:
        mine = await c.get(url, headers=api.auth("rita"))
        assert mine.status_code == 200 and mine.content == PDF
        assert mine.headers["content-type"] == "application/pdf" and "attachment" in mine.headers["content-disposition"]
        assert mine.headers["x-content-type-options"] == "nosniff"
        assert (await c.get(url, headers=api.auth("dan"))).status_code == 404  # nothing references it yet
        device = (await c.post("/api/v1/repair/device", json={"code": "D", "name": "n"}, headers=api.auth("dan"))).json()["id"]
        made = await c.post("/api/v1/repair/ticket", json={"summary": "s", "device": device, "report": file_id}, headers=api.auth("rita"))
        assert made.status_code == 201 and made.json()["report"] == file_id
        assert (await c.get(url, headers=api.auth("dan"))).content == PDF  # dispatchers read all tickets
        assert (await c.get(url, headers=api.auth("ron"))).status_code == 404  # another reporter: not his ticket
        for bad in ("nope", "0" * 32, file_id.upper()):
            r = await c.get(f"/api/v1/files/{bad}", headers=api.auth("rita"))
            assert r.status_code == 404 and error_of(r)["code"] == "not_found"


async def test_a_record_refuses_a_file_its_field_does_not_accept(api: Api):
    file_id = (await upload(api, "dan", name="tool.exe", content_type="application/octet-stream")).json()["id"]
    async with api.client(headers=api.auth("dan")) as c:
        device = (await c.post("/api/v1/repair/device", json={"code": "D", "name": "n"})).json()["id"]
        r = await c.post("/api/v1/repair/ticket", json={"summary": "s", "device": device, "report": file_id})
    assert r.status_code == 422 and "report" in error_of(r)["fields"]
    assert api.count("repair__ticket") == 0


async def test_a_utf8_filename_is_kept(api: Api):
    r = await upload(api, "dan", name="维修报告 ü.pdf")
    assert r.status_code == 201 and r.json()["filename"] == "维修报告 ü.pdf"
