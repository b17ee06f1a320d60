"""The filtered list page written by hand on Starlette and SQLAlchemy Core: the yardstick that
``benchmarks.web`` measures beside Kiln's generated page, in the same run and the same way.

One route, ``/tickets?state=...&category=...&cursor=ID``: the same query as Kiln's list page
(equality filters, keyset page of 50, newest first), the linked devices looked up in one more
query as Kiln does, rendered as an HTML table by an autoescaped Jinja2 template. It has no
sessions, permissions, translations or filter controls, so it is the floor, not a twin.

Served by uvicorn with 2 workers: ``python -m benchmarks.handwritten --db URL --port P``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from zoneinfo import ZoneInfo

import jinja2
import uvicorn
from sqlalchemy import MetaData, Table, create_engine, event, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

LIMIT = 50
TZ = ZoneInfo("Asia/Shanghai")
CATEGORIES = {"mechanical": "机械", "electrical": "电气", "network": "网络", "system": "系统"}
URGENCIES = {"high": "紧急", "normal": "一般"}
STATES = {"pending": "待处理", "dispatched": "已派单", "in_progress": "处理中", "awaiting_check": "待验收", "closed": "已关闭"}

PAGE = """<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>维修工单</title></head>
<body><main>
<h1>维修工单</h1>
<form method="get"><input type="hidden" name="state" value="{{ state }}"><input type="hidden" name="category" value="{{ category }}"></form>
<table>
<thead><tr><th>编号</th><th>状态</th><th>摘要</th><th>设备</th><th>类别</th><th>紧急程度</th><th>服务器IP</th><th>丢包率</th><th>预估费用</th><th>创建时间</th></tr></thead>
<tbody>
{% for row in rows %}<tr>
<td><a href="/tickets/{{ row.id }}">{{ row.number }}</a></td><td>{{ row.state }}</td><td>{{ row.summary }}</td>
<td><a href="/devices/{{ row.device }}">{{ row.device_name }}</a></td><td>{{ row.category }}</td><td>{{ row.urgency }}</td>
<td>{{ row.server_ip }}</td><td>{{ row.packet_loss }}</td><td>{{ row.est_cost }}</td><td>{{ row.created_at }}</td>
</tr>
{% endfor %}</tbody></table>
{% if next_cursor %}<a href="?state={{ state }}&amp;category={{ category }}&amp;cursor={{ next_cursor }}">下一页</a>{% endif %}
</main></body></html>
"""


def create_app(url: str) -> Starlette:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    meta = MetaData()
    ticket = Table("bench__ticket", meta, autoload_with=engine)
    device = Table("bench__device", meta, autoload_with=engine)
    template = jinja2.Environment(autoescape=True).from_string(PAGE)
    columns = [ticket.c[n] for n in ("id", "number", "state", "summary", "device", "category", "urgency",
                                     "server_ip", "packet_loss", "est_cost", "created_at")]  # fmt: skip

    def render(state: str, category: str, cursor: str | None) -> str:
        query = select(*columns).order_by(ticket.c.id.desc()).limit(LIMIT + 1)
        if state:
            query = query.where(ticket.c.state == state)
        if category:
            query = query.where(ticket.c.category == category)
        if cursor and cursor.isdigit():
            query = query.where(ticket.c.id < int(cursor))
        with engine.connect() as conn:
            found = conn.execute(query).mappings().all()
            page = found[:LIMIT]
            ids = sorted({r["device"] for r in page if r["device"] is not None})
            names = dict(conn.execute(select(device.c.id, device.c.name).where(device.c.id.in_(ids))).all()) if ids else {}
        rows = []
        for r in page:
            created = r["created_at"]
            if isinstance(created, dt.datetime):
                created = (created if created.tzinfo else created.replace(tzinfo=dt.UTC)).astimezone(TZ).strftime("%Y-%m-%d %H:%M")
            rows.append({
                "id": r["id"], "number": r["number"], "state": STATES.get(r["state"], r["state"]), "summary": r["summary"],
                "device": r["device"], "device_name": names.get(r["device"], f"#{r['device']}"),
                "category": CATEGORIES.get(r["category"] or "", ""), "urgency": URGENCIES.get(r["urgency"] or "", ""),
                "server_ip": r["server_ip"] or "", "packet_loss": r["packet_loss"] if r["packet_loss"] is not None else "",
                "est_cost": r["est_cost"] if r["est_cost"] is not None else "", "created_at": created,
            })  # fmt: skip
        next_cursor = page[-1]["id"] if len(found) > LIMIT else None
        return template.render(rows=rows, state=state, category=category, next_cursor=next_cursor)

    async def tickets(request: Request) -> HTMLResponse:
        params = request.query_params
        html = await run_in_threadpool(render, params.get("state", ""), params.get("category", ""), params.get("cursor"))
        return HTMLResponse(html)

    async def health(request: Request) -> HTMLResponse:
        return HTMLResponse("ok")

    return Starlette(routes=[Route("/tickets", tickets), Route("/-/health", health)])


def app_from_env() -> Starlette:
    return create_app(os.environ["HANDWRITTEN_DB"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ["HANDWRITTEN_DB"] = args.db
    # No access log, as Kiln's default (run.py serve --access-log turns it on).
    uvicorn.run(
        "benchmarks.handwritten:app_from_env", factory=True, host="127.0.0.1", port=args.port, workers=args.workers,
        access_log=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
