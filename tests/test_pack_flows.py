"""The service-ticket pack as a new user tries it (issue 4's "done when"), through the JSON API
and the pages, with the pack's demo users: a dispatcher dispatches, the technician accepts and
finishes by uploading the report (S5), the owner confirms; a costly repair waits for the
director (S3); a bearing fault at night goes straight to the night shift (S12); a device's third
fault of a kind in 7 days is tagged and raises a follow-up task (S14)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from apps.web import create_app
from engine import accounts, packs
from engine.actors import SYSTEM
from engine.demo import load_demo
from tests.test_pages_support import CSRF, session_cookie

APP = "service_ticket"
API = f"/api/v1/{APP}"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Pack:
    """The pack installed with its demo data, and an API client per demo user."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.app = create_app(instance)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test")
        self.tokens: dict[str, str] = {}

    def auth(self, user: str, version: int | None = None) -> dict[str, str]:
        if user not in self.tokens:
            self.tokens[user] = accounts.create_token(self.instance.engine, user)
        return {"Authorization": f"Bearer {self.tokens[user]}", **({"If-Match": str(version)} if version is not None else {})}

    def records(self) -> Any:
        return self.instance.records(APP)

    def one(self, entity: str, name: str) -> int:
        items = self.records().list(entity, SYSTEM, limit=100).items
        return next(i["id"] for i in items if i["name"] == name)

    async def ticket(self, who: str, summary: str = "阳台地漏堵塞", **values: Any) -> dict[str, Any]:
        body = {"summary": summary, "category": "plumbing", "area": "indoor", "owner_cooperation": "yes",
                "reporter_phone": "13800138000", "building": self.one("building", "锦绣花园1号楼"), **values}  # fmt: skip
        r = await self.client.post(f"{API}/ticket", json=body, headers=self.auth(who))
        assert r.status_code == 201, r.text
        return r.json()

    async def get(self, who: str, record_id: int) -> dict[str, Any]:
        r = await self.client.get(f"{API}/ticket/{record_id}", headers=self.auth(who))
        assert r.status_code == 200, r.text
        return r.json()

    async def move(self, who: str, record: dict[str, Any], name: str, **body: Any) -> Any:
        return await self.client.post(f"{API}/ticket/{record['id']}/transitions/{name}", json=body, headers=self.auth(who, record["version"]))

    async def step(self, who: str, record: dict[str, Any], name: str, **body: Any) -> dict[str, Any]:
        r = await self.move(who, record, name, **body)
        assert r.status_code == 200, r.text
        return r.json()

    async def upload(self, who: str, name: str = "report.pdf", data: bytes = b"%PDF-1.4 repaired") -> str:
        files = {"file": (name, data, "application/pdf")}
        r = await self.client.post("/api/v1/files", params={"field": f"{APP}.ticket.report"}, files=files, headers=self.auth(who))
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def history(self, record_id: int, entity: str = "ticket") -> list[dict[str, Any]]:
        return self.records().history(entity, record_id, SYSTEM)

    def outbox(self, record_id: int) -> list[tuple[str, str, str | None]]:
        """(recipient, channel, subject) of the notifications queued about the record."""
        outbox = self.instance.schema.system["kiln_outbox"]
        with self.instance.engine.connect() as conn:
            query = select(outbox.c.recipient, outbox.c.channel, outbox.c.payload).where(outbox.c.record_id == record_id)
            return [(r.recipient, r.channel, (r.payload or {}).get("subject")) for r in conn.execute(query)]

    def user_id(self, username: str) -> int:
        return accounts.get_user(self.instance.engine, username).id


def pack_page(pack: Pack, user: str) -> httpx.AsyncClient:
    """A browser's session of ``user`` on the pages, in Chinese."""
    page = httpx.AsyncClient(transport=httpx.ASGITransport(app=pack.app), base_url="http://test")
    page.cookies.set("lang", "zh")
    page.cookies.set("kiln_session", session_cookie(pack.instance, {"uid": pack.user_id(user), "csrf": CSRF}))
    return page


@pytest.fixture
def pack(tmp_path: Path, db_url: str, open_instance) -> Pack:
    definitions = tmp_path / "definitions"
    done = packs.install(APP, definitions)
    instance = open_instance(definitions, db_url)
    load_demo(instance, APP, done.pack.demo_file)
    return Pack(instance)


