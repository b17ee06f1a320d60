"""References between the parts of an app: every name must point at something that exists."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from engine.builder import build_app
from engine.compiler import compile_app_folder
from engine.references import check
from engine.schema import validate
from engine.schema_events import Event, cron_problem, parse_duration, parse_event
from engine.source import Map, parse_yaml, read_yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC_EXAMPLE = Path(__file__).parent / "fixtures" / "spec_example.yaml"

BASE = """
app: repair
roles: {tech: {}, boss: {}}
teams: {night: {}}
calendars: {office: {hours: {mon-fri: "09:00-17:00"}}}
notifications: {templates: {hello: {body: hi}}}
entities:
  device:
    fields:
      code: {type: text}
      owner: {type: user}
  ticket:
    fields:
      summary: {type: text}
      device: {type: link, entity: device}
      assignee: {type: user, role: tech}
      cost: {type: decimal}
      closed_on: {type: date}
    workflow:
      states: {open: {}, doing: {}, done: {final: true}}
      transitions:
        start: {from: open, to: doing}
        finish: {from: doing, to: done}
"""


def located(text: str) -> Map:
    document = parse_yaml(textwrap.dedent(text).lstrip("\n"), "app.yaml")
    assert [str(p) for p in validate(document)] == []
    return document


def problems(text: str, with_document: bool = True) -> list[str]:
    document = located(text)
    return [str(p) for p in check(build_app(document), document if with_document else None)]


def with_ticket(extra: str, top: str = "") -> str:
    """BASE with more keys in the ticket entity (``extra``) and at the top level (``top``)."""
    return BASE + textwrap.indent(textwrap.dedent(extra).strip("\n"), " " * 4) + "\n" + textwrap.dedent(top)


def test_spec_example_has_no_problems() -> None:
    document = read_yaml(SPEC_EXAMPLE)
    assert validate(document) == []
    assert check(build_app(document), document) == []


def test_base_has_no_problems() -> None:
    assert problems(BASE) == []


def test_marketplace_packs_compile(tmp_path: Path) -> None:
    """Each pack, installed as its files are (pack.yaml and demo data left out), compiles cleanly."""
    packs = sorted(p.parent for p in (ROOT / "marketplace").glob("*/pack.yaml"))
    for pack in packs:
        target = tmp_path / "definitions" / pack.name
        for f in pack.rglob("*.y*ml"):
            rel = f.relative_to(pack)
            if f.name != "pack.yaml" and not any(part.startswith("demo") for part in rel.parts):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target / rel)
        compiled, found = compile_app_folder(target, {}, target.parent)
        assert [str(p) for p in found if p.severity == "error"] == [], pack.name
        assert compiled is not None


def test_fields() -> None:
    text = BASE.replace("entity: device}", "entity: devise}").replace("role: tech}", "role: techie}")
    text = text.replace("closed_on: {type: date}", "closed_on: {type: date, renamed_from: cost}\n      entered_done_at: {type: datetime}")
    assert problems(text) == [
        "app.yaml:14:36: link field device points to unknown entity 'devise'; did you mean 'device'?",
        "app.yaml:15:36: unknown role 'techie'; did you mean 'tech'?",
        "app.yaml:17:45: field 'cost' still exists; renamed_from names an old name",
        "app.yaml:18:7: field name 'entered_done_at' is taken by the engine's timestamp of state 'done'",
    ]


def test_title_and_number() -> None:
    assert problems(with_ticket('title: "{summry} {device.code}"\nnumber: "T{created:%Y}-{id}"')) == [
        "app.yaml:23:13: unknown field 'summry' in title of ticket; did you mean 'summary'?",
        'app.yaml:24:14: a number format needs a {seq} counter, e.g. "MX{created:%Y%m%d}-{seq:4}"',
    ]


def test_form_validations_assigned_fields() -> None:
    extra = """
        form:
          - {section: 基本, fields: [summary, devise]}
        validations:
          - {when: "true", fields: [cots], message: 不行}
        assigned_fields: [assignee, summary, helper]
    """
    assert problems(with_ticket(extra)) == [
        "app.yaml:24:41: unknown field 'devise' of entity ticket; did you mean 'device'?",
        "app.yaml:26:33: unknown field 'cots' of entity ticket; did you mean 'cost'?",
        "app.yaml:27:33: assigned_fields 'summary' is not a user field; user fields of ticket: assignee, created_by",
        "app.yaml:27:42: unknown field 'helper' of entity ticket; expected one of: assignee, closed_on, cost, created_at, created_by, device, entered_doing_at, entered_done_at, entered_open_at, id, number, state, summary, updated_at, version",
    ]  # fmt: skip


WORKFLOW = """
app: repair
roles: {tech: {}}
teams: {night: {}}
entities:
  ticket:
    fields:
      summary: {type: text}
      assignee: {type: user}
    workflow:
      initial: opn
      states:
        open: {visible_to: [tech, clerk]}
        done: {renamed_from: open}
      transitions:
        finish: {from: [open, doing], to: dnoe, roles: [tech, boss], requires: [summry], only: summary}
        reopen:
          from: "*"
          to: open
      approvals:
        check: {before: finsh, approvers: {team: day}, on_reject: {transition: reopn}}
      cc:
        - {to: [role:bosses, "manager_of(assignee)", "lead_of(nite)"]}
      state_map: {closed: gone, done: open}
