"""The API end to end: `run.py migrate`, `user add`, `token create`, then a real `run.py serve`
process answering over HTTP (auth, create, list, update with If-Match, history, upload)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from tests.test_api_support import APP
from tests.test_serve import free_port, stop, wait_healthy

ROOT = Path(__file__).resolve().parent.parent


def cli(cwd: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_api_on_a_real_server(tmp_path: Path, db_url: str):
    definitions = tmp_path / "definitions"
    (definitions / "repair").mkdir(parents=True)
    (definitions / "repair" / "app.yaml").write_text(textwrap.dedent(APP).lstrip(), encoding="utf-8")
    where = ("--db", db_url, "--definitions", str(definitions))
    cli(tmp_path, "migrate", *where)
    cli(tmp_path, "user", "add", "dan", "--app", "repair", "--roles", "dispatcher", "--password", "dan-pass-1", *where)
    token = cli(tmp_path, "token", "create", "dan", *where).strip()
    port = free_port()
    # cwd is the test's folder, so uploads land in its data/files; 1KB makes the limit easy to pass.
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port), *where], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "KILN_MAX_UPLOAD": "1KB"},
    )  # fmt: skip
    try:
        wait_healthy(process, port)
        base = f"http://127.0.0.1:{port}/api/v1"
        with httpx.Client(base_url=base, timeout=10) as anonymous:
            assert anonymous.get("/repair/ticket").status_code == 401
            assert anonymous.get("/openapi.json").json()["openapi"] == "3.1.0"
            login = anonymous.post("/auth/token", json={"username": "dan", "password": "dan-pass-1"})
            assert login.status_code == 200, login.text
        for bearer in (token, login.json()["token"]):
            with httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {bearer}"}) as c:
                assert c.get("/repair/ticket/count").status_code == 200
        with httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {token}"}) as c:
            device = c.post("/repair/device", json={"code": "D-1", "name": "灌装机"}).json()["id"]
            upload = c.post("/files", files={"file": ("r.pdf", b"%PDF-1.7 small", "application/pdf")})
            assert upload.status_code == 201
            stored = [p for p in (tmp_path / "data" / "files").rglob("*") if p.is_file()]
            assert [p.read_bytes() for p in stored] == [b"%PDF-1.7 small"]
            too_big = c.post("/files", files={"file": ("big.pdf", b"x" * 50_000, "application/pdf")})
            assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"
            assert [p for p in (tmp_path / "data" / "files").rglob("*") if p.is_file()] == stored
            made = c.post("/repair/ticket", json={"summary": "轴承异响", "device": device, "report": upload.json()["id"]})
            assert made.status_code == 201, made.text
            ticket = made.json()
            assert c.get(f"/files/{upload.json()['id']}").content == b"%PDF-1.7 small"
            assert [t["id"] for t in c.get("/repair/ticket", params={"where": 'urgency == "normal"'}).json()["items"]] == [ticket["id"]]
            changed = c.patch(f"/repair/ticket/{ticket['id']}", json={"urgency": "high"}, headers={"If-Match": str(ticket["version"])})
            assert changed.status_code == 200 and changed.json()["version"] == 2
            stale = c.patch(f"/repair/ticket/{ticket['id']}", json={"urgency": "normal"}, headers={"If-Match": "1"})
            assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version"
            assert c.get(f"/repair/ticket/{ticket['id']}").json()["urgency"] == "high"
            history = c.get(f"/repair/ticket/{ticket['id']}/history").json()["items"]
            assert [h["action"] for h in history] == ["create", "update"]
    finally:
        stop(process)