async def test_s5_the_report_upload_finishes_the_job_and_the_owner_confirms(pack: Pack):
    t = await pack.ticket("zhang_xiuying")  # an owner reports it
    t = await pack.step("wang_lei", t, "dispatch", assignee="chen_gang")
    t = await pack.step("chen_gang", t, "accept")
    report = await pack.upload("chen_gang")
    r = await pack.client.patch(f"{API}/ticket/{t['id']}", json={"report": report}, headers=pack.auth("chen_gang", t["version"]))
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["state"] == "awaiting_check" and t["report"] == report
    finish = next(h for h in pack.history(t["id"]) if h["action"] == "transition:finish")
    assert finish["actor"] == "system" and finish["rule"] == "报告上传自动待验收"
    assert [c for r, c, _ in pack.outbox(t["id"]) if r == str(pack.user_id("zhang_xiuying"))] == ["in_app"]  # 待验收通知业主
    page = await pack_page(pack, "chen_gang").get(f"/a/{APP}/ticket/{t['id']}")
    history = page.text.split('id="timeline"')[1]
    assert "维修完成报告: <del>—</del> → <ins>report.pdf</ins>" in history and report not in history
    assert "report.pdf</a> <span class=\"muted\">(17 B)</span>" in page.text  # the attachment, sized for people
    # people by their display names: the technician in the field, the dispatcher in the history
    assert "陈刚" in page.text.split('id="timeline"')[0] and "<strong>王磊</strong>" in history
    assert "张秀英 创建于" in page.text  # the owner who reported it
    t = await pack.step("zhang_xiuying", t, "confirm")
    assert t["state"] == "closed"


async def test_finishing_needs_the_report_and_the_dialog_uploads_it(pack: Pack):
    t = await pack.ticket("li_jing")
    t = await pack.step("wang_lei", t, "dispatch", assignee="liu_qiang")
    t = await pack.step("liu_qiang", t, "accept")
    refused = await pack.move("liu_qiang", t, "finish")
    assert refused.status_code == 422 and refused.json()["error"]["fields"] == {"report": "required to finish"}
    assert (await pack.get("liu_qiang", t["id"]))["state"] == "in_progress"

    page = pack_page(pack, "liu_qiang")
    url = f"/a/{APP}/ticket/{t['id']}/transitions/finish"
    dialog = await page.get(url, headers={"hx-request": "true"})
    assert dialog.status_code == 200, dialog.text
    assert f'data-field="{APP}.ticket.report.report"' not in dialog.text
    assert f'data-field="{APP}.ticket.report"' in dialog.text and 'id="in-report"' in dialog.text and "维修完成报告" in dialog.text
    # a refusal in the reader's language, with the definition's labels
    empty = await page.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "report": ""}, headers={"hx-request": "true"})
    assert empty.status_code == 422 and "完工待验收需要填写：维修完成报告" in empty.text and "完工待验收时必填" in empty.text
    page.cookies.set("lang", "en")
    empty = await page.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "report": ""}, headers={"hx-request": "true"})
    assert "“Finish” needs: Completion report" in empty.text
    report = await pack.upload("liu_qiang")
    done = await page.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "report": report}, headers={"hx-request": "true"})
    assert done.status_code == 200 and done.headers["hx-redirect"] == f"/a/{APP}/ticket/{t['id']}"
    t = await pack.get("liu_qiang", t["id"])
    assert t["state"] == "awaiting_check" and t["report"] == report
    # the finish the technician took, not the upload rule's (its condition no longer holds)
    assert [h["actor"] for h in pack.history(t["id"]) if h["action"] == "transition:finish"] == ["liu_qiang"]


async def test_a_technician_sending_a_ticket_back_lands_on_the_list(pack: Pack):
    t = await pack.ticket("li_jing")
    t = await pack.step("wang_lei", t, "dispatch", assignee="chen_gang")
    page = pack_page(pack, "chen_gang")
    url = f"/a/{APP}/ticket/{t['id']}/transitions/send_back"
    refused = await page.post(url, data={"csrf_token": CSRF, "version": str(t["version"])}, headers={"hx-request": "true"})
    assert refused.status_code == 422 and "退回需要填写意见" in refused.text
    done = await page.post(url, data={"csrf_token": CSRF, "version": str(t["version"]), "comment": "不是我负责的楼栋"},
                           headers={"hx-request": "true"})  # fmt: skip
    # 待受理 is the desk's: the technician no longer sees the ticket, so not its page (a 404) but the list
    assert done.status_code == 200 and done.headers["hx-redirect"] == f"/a/{APP}/ticket"
    assert (await pack.get("wang_lei", t["id"]))["state"] == "pending"


