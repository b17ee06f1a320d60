"""`run.py serve`: the first run end to end as a real process, the start checks, and the web app."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from apps.web import create_app
from engine import accounts, packs
from engine.db import connect

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(definitions: Path, db_url: str, *extra: str, cwd: Path = ROOT) -> tuple[subprocess.Popen[str], int]:
    """``run.py serve`` in a process of its own; ``cwd`` is where it keeps uploads (data/files)."""
    port = free_port()
    command = [sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port), "--db", db_url, "--definitions", str(definitions), *extra]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, port


def wait_healthy(process: subprocess.Popen[str], port: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/-/health", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become healthy")


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def log_in(port: int, username: str, password: str) -> httpx.Client:
    """A client with a logged-in session, through the login page as a browser would."""
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
    answer = http.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"})
    assert answer.status_code == 303, answer.text
    return http


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_first_run_installs_the_pack_and_serves(tmp_path: Path, db_url: str):
    definitions = tmp_path / "definitions"
    process, port = serve(definitions, db_url, "--first-run")
    try:
        health = wait_healthy(process, port)
        assert health == {"status": "ok", "database": "ok", "apps": ["service_ticket"]}
        home = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert home.status_code == 303 and home.headers["location"] == "/login?next=%2F"
    finally:
        output = stop(process)
    assert (definitions / "service_ticket" / ".pack.yaml").is_file()
    assert "demo data: 8 building, 4 device, 30 ticket" in output
    assert f"Kiln is serving http://127.0.0.1:{port}/" in output
    password = re.search(r"created the instance administrator: user admin, password (\S+)", output).group(1)
    engine = connect(db_url)
    try:
        assert accounts.verify_password(engine, "admin", password)
        assert accounts.get_user(engine, "admin").is_admin
    finally:
        engine.dispose()

    # A later run serves what is there: no second install, the admin is not recreated; the
    # printed account logs in and finds the demo tickets.
    process, port = serve(definitions, db_url, "--first-run")
    try:
        wait_healthy(process, port)
        http = log_in(port, "admin", password)
        try:
            tickets = http.get("/a/service_ticket/ticket.json").json()
            assert len(tickets["items"]) > 0 and all(t["number"].startswith("GD") for t in tickets["items"])
            assert "服务工单" in http.get("/a/service_ticket/ticket").text
        finally:
            http.close()
    finally:
        output = stop(process)
    assert "fresh instance" not in output and "created the instance administrator" not in output
    assert "an admin user exists; to reset its password: python run.py user add admin --admin --password NEW" in output


def _installed(tmp_path: Path) -> tuple[Path, str]:
    """The pack installed and migrated with demo data, through the command line."""
    definitions, url = tmp_path / "definitions", f"sqlite:///{tmp_path}/kiln.db"
    done = run_cli("market", "install", "service_ticket", "--demo", "--db", url, "--definitions", str(definitions))
    assert done.returncode == 0, done.stderr
    return definitions, url


def test_serve_refuses_an_unapplied_migration(tmp_path: Path):
    definitions, url = _installed(tmp_path)
    (definitions / "service_ticket" / "custom.yaml").write_text(
        "entities:\n  ticket:\n    fields:\n      floor: {type: integer, label: {zh: 楼层, en: Floor}}\n", encoding="utf-8"
    )
    done = run_cli("serve", "--port", str(free_port()), "--db", url, "--definitions", str(definitions))
    assert done.returncode == 1
    assert "python run.py migrate" in done.stderr
    assert "floor" in done.stderr  # the plan says what is missing
    assert "Kiln is serving" not in done.stdout


def test_serve_reports_definition_errors_with_their_place(tmp_path: Path):
    definitions, url = _installed(tmp_path)
    (definitions / "service_ticket" / "custom.yaml").write_text(
        "entities:\n  ticket:\n    fields:\n      floor: {type: integr}\n", encoding="utf-8"
    )
    done = run_cli("serve", "--port", str(free_port()), "--db", url, "--definitions", str(definitions))
    assert done.returncode == 1
    assert re.search(r"service_ticket/custom\.yaml:4:\d+: .*integr", done.stderr), done.stderr
    assert "Kiln is serving" not in done.stdout


# -- the web app in process ---------------------------------------------------------------------------


class Client:
    """Requests to the ASGI app in process (httpx's ASGI transport, no server)."""

    def __init__(self, app) -> None:
        self.app = app

    def get(self, path: str) -> httpx.Response:
        async def fetch() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://kiln.test") as http:
                return await http.get(path)

        return asyncio.run(fetch())


@pytest.fixture
def client(tmp_path: Path, db_url: str, open_instance):
    definitions = tmp_path / "definitions"
    packs.install("service_ticket", definitions)
    instance = open_instance(definitions, db_url)
    return Client(create_app(instance)), instance


def test_health(client):
    http, _ = client
    response = http.get("/-/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
