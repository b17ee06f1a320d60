"""Template packs: list, install (untouched copy, --as, refusals), the service_ticket pack itself
(compiles, migrates, S15-S17) and its demo data."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from engine import accounts, migrations, packs
from engine.actors import SYSTEM
from engine.compiler import compile_definitions
from engine.demo import DemoError, load_demo
from engine.source import plain, read_yaml

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "marketplace" / "service_ticket"
APP = "service_ticket"


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    return tmp_path / "definitions"


@pytest.fixture
def installed(definitions: Path, db_url: str, open_instance):
    """The pack installed and migrated, with its demo data loaded."""
    done = packs.install(APP, definitions)
    instance = open_instance(definitions, db_url)
    result = load_demo(instance, APP, done.pack.demo_file)
    return instance, result


# -- listing and installing ---------------------------------------------------------------------------


def test_list_reads_pack_yaml():
    found = {p.name: p for p in packs.list_packs()}
    pack = found[APP]
    assert pack.version == "1.1.0"
    assert pack.label.get("zh") == "服务工单管理系统" and pack.label.get("en") == "Service tickets"
    assert pack.app == APP and pack.requires == () and pack.screenshots == ()
    assert pack.demo_file == PACK / "demo.yaml"


def test_install_copies_definition_files_untouched(definitions: Path):
    done = packs.install(APP, definitions)
    target = definitions / APP
    assert done.app == APP and done.folder == target
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    files = ["app.yaml", "entities/building.yaml", "entities/device.yaml", "entities/ticket.yaml"]
    assert copied == [".pack.yaml", *files]
    for rel in files:
        assert filecmp.cmp(PACK / rel, target / rel, shallow=False)
    record = yaml.safe_load((target / ".pack.yaml").read_text(encoding="utf-8"))
    assert record["pack"] == APP and record["version"] == "1.1.0" and record["app"] == APP
    assert record["files"] == files
    assert packs.installed(definitions) == {APP: record}
    assert not list(definitions.glob(".installing-*"))


def test_install_as_renames_the_app_through_the_overlay(definitions: Path):
    packs.install(APP, definitions)
    done = packs.install(APP, definitions, as_app="estate_repairs")
    target = definitions / "estate_repairs"
    assert done.app == "estate_repairs"
    assert filecmp.cmp(PACK / "entities" / "ticket.yaml", target / "entities" / "ticket.yaml", shallow=False)
    assert yaml.safe_load((target / "custom.yaml").read_text(encoding="utf-8")) == {"app": "estate_repairs"}
    compiled = compile_definitions(definitions)
    assert sorted(compiled.apps) == ["estate_repairs", APP]
    assert packs.installed(definitions)["estate_repairs"]["pack"] == APP


def test_install_refuses_an_existing_app_folder(definitions: Path):
    packs.install(APP, definitions)
    (definitions / APP / "custom.yaml").write_text("label: mine\n", encoding="utf-8")
    with pytest.raises(packs.PackError, match=r"already exists.*--as NEW_NAME"):
        packs.install(APP, definitions)
    assert (definitions / APP / "custom.yaml").read_text(encoding="utf-8") == "label: mine\n"


@pytest.mark.parametrize("name", ["Bad-Name", "two__parts", "1st"])
def test_install_refuses_an_invalid_app_name(definitions: Path, name: str):
    with pytest.raises(packs.PackError, match="not a valid app name"):
        packs.install(APP, definitions, as_app=name)
    assert not (definitions / name).exists()


def test_unknown_pack_suggests_the_closest():
    with pytest.raises(packs.PackError, match="did you mean 'service_ticket'"):
        packs.get_pack("service_tickets")


def test_install_refuses_a_pack_whose_requirement_is_missing(tmp_path: Path, definitions: Path):
    market = tmp_path / "market"
    (market / "addon").mkdir(parents=True)
    (market / "addon" / "pack.yaml").write_text("name: addon\nversion: 0.1\nrequires: [service_ticket]\n", encoding="utf-8")
    (market / "addon" / "app.yaml").write_text("app: addon\nentities: {x: {fields: {a: {type: text}}}}\n", encoding="utf-8")
    with pytest.raises(packs.PackError, match="needs the pack"):
        packs.install("addon", definitions, marketplace=market)
    packs.install(APP, definitions)
    assert packs.install("addon", definitions, marketplace=market).app == "addon"


def test_market_commands(tmp_path: Path, definitions: Path):
    common = ["--db", f"sqlite:///{tmp_path}/kiln.db", "--definitions", str(definitions)]

    def market(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "run.py", "market", *args, *common], cwd=ROOT, capture_output=True, text=True, timeout=120)

    listing = market("list")
    assert listing.returncode == 0 and "service_ticket 1.1.0  服务工单管理系统" in listing.stdout
    first = market("install", APP)
    assert first.returncode == 0, first.stderr
    assert "python run.py migrate" in first.stdout
    again = market("install", APP)
    assert again.returncode == 1 and "already exists" in again.stderr
    copy = market("install", APP, "--as", "second", "--demo")
    assert copy.returncode == 0, copy.stderr
    assert "demo data: 8 building, 4 device, 30 ticket" in copy.stdout and "demo password: " in copy.stdout
    assert "installed as: second (1.1.0), service_ticket (1.1.0)" in market("list").stdout


def test_the_common_options_go_before_or_after_the_command(tmp_path: Path, definitions: Path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)

    db = f"sqlite:///{tmp_path}/kiln.db"
    before = run("--db", db, "--definitions", str(definitions), "market", "install", APP)
    assert before.returncode == 0, before.stderr
    assert (definitions / APP / "app.yaml").is_file()
    checked = run("--definitions", str(tmp_path / "elsewhere"), "check", "--definitions", str(definitions))  # the command's own wins
    assert checked.returncode == 0 and "ok: 1 app" in checked.stdout, checked.stdout + checked.stderr
    assert "installed as: service_ticket" in run("--definitions", str(definitions), "market", "list").stdout


# -- the pack: S15-S17 ----------------------------------------------------------------------------


def test_pack_compiles_with_the_scenario_fields_and_workflow(definitions: Path):
    packs.install(APP, definitions)
    app = compile_definitions(definitions).app(APP).app
    ticket = app.entity("ticket")
    # S15: 12 standard fields, S6's satisfaction rating, and the device, parts cost, report and tags
    # the approvals and rules of S3, S5, S12 and S14 read (tests/test_pack_flows.py)
    assert len(ticket.fields) == 17
    satisfaction = ticket.field("satisfaction")
    assert satisfaction.type == "rating" and satisfaction.max == 5 and satisfaction.label.get("zh") == "满意度"
    survey = next(r for r in ticket.rules if r.name == "满意度回访")  # S6: closing sends the survey
    assert survey.on == "entered(closed)" and survey.actions[0].args["template"] == "csat_survey"
    assert ticket.number == "GD{created:%Y%m%d}-{seq:4}"
    labels = {f.name: f.label.get("zh") for f in ticket.fields}
    assert labels["remarks"] == "备注" and labels["photos"] == "现场照片" and labels["assignee"] == "处理人"
    # S16: three required dropdowns with exactly these options
    dropdowns = {f.label.get("zh"): [o.get("zh") for _, o in f.options] for f in ticket.fields if f.type == "select" and f.required}
    assert dropdowns["问题归属"] == ["公共区域", "户内设施", "智能设备"]
    assert dropdowns["紧急程度"] == ["立即处理", "2小时内", "24小时内"]
    assert dropdowns["是否需业主配合"] == ["是", "否"]
    photos = ticket.field("photos")
    assert photos.type == "image" and photos.multiple and photos.max_size == 15 * 1024 * 1024
    assert ticket.field("assignee").role == "technician" and ticket.field("building").entity == "building"
    # S17: five states in order, 待受理 visible to customer service (and dispatchers) only
    workflow = ticket.workflow
    assert [workflow.state(s).label.get("zh") for s in workflow.state_names] == ["待受理", "已派单", "处理中", "待验收", "已关闭"]
    assert workflow.state_names == ("pending", "dispatched", "in_progress", "awaiting_check", "closed")
    assert set(workflow.state("pending").visible_to) == {"customer_service", "dispatcher", "owner"}
    path = [(t.sources, t.to) for t in (workflow.transition(n) for n in ("dispatch", "accept", "finish", "confirm"))]
    assert path == [(("pending",), "dispatched"), (("dispatched",), "in_progress"), (("in_progress",), "awaiting_check"), (("awaiting_check",), "closed")]
    assert set(app.role_names) == {"customer_service", "dispatcher", "technician", "owner", "director"}
    assert {p.role for p in ticket.permissions} == set(app.role_names)
    assert [s.title.get("zh") for s in ticket.form] == ["报修信息", "位置与联系", "处理"]


def test_every_label_of_the_pack_is_in_chinese_and_english():
    def labels(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("label", "section"):
                    yield f"{path}.{key}", value
                elif key == "options":
                    for option, text in value.items():
                        yield f"{path}.options.{option}", text
                else:
                    yield from labels(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                yield from labels(item, f"{path}[{i}]")

    found = [(p, v) for f in sorted(PACK.rglob("*.yaml")) if f.name != "demo.yaml" for p, v in labels(plain(read_yaml(f)), f.name)]
    assert len(found) > 40
    missing = [p for p, v in found if not (isinstance(v, dict) and v.get("zh") and v.get("en"))]
    assert missing == []


def test_pack_migrates(definitions: Path, db_url: str, open_instance):
    packs.install(APP, definitions)
    instance = open_instance(definitions, db_url)
    assert migrations.plan(instance.engine, instance.compiled).is_empty
    assert instance.records(APP).list("ticket", SYSTEM).items == []


# -- demo data --------------------------------------------------------------------------------------


def test_demo_loads_users_buildings_and_tickets(installed):
    instance, result = installed
    records = instance.records(APP)
    assert result.counts == {"building": 8, "device": 4, "ticket": 30}
    tickets = []
    page = records.list("ticket", SYSTEM, limit=50)
    tickets.extend(page.items)
    assert len(tickets) == 30 and page.next_cursor is None
    assert Counter(t["state"] for t in tickets) == {"closed": 8, "awaiting_check": 5, "in_progress": 6, "dispatched": 5, "pending": 6}
    assert all(t["number"].startswith("GD") and len(t["number"]) == len("GD20260218-0001") for t in tickets)
    assert len({t["number"] for t in tickets}) == 30
    for t in tickets:
        entered = [t[f"entered_{s}_at"] for s in ("pending", "dispatched", "in_progress", "awaiting_check", "closed")]
        assert entered[0] == t["created_at"]
        reached = [e for e in entered if e is not None]
        assert reached == sorted(reached)  # the states were entered in order
        assert (t["assignee"] is None) == (t["state"] == "pending" or t["summary"].startswith("重复报修"))
    owners_ticket = next(t for t in tickets if t["summary"] == "厨房水槽下水管漏水")
    assert owners_ticket["created_by"] == "zhang_xiuying" and owners_ticket["assignee"] == "liu_qiang"
    assert records.get("building", owners_ticket["building"], SYSTEM)["name"] == "锦绣花园1号楼"


def test_demo_users_have_roles_teams_leads_and_managers(installed):
    instance, result = installed
    engine = instance.engine
    assert {u for u, _ in result.users} >= {"li_jing", "wang_lei", "chen_gang", "zhang_xiuying"}
    assert accounts.verify_password(engine, "li_jing", result.password)
    li = accounts.actor_for(engine, "li_jing", APP)
    assert li.roles == {"customer_service"} and li.teams == {"service_desk"}
    assert accounts.get_user(engine, "li_jing").manager_id == accounts.get_user(engine, "zhao_min").id
    assert accounts.get_user(engine, "li_jing").display_name == "李静"
    assert accounts.team_lead(engine, APP, "maintenance") == "chen_gang"
    teams = accounts.tables()["kiln_teams"]
    with engine.connect() as conn:
        assert conn.execute(select(teams.c.label).where(teams.c.name == "service_desk")).scalar_one() == "客服中心"


def test_demo_respects_the_state_visibility_of_s17(installed):
    instance, _ = installed
    records = instance.records(APP)

    def visible(username: str) -> Counter:
        actor = accounts.actor_for(instance.engine, username, APP)
        return Counter(t["state"] for t in records.list("ticket", actor, limit=100).items)

    assert visible("li_jing")["pending"] == 6  # customer service sees 待受理
    assert visible("wang_lei")["pending"] == 6
    owner = visible("zhang_xiuying")
    # An owner follows their own tickets from the start (S20), 待受理 included; never others'.
    assert sum(owner.values()) > 0
    assert all(t["created_by"] == "zhang_xiuying" for t in records.list("ticket", accounts.actor_for(instance.engine, "zhang_xiuying", APP), limit=100).items)
    technician = accounts.actor_for(instance.engine, "zhou_tao", APP)
    mine = records.list("ticket", technician, limit=100).items
    assert mine and all(t["assignee"] == "zhou_tao" for t in mine)


def test_demo_refuses_an_app_that_has_records(installed):
    instance, _ = installed
    with pytest.raises(DemoError, match="already has records"):
        load_demo(instance, APP, PACK / "demo.yaml")


def test_s16_overlay_disables_remarks_and_keeps_the_pack_files(definitions: Path, db_url: str, open_instance):
    packs.install(APP, definitions)
    (definitions / APP / "custom.yaml").write_text("entities:\n  ticket:\n    fields:\n      remarks: {disabled: true}\n", encoding="utf-8")
    instance = open_instance(definitions, db_url)
    records = instance.records(APP)
    building = records.create("building", {"code": "A1", "name": "1号楼"}, SYSTEM)
    values = {"summary": "楼道灯不亮", "category": "plumbing", "area": "public", "urgency": "within_2h",
              "owner_cooperation": "no", "reporter_phone": "13800000000", "building": building["id"]}  # fmt: skip
    ticket = records.create("ticket", values, SYSTEM)
    assert "remarks" not in ticket and ticket["number"].startswith("GD")
    assert filecmp.cmp(PACK / "entities" / "ticket.yaml", definitions / APP / "entities" / "ticket.yaml", shallow=False)


def test_an_urgent_ticket_left_alone_turns_red_and_climbs_to_the_managers(installed):
    """S18 and S4 in the pack: 待受理 over 15 minutes is red and tells the dispatchers; an urgent
    ticket not taken up reminds its technician at 30 minutes and their manager at 1 hour."""
    import datetime as dt

    from engine import scan, tags, workflow

    instance, _ = installed
    records = instance.records(APP)
    as_user = {name: accounts.actor_for(instance.engine, name, APP) for name in ("zhang_xiuying", "wang_lei")}
    building = records.list("building", SYSTEM, limit=1).items[0]["id"]
    start = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    ticket = records.create(
        "ticket",
        {"summary": "电梯困人", "category": "elevator", "area": "public", "urgency": "immediate",
         "owner_cooperation": "no", "reporter_phone": "13800138000", "building": building},
        as_user["zhang_xiuying"], now=start,
    )  # fmt: skip
    outbox = instance.schema.system["kiln_outbox"]

    def told() -> list[str]:
        """Who was told, in the order the scans queued it."""
        with instance.engine.connect() as conn:
            query = select(outbox.c.recipient).where(outbox.c.record_id == ticket["id"]).order_by(outbox.c.id)
            return [accounts.get_user(instance.engine, int(i)).username for i in conn.execute(query).scalars()]

    def red() -> bool:
        with instance.engine.connect() as conn:
            return "red" in tags.flags_of(conn, records, records.entity("ticket"), [ticket["id"]]).get(ticket["id"], {})

    scan.run_due(instance, start + dt.timedelta(minutes=14), deliver_outbox=False)
    assert not red() and told() == []
    scan.run_due(instance, start + dt.timedelta(minutes=16), deliver_outbox=False)
    assert red() and told() == ["wang_lei"]  # the demo's dispatcher
    ticket = workflow.transition(
        records, "ticket", ticket["id"], "dispatch", {"assignee": "zhou_tao"}, ticket["version"], as_user["wang_lei"],
        now=start + dt.timedelta(minutes=20),
    )  # fmt: skip
    scan.run_due(instance, start + dt.timedelta(minutes=31), deliver_outbox=False)
    assert told() == ["wang_lei", "zhou_tao"]  # the technician, reminded at 30 minutes
    scan.run_due(instance, start + dt.timedelta(minutes=61), deliver_outbox=False)
    assert told() == ["wang_lei", "zhou_tao", "wang_lei"]  # then zhou_tao's manager, at 1 hour
    scan.run_due(instance, start + dt.timedelta(minutes=90), deliver_outbox=False)
    assert len(told()) == 3  # each level once