async def test_s3_a_costly_repair_waits_for_the_director(pack: Pack):
    t = await pack.ticket("li_jing", "地库排污泵更换")
    t = await pack.step("wang_lei", t, "dispatch", assignee="chen_gang")
    r = await pack.client.patch(f"{API}/ticket/{t['id']}", json={"est_cost": "8600"}, headers=pack.auth("chen_gang", t["version"]))
    assert r.status_code == 200, r.text
    t = r.json()
    blocked = await pack.move("chen_gang", t, "accept")
    assert blocked.status_code == 409 and "waiting for approval director_approval (pending with sun_hui)" in blocked.text
    assert await pack.get("chen_gang", t["id"]) == t
    inbox = (await pack.client.get("/api/v1/me/approvals", headers=pack.auth("sun_hui"))).json()["items"]
    assert [(i["record_id"], i["approval"]) for i in inbox] == [(t["id"], "director_approval")]
    director = pack_page(pack, "sun_hui")
    workspace = await director.get("/")
    assert workspace.status_code == 200 and "总监审批" in workspace.text and t["number"] in workspace.text
    card = await director.get(f"/a/{APP}/ticket/{t['id']}")
    assert "<span>孙辉</span>" in card.text  # the approver by display name
    director.cookies.set("lang", "en")
    assert "Director approval" in (await director.get("/")).text
    assert "Director approval" in (await director.get(f"/a/{APP}/ticket/{t['id']}")).text
    decided = await pack.client.post(f"{API}/ticket/{t['id']}/approvals/director_approval", json={"decision": "approve", "comment": "同意更换"},
                               headers=pack.auth("sun_hui"))  # fmt: skip
    assert decided.status_code == 200, decided.text
    t = await pack.step("chen_gang", t, "accept")
    assert t["state"] == "in_progress"
    entry = next(h for h in pack.history(t["id"]) if h["action"] == "approval:director_approval" and h["actor"] == "sun_hui")
    assert entry["comment"] == "同意更换"

    cheap = await pack.ticket("li_jing", "门禁读卡器更换", est_cost="320")
    cheap = await pack.step("wang_lei", cheap, "dispatch", assignee="chen_gang")
    assert (await pack.step("chen_gang", cheap, "accept"))["state"] == "in_progress"  # under the threshold: no approval


async def test_s3_a_rejection_sends_the_ticket_back_with_the_directors_comment(pack: Pack):
    t = await pack.ticket("li_jing", "整栋楼道灯具更换", est_cost="12000")
    t = await pack.step("wang_lei", t, "dispatch", assignee="liu_qiang")
    r = await pack.client.post(f"{API}/ticket/{t['id']}/approvals/director_approval", json={"decision": "reject", "comment": "先比价"},
                         headers=pack.auth("sun_hui"))  # fmt: skip
    assert r.status_code == 200 and r.json()["record"]["state"] == "pending"
    back = pack.history(t["id"])[-1]
    assert back["action"] == "transition:send_back" and back["comment"] == "director_approval rejected by sun_hui: 先比价"


async def test_s12_a_bearing_fault_at_night_goes_straight_to_the_night_shift(pack: Pack):
    records, desk = pack.records(), accounts.actor_for(pack.instance.engine, "li_jing", APP)
    values = {"summary": "地库生活水泵轴承异响", "category": "plumbing", "area": "public", "owner_cooperation": "no",
              "reporter_phone": "13800138000", "building": pack.one("building", "锦绣花园地下车库")}  # fmt: skip
    night = records.create("ticket", values, desk, now=dt.datetime(2026, 12, 7, 22, 30, tzinfo=SHANGHAI).astimezone(dt.UTC))
    assert night["state"] == "dispatched" and night["assignee"] == "ma_chao"
    assert (str(pack.user_id("ma_chao")), "in_app", f"夜间直派工单 {night['number']}") in pack.outbox(night["id"])
    assert [h["rule"] for h in pack.history(night["id"]) if h["action"] == "transition:dispatch"] == ["夜班直派派单"]

    day = records.create("ticket", values, desk, now=dt.datetime(2026, 12, 8, 10, 0, tzinfo=SHANGHAI).astimezone(dt.UTC))
    assert day["state"] == "pending" and day["assignee"] is None
    plain = records.create("ticket", {**values, "summary": "地库照明不亮"}, desk, now=dt.datetime(2026, 12, 7, 23, 0, tzinfo=SHANGHAI).astimezone(dt.UTC))
    assert plain["state"] == "pending" and plain["assignee"] is None