"""


def test_workflow() -> None:
    assert problems(WORKFLOW) == [
        "app.yaml:10:16: initial state 'opn' is not a state of ticket; did you mean 'open'?",
        "app.yaml:12:35: unknown role 'clerk'; expected one of: tech",
        "app.yaml:13:30: state 'open' still exists; renamed_from names an old state",
        "app.yaml:15:31: unknown state 'doing' of ticket; did you mean 'done'?",
        "app.yaml:15:43: unknown state 'dnoe' of ticket; did you mean 'done'?",
        "app.yaml:15:63: unknown role 'boss'; expected one of: tech",
        "app.yaml:15:81: unknown field 'summry' of entity ticket; did you mean 'summary'?",
        "app.yaml:15:96: only: 'summary' is not a user field; user fields of ticket: assignee, created_by",
        "app.yaml:20:25: unknown transition 'finsh'; did you mean 'finish'?",
        "app.yaml:20:50: unknown team 'day'; expected one of: night",
        "app.yaml:20:80: unknown transition 'reopn'; did you mean 'reopen'?",
        "app.yaml:22:17: unknown role 'bosses'; expected one of: tech",
        "app.yaml:22:55: lead_of needs a team or a team field; unknown team 'nite'; did you mean 'night'?",
        "app.yaml:23:27: state_map maps 'closed' to unknown state 'gone'; did you mean 'done'?",
        "app.yaml:23:33: state 'done' still exists; state_map maps removed states",
    ]


def test_without_the_document_problems_point_at_the_model_objects() -> None:
    got = problems(WORKFLOW, with_document=False)
    assert "app.yaml:15:9: unknown state 'dnoe' of ticket; did you mean 'done'?" in got
    assert len(got) == len(problems(WORKFLOW))


def test_unreachable_state_is_a_warning() -> None:
    text = BASE.replace("done: {final: true}", "done: {final: true}, limbo: {}")
    document = located(text)
    [problem] = check(build_app(document), document)
    assert (str(problem), problem.severity) == ("app.yaml:19:58: warning: state 'limbo' cannot be reached from 'open' by any transition", "warning")


def test_permissions() -> None:
    extra = """
        assigned_fields: [assignee]
        permissions:
          tech: {read: assigned, update: {own: true, states: [opne]}, hide: [cots], readonly: [summary]}
          boss: {read: all}
          clerk: {read: own}
    """
    assert problems(with_ticket(extra)) == [
        "app.yaml:25:59: unknown state 'opne' of ticket; did you mean 'open'?",
        "app.yaml:25:74: unknown field 'cots' of entity ticket; did you mean 'cost'?",
        "app.yaml:27:7: unknown role 'clerk'; expected one of: boss, tech",
    ]


def test_assigned_scope_needs_a_user_field() -> None:
    text = BASE.replace("      assignee: {type: user, role: tech}\n", "") + "    permissions: {tech: {read: assigned}}\n"
    assert problems(text) == [
        "app.yaml:22:32: 'assigned' scope needs a user field named in assigned_fields (default: assignee); ticket has none",
    ]


RULES = """
rules:
  - on: field_set(sumary)
    do: [{transition: finsh}]
  - on: entered(dun)
    do:
      - assign: {field: summary, team: nite}
      - assign: {from: device.owner}
      - assign: {from: device.code}
      - notify: {to: [assignee, team:night, "manager_of(device.owner)"], channels: [sms], template: helo}
      - set: {cost: 1, price: 2}
      - create: {entity: visit, values: {note: x}}
      - create: {entity: device, values: {code: c, name: n}}
  - on: approved(nope)
    do: [{mark: red}]
  - on: schedule("61 * * * *")
    do: [{add_tag: x}]
  - on: finished
    do: [{add_tag: x}]
  - on: transition(finish)
    do: [{add_tag: x}]
