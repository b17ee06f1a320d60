"""The served web app under load (issue 3's targets: with 2 server processes over 1,000,000
tickets on SQLite, at least 300 filtered list pages per second and at least 500 API creates per
second), beside the same list page written by hand (benchmarks/handwritten.py), in the same run.

The million tickets of the ``list`` benchmark (data/bench/list-N.db) are copied to a scratch
file, migrated, and given a dispatcher with a password and an API token; ``run.py serve
--workers 2`` is started as a subprocess, logged into once for a session cookie, and driven from
this process with a fixed number of requests in flight for a fixed time: GET of the filtered list
page (state and category, a page of 50), then POST of API creates. The hand-written page is then
served by uvicorn with 2 workers on the same copy and measured the same way. The load generator
is ``wrk`` when installed, else an asyncio httpx client; either shares the machine's cores with
the servers, which the figures' notes say.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import listpage
from benchmarks.common import TICKET_APP, Result, write_app
from engine import accounts, migrations
from engine.instance import Instance

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench_dispatcher", "bench-dispatcher-password-1"
FILTERS = "state=pending&category=network&limit=50"
CREATE_BODY = {"summary": "轴承异响，停机风险", "device": 1, "category": "mechanical", "est_cost": "120.50"}


class ServerError(RuntimeError):
    """A server under test misbehaved: a refused login, an error page, a failed create."""


class ServerStartError(ServerError):
    """A server under test did not come up (the smoke test skips on it)."""


@dataclass
class Load:
    requests: int
    seconds: float
    median_ms: float
    errors: int
    tool: str

    @property
    def rate(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess in its own process group, stopped (terminate, then kill) on exit."""

    def __init__(self, argv: list[str], port: int, log: Path, env: dict | None = None) -> None:
        self.argv, self.port, self.log, self.env = argv, port, log, env
        self.base = f"http://127.0.0.1:{port}"

    def __enter__(self) -> Server:
        with self.log.open("wb") as out:
            env = {**os.environ, **(self.env or {})}
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(self.base + "/-/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(f"server did not answer /-/health within 60 s: {self.tail()}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


def prepare(definitions: Path, url: str) -> str:
    """Migrate the copy, add the dispatcher (password) and return an API token for them."""
    instance = Instance.open(definitions, url, env={})
    try:
        migrations.apply(instance.engine, instance.compiled)
        accounts.add_user(instance.engine, USER, "bench", roles=["dispatcher"], password=PASSWORD)
        return accounts.create_token(instance.engine, USER, "bench")
    finally:
        instance.close()


def log_in(base: str) -> str:
    """The ``Cookie`` header of a logged-in session (the login form with its CSRF token)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        form = client.get("/login")
        found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        if found is None:
            raise ServerError("no csrf_token on /login")
        done = client.post("/login", data={"username": USER, "password": PASSWORD, "csrf_token": found.group(1), "next": "/"})
        if done.status_code != 303:
            raise ServerError(f"login failed: {done.status_code}")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def check_page(url: str, headers: dict[str, str]) -> int:
    """GET once and return the number of table rows (so a login page or an error is not timed)."""
    response = httpx.get(url, headers=headers, timeout=30)
    if response.status_code != 200:
        raise ServerError(f"GET {url}: {response.status_code} {response.text[:300]}")
    return response.text.count("<tr") - 1  # less the header row


# -- load generators -------------------------------------------------------------------------

WRK_POST = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""
WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_load(url: str, headers: dict[str, str], seconds: float, concurrency: int, body: dict | None, tmp: Path) -> Load:
    argv = ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s", "--latency", "--timeout", "30s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    if body is not None:
        script = tmp / "post.lua"
        script.write_text(WRK_POST.format(body=json.dumps(json.dumps(body, ensure_ascii=False), ensure_ascii=False)), encoding="utf-8")
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    median = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", out, re.M)
    if done is None or median is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    elapsed = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return Load(int(done.group(1)), elapsed, float(median.group(1)) * WRK_UNITS[median.group(2)], errors, f"wrk -t1 -c{concurrency}")


async def _httpx_load(url: str, headers: dict[str, str], seconds: float, concurrency: int, body: dict | None, limit: int) -> Load:
    latencies: list[float] = []
    errors = 0
    content = json.dumps(body).encode() if body is not None else None
    send_headers = {**headers, **({"Content-Type": "application/json"} if body is not None else {})}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline and len(latencies) < limit:
                t0 = time.perf_counter()
                if content is None:
                    response = await client.get(url, headers=send_headers)
                else:
                    response = await client.post(url, headers=send_headers, content=content)
                latencies.append((time.perf_counter() - t0) * 1000)
                if response.status_code >= 400:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return Load(len(latencies), elapsed, statistics.median(latencies) if latencies else 0.0, errors, f"httpx asyncio, {concurrency} in flight")


def load(url: str, headers: dict[str, str], options: dict, tmp: Path, body: dict | None = None) -> Load:
    seconds, concurrency = float(options.get("web_seconds", 10)), int(options.get("web_concurrency", 16))
    warmup = float(options.get("web_warmup", min(2.0, seconds / 5)))
    use_wrk = shutil.which("wrk") is not None and options.get("web_client", "wrk") == "wrk"
    if use_wrk:
        if warmup:
            wrk_load(url, headers, warmup, concurrency, body, tmp)
        return wrk_load(url, headers, seconds, concurrency, body, tmp)
    limit = int(options.get("web_max_requests", 100_000))
    if warmup:
        asyncio.run(_httpx_load(url, headers, warmup, concurrency, body, limit))
    return asyncio.run(_httpx_load(url, headers, seconds, concurrency, body, limit))


# -- the benchmark ---------------------------------------------------------------------------


def base_database(definitions: Path, cache: Path, count: int) -> Path:
    """The cached database of the ``list`` benchmark, made (or brought up to date) here."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"list-{count}.db"
    instance = Instance.open(definitions, f"sqlite:///{path}", env={})
    try:
        migrations.apply(instance.engine, instance.compiled)
        listpage.fill(instance, count)
    finally:
        instance.close()
    return path


def run(options: dict) -> list[Result]:
    count = int(options.get("rows", 1_000_000))
    cache = Path(options.get("cache", "data/bench"))
    workers = int(options.get("web_workers", 2))
    with tempfile.TemporaryDirectory(prefix="kiln-web-") as name:
        tmp = Path(name)
        definitions = write_app(tmp / "definitions", TICKET_APP)
        source = base_database(definitions, cache, count)
        copy = tmp / "web.db"
        shutil.copyfile(source, copy)  # the creates must not grow the shared cache
        for suffix in ("-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copyfile(f"{source}{suffix}", f"{copy}{suffix}")
        url = f"sqlite:///{copy}"
        token = prepare(definitions, url)

        port = free_port()
        kiln = [sys.executable, "run.py", "serve", "--workers", str(workers), "--port", str(port), "--db", url, "--definitions", str(definitions)]
        with Server(kiln, port, tmp / "kiln.log") as server:
            cookie = {"Cookie": log_in(server.base)}
            page_url = f"{server.base}/a/bench/ticket?{FILTERS}"
            kiln_rows = check_page(page_url, cookie)
            kiln_page = load(page_url, cookie, options, tmp)
            bearer = {"Authorization": f"Bearer {token}"}
            api_url = f"{server.base}/api/v1/bench/ticket"
            probe = httpx.post(api_url, headers=bearer, json=CREATE_BODY, timeout=30)
            if probe.status_code != 201:
                raise ServerError(f"POST {api_url}: {probe.status_code} {probe.text[:300]}")
            creates = load(api_url, bearer, options, tmp, body=CREATE_BODY)

        port = free_port()
        hand = [sys.executable, "-m", "benchmarks.handwritten", "--db", url, "--port", str(port), "--workers", str(workers)]
        with Server(hand, port, tmp / "handwritten.log") as server:
            page_url = f"{server.base}/tickets?{FILTERS}"
            hand_rows = check_page(page_url, {})
            hand_page = load(page_url, {}, options, tmp)

    label = f"{count:,} records, sqlite, {workers} worker{'s' if workers != 1 else ''}"
    shared = f"{os.cpu_count()} cores shared with the load generator"

    def note(result: Load, extra: str = "") -> str:
        errors = f", {result.errors} errors" if result.errors else ""
        return f"median {result.median_ms:.1f} ms, {result.requests} requests, {result.tool}, {shared}{errors}{extra}"

    return [
        Result(f"web: filtered list page, Kiln, {label}", kiln_page.rate, "pages/s", ">= 300/s", note(kiln_page, f", {kiln_rows} rows")),
        Result(f"web: filtered list page, hand-written, {label}", hand_page.rate, "pages/s", "", note(hand_page, f", {hand_rows} rows")),
        Result(f"web: API creates, Kiln, {label}", creates.rate, "creates/s", ">= 500/s", note(creates)),
    ]