async def test_s12_with_nobody_on_the_night_shift_the_ticket_waits_for_the_dispatcher(pack: Pack):
    from sqlalchemy import delete

    members = pack.instance.schema.system["kiln_team_members"]
    with pack.instance.engine.begin() as conn:
        conn.execute(delete(members).where(members.c.user_id == pack.user_id("ma_chao")))
    desk = accounts.actor_for(pack.instance.engine, "li_jing", APP)
    values = {"summary": "电梯停机风险", "category": "elevator", "area": "public", "owner_cooperation": "no",
              "reporter_phone": "13800138000", "building": pack.one("building", "锦绣花园1号楼")}  # fmt: skip
    t = pack.records().create("ticket", values, desk, now=dt.datetime(2026, 12, 7, 2, 0, tzinfo=SHANGHAI).astimezone(dt.UTC))
    assert t["state"] == "pending" and t["assignee"] is None


async def test_s14_a_devices_third_fault_of_a_kind_in_7_days_raises_a_follow_up(pack: Pack):
    lift = pack.one("device", "2号楼1单元电梯")  # its demo fault is 8 days old: outside the window
    made = [await pack.ticket("li_jing", f"电梯故障 {i}", category="elevator", area="public", device=lift) for i in range(3)]
    assert [t["tags"] for t in made] == [[], [], ["重复故障"]]
    assert made[2]["flags"]["red"]["rule"] == "重复故障预警" and made[1]["flags"] == {}
    follow_ups = pack.records().list("follow_up", SYSTEM).items
    assert [(f["device"], f["ticket"], f["status"]) for f in follow_ups] == [(lift, made[2]["id"], "open")]
    assert [h["rule"] for h in pack.history(follow_ups[0]["id"], "follow_up")] == ["重复故障预警"]
    made_by_rule = next(h for h in pack.history(made[2]["id"]) if h["action"] == "create:follow_up")
    assert made_by_rule["rule"] == "重复故障预警" and made_by_rule["changes"] == {"id": [None, follow_ups[0]["id"]]}
    page = await pack_page(pack, "li_jing").get(f"/a/{APP}/ticket/{made[2]['id']}")
    assert f'创建了记录 <a href="/a/{APP}/follow_up/{follow_ups[0]["id"]}">跟进任务 #{follow_ups[0]["id"]}</a>' in page.text
    assert "· 标记" in page.text and "发送了通知" in page.text and "<strong>系统</strong>" in page.text and "标记: <del>—</del> → <ins>red</ins>" in page.text
    # the task it links to, and the records of the entities without a workflow or a number, open
    dispatcher = pack_page(pack, "wang_lei")
    for url in (f"/a/{APP}/follow_up/{follow_ups[0]['id']}", f"/a/{APP}/follow_up/{follow_ups[0]['id']}/edit",
                f"/a/{APP}/device/{lift}", f"/a/{APP}/device/{lift}/edit", f"/a/{APP}/building/{pack.one('building', '锦绣花园1号楼')}"):
        opened = await dispatcher.get(url)
        assert opened.status_code == 200, (url, opened.text[-500:])
    assert "设备7天内3次同类故障，安排排查" in (await dispatcher.get(f"/a/{APP}/follow_up/{follow_ups[0]['id']}")).text and "notify" not in page.text.split('id="timeline"')[1]
    told = {recipient for recipient, _, subject in pack.outbox(made[2]["id"]) if subject == f"重复故障预警 {made[2]['number']}"}
    assert told == {str(pack.user_id("wang_lei"))}
    other = await pack.ticket("li_jing", "电梯门异响", category="doors_windows", device=lift)  # another kind of fault
    assert other["tags"] == []


async def test_the_workflow_diagram_reads_to_the_final_state(pack: Pack):
    """The pack's cancel goes from 待受理 straight to 已关闭: 已关闭 is still drawn last (not
    beside 已派单), and the cancels are arcs above the boxes they skip."""
    page = await pack_page(pack, "wang_lei").get(f"/a/{APP}/ticket/workflow")
    assert page.status_code == 200
    svg = page.text.split('id="workflow-diagram"><svg', 1)[1].split("</svg>")[0]
    x = {m.group(1): int(m.group(2)) for m in re.finditer(r'data-state="(\w+)"><rect x="(\d+)"', svg)}
    assert sorted(x, key=x.get) == ["pending", "dispatched", "in_progress", "awaiting_check", "closed"]
    y = {m.group(1): int(m.group(2)) for m in re.finditer(r'data-state="(\w+)"><rect x="\d+" y="(\d+)"', svg)}
    assert len(set(y.values())) == 1  # one row
    arcs = re.findall(r'<path d="M(\d+),(\d+) C\d+,(\d+) ', svg)
    assert sum(1 for _, start, peak in arcs if int(peak) < int(start)) == 2  # the two cancels, above