"""


def test_rules_and_actions() -> None:
    assert problems(with_ticket(RULES)) == [
        "app.yaml:24:23: unknown field 'sumary' of entity ticket; did you mean 'summary'?",
        "app.yaml:25:27: unknown transition 'finsh'; did you mean 'finish'?",
        "app.yaml:26:21: unknown state 'dun' in entered(dun); expected one of: doing, done, open",
        "app.yaml:28:29: assign field 'summary' is not a user field; user fields of ticket: assignee, created_by",
        "app.yaml:28:44: unknown team 'nite'; did you mean 'night'?",
        "app.yaml:30:28: assign from 'device.code' is not a user field; user fields of ticket: assignee, created_by",
        "app.yaml:31:89: warning: channel 'sms' is not configured under notifications.channels",
        "app.yaml:31:105: unknown template 'helo'; did you mean 'hello'?",
        "app.yaml:32:28: unknown field 'price' of entity ticket; expected one of: assignee, closed_on, cost, device, summary",
        "app.yaml:33:30: unknown entity 'visit'; expected one of: device, ticket",
        "app.yaml:34:56: unknown field 'name' of entity device; expected one of: code, owner",
        "app.yaml:35:22: unknown approval 'nope' in approved(nope) (none are defined)",
        "app.yaml:37:13: cron minute '61': '61' is not between 0 and 59",
        'app.yaml:39:13: unknown event \'finished\'; write one of created, updated, field_set(F), entered(S), left(S), transition(T), approved(A) or schedule("cron")',
    ]


def test_sla() -> None:
    extra = """
        sla:
          - name: respond
            start: created
            stop: entered(doing)
            pause_in: [dnoe]
            calendar: ofice
            target: 1 hour
            escalations:
              - {after: 30x, do: [{transition: finsh}]}
          - {name: fix, start: schedule("0 8 * * *"), stop: updated, target: 2h}
    """
    assert problems(with_ticket(extra)) == [
        "app.yaml:27:20: unknown state 'dnoe' of ticket; did you mean 'done'?",
        "app.yaml:28:19: unknown calendar 'ofice'; did you mean 'office'?",
        "app.yaml:29:17: '1 hour' is not a duration; write e.g. 30m, 2h, 1h30m or 7d",
        "app.yaml:31:21: '30x' is not a duration; write e.g. 30m, 2h, 1h30m or 7d",
        "app.yaml:31:44: unknown transition 'finsh'; did you mean 'finish'?",
        "app.yaml:32:28: 'schedule' cannot be used here; use one of: created, entered, left, transition, field_set, approved",
        "app.yaml:32:57: 'updated' cannot be used here; use one of: created, entered, left, transition, field_set, approved",
    ]


def test_dashboards() -> None:
    top = """
        dashboards:
          ops:
            roles: [boss, clerk]
            filters: [device.line, summary]
            cards:
              - {name: a, type: count, entity: tickets}
              - {name: b, type: sum, entity: ticket, field: summary}
              - {name: c, type: avg_duration, entity: ticket, from: created_at, to: entered_dne_at, group_by: device.code}
              - {name: c, type: top, entity: ticket, group_by: summary.x}
              - {name: e, type: trend, entity: ticket, last: 30days}
              - {name: f, type: list, entity: ticket, fields: [summary, device.owner, cost], sort: -closed_on}
              - {name: g, type: avg, entity: ticket, field: cost, group_by: device.owner}
    """
    assert problems(with_ticket("", top)) == [
        "app.yaml:27:19: unknown role 'clerk'; expected one of: boss, tech",
        "app.yaml:28:15: unknown field 'line' of entity device; expected one of: code, created_at, created_by, id, number, owner, state, updated_at, version",
        "app.yaml:30:40: unknown entity 'tickets'; did you mean 'ticket'?",
        "app.yaml:31:53: a sum card needs a number field; 'summary' is a text field",
        "app.yaml:32:77: unknown field 'entered_dne_at' of entity ticket; did you mean 'entered_done_at'?",
        "app.yaml:33:16: card name 'c' is used twice in dashboard ops",
        "app.yaml:33:56: 'summary' of entity ticket is not a link, so 'summary.x' cannot follow it",
        "app.yaml:34:54: '30days' is not a duration; write e.g. 30m, 2h, 1h30m or 7d",
    ]


def test_events_durations_cron() -> None:
    assert parse_event("field_set( report )") == Event("field_set", "report")
    assert parse_event('schedule("0 8 * * mon-fri")') == Event("schedule", "0 8 * * mon-fri")
    assert parse_event("created(x)") == "event 'created' takes no argument"
    assert parse_event("entered") == "event 'entered' needs a state: entered(...)"
    assert parse_event("schedule(0 8 * * *)") == 'write the schedule in quotes: schedule("0 8 * * *")'
    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("7d").days == 7
    assert parse_duration("90") is None and parse_duration("m") is None and parse_duration("") is None
    assert cron_problem("*/15 8-18 * jan-dec mon,wed,fri") is None
    assert cron_problem("0 8 * *") is not None
    assert cron_problem("0 25 * * *") == "cron hour '25': '25' is not between 0 and 23"
    assert cron_problem("0 8 * * fri-mon") == "cron day of week 'fri-mon': range 'fri-mon' runs backwards"
    assert cron_problem("*/0 8 * * *") == "cron minute '*/0': step '/0' must be a positive number"


@pytest.mark.parametrize("recipient", ["assignee", "created_by", "role:tech", "team:night", "manager_of(assignee)",
                                       "lead_of(night)", "{role: boss}", "[assignee, role:boss]"])  # fmt: skip
def test_valid_recipients(recipient: str) -> None:
    assert problems(with_ticket(f"rules: [{{on: created, do: [{{notify: {{to: {recipient}}}}}]}}]")) == []


def test_rules_on_an_entity_without_a_workflow() -> None:
    device_rules = """
      rules:
        - {on: created, do: [{add_tag: new}]}
        - {on: updated, do: [{add_tag: changed}]}
        - {on: "entered(open)", do: [{add_tag: never}]}
    """
    text = BASE.replace("      owner: {type: user}\n", "      owner: {type: user}\n" + textwrap.indent(textwrap.dedent(device_rules).strip("\n"), "    ") + "\n")
    assert problems(text) == ["app.yaml:14:23: entered(open): entity device has no workflow"]
