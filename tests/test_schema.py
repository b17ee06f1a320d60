"""The definition language schema: what it accepts, and where and how it says what is wrong."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.schema import validate
from engine.schema_events import RULE_EVENTS
from engine.schema_rules import APP, CARD_TYPES, CHANNELS, FIELD_TYPES, Rules
from engine.source import parse_yaml, read_yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC_EXAMPLE = Path(__file__).parent / "fixtures" / "spec_example.yaml"


def problems(text: str) -> list[str]:
    return [str(p) for p in validate(parse_yaml(textwrap.dedent(text).lstrip("\n"), "app.yaml"))]


def app_with(fields: str = "summary: {type: text}", entity: str = "", top: str = "") -> str:
    """A minimal app: the ticket's ``fields``, more ``entity`` keys and more ``top``-level keys."""

    def block(text: str, indent: int) -> str:
        return textwrap.indent(textwrap.dedent(text).strip("\n"), " " * indent) + "\n" if text.strip() else ""

    return "app: repair\nentities:\n  ticket:\n    fields:\n" + block(fields, 6) + block(entity, 4) + block(top, 0)


def test_spec_example_is_valid() -> None:
    assert validate(read_yaml(SPEC_EXAMPLE)) == []


def test_minimal_app() -> None:
    assert problems(app_with()) == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("summary: {type: text, requird: true}", "app.yaml:5:29: unknown key 'requird' in field summary; did you mean 'required'?"),
        ("summary: {type: txt}", "app.yaml:5:23: unknown field type 'txt'; did you mean 'text'?"),
        ("summary: {type: string}", "app.yaml:5:23: unknown field type 'string'; write 'text' instead"),
        ("summary: {label: 摘要}", "app.yaml:5:16: field summary needs 'type'; expected one of: " + ", ".join(FIELD_TYPES)),
        ("summary: {type: text, mandatory: true}", "app.yaml:5:29: unknown key 'mandatory' in field summary; write 'required' instead"),
        ("summary: {type: text, required: yes}", "app.yaml:5:39: 'required' in field summary must be true or false, not 'yes' (only true and false are booleans)"),
        ("Summary: {type: text}", "app.yaml:5:7: 'Summary' is not a valid field name: use lowercase letters, digits and _, starting with a letter; e.g. 'summary'"),
        ("a__b: {type: text}", "app.yaml:5:7: 'a__b' is not a valid field name: '__' is reserved (it separates names in table names)"),
        ("created_at: {type: datetime}", "app.yaml:5:7: 'created_at' is not a valid field name: it is a system field (id, number, state, created_at, created_by, updated_at, version)"),
        ("class: {type: text}", "app.yaml:5:7: 'class' is not a valid field name: it is a reserved word of the expression language"),
        ("kind: {type: select}", "app.yaml:5:13: a select field needs 'options': the choices, e.g. {a: A线, b: B线}"),
        ("kind: {type: text, options: [a, b]}", "app.yaml:5:26: 'options' is not valid on a text field; it applies to select and multiselect fields"),
        ("device: {type: link}", "app.yaml:5:15: a link field needs 'entity': the entity it links to"),
        ("total: {type: computed}", "app.yaml:5:14: a computed field needs 'expr': the expression that computes it"),
        ("total: {type: computed, expr: a + b, required: true}", "app.yaml:5:44: 'required' is not valid on a computed field (it is read-only)"),
        ("photos: {type: image, max_size: 15 megabytes}", "app.yaml:5:39: '15 megabytes' is not a size; write e.g. 15MB, 512KB or 2GB"),
        ("report: {type: file, accept: [pdf]}", "app.yaml:5:37: 'pdf' is neither a file extension (.pdf) nor a MIME type (image/*, application/pdf)"),
        ("cost: {type: decimal, scale: 12}", "app.yaml:5:36: 'scale' in field cost must be at most 10"),
        ("score: {type: rating, max: 100}", "app.yaml:5:34: a rating's max is a whole number from 2 to 10"),
        ("ip: {type: text, pattern: '([0-9'}", "app.yaml:5:34: invalid regular expression: unterminated character set at position 1"),
        ("level: {type: select, options: {a: A}, default: b}", "app.yaml:5:55: default 'b' is not one of the options; expected one of: a"),
        ("tags: {type: tags, unique: true}", "app.yaml:5:26: a tags field holds several values and cannot be unique or indexed"),
        ("n: {type: integer, min: 10, max: 1}", "app.yaml:5:31: min 10 is greater than max 1"),
        ("note: {type: text, max_size: 1MB}", "app.yaml:5:26: 'max_size' is not valid on a text field; it applies to file and image fields"),
        ("summary: {type: text, label: {zh: 摘要, english: Summary}}", "app.yaml:5:45: 'english' is not a locale; write e.g. zh or en"),
    ],
)
def test_field_errors(fields: str, expected: str) -> None:
    assert problems(app_with(fields)) == [expected]


def test_every_field_type_with_its_keys_is_valid() -> None:
    fields = """
        a: {type: text, max_length: 20, pattern: '^[A-Z]+$', unique: true, index: true, help: 提示}
        b: {type: textarea, required_if: a == "X", visible_if: true, readonly_if: false}
        c: {type: richtext, disabled: true, renamed_from: old_c}
        d: {type: integer, min: 0, max: 10, default: 1}
        e: {type: decimal, scale: 4, min: -1.5, max: 1.5}
        f: {type: boolean, default: false}
        g: {type: date, default: today()}
        h: {type: datetime, default: {expr: now()}}
        i: {type: time}
        j: {type: select, options: [x, y], default: x}
        k: {type: multiselect, options: {x: X, y: {zh: 乙, en: Y}}}
        l: {type: tags}
        m: {type: user, role: tech, multiple: true}
        n: {type: team}
        o: {type: link, entity: ticket, multiple: true}
        p: {type: file, multiple: true, max_size: 512KB, accept: [.pdf, application/pdf]}
        q: {type: image, max_size: 2097152, accept: [image/*]}
        r: {type: email}
        s: {type: phone}
        t: {type: url}
        u: {type: rating, max: 10}
        v: {type: location}
        w: {type: computed, expr: d * 2, label: 双倍}
    """
    assert problems(app_with(fields)) == []


def test_top_level_errors() -> None:
    text = """
        kiln: 2
        app: Repair
        name: repair
        locale: fr
        timezone: Asia/Shanghia
        label: [a]
        entities: {}
    """
    assert problems(text) == [
        "app.yaml:1:7: unknown definition format version kiln: 2; this Kiln reads kiln: 1",
        "app.yaml:2:6: 'Repair' is not a valid app name: use lowercase letters, digits and _, starting with a letter; e.g. 'repair'",
        "app.yaml:3:1: unknown key 'name' at the top level; write 'app' instead",
        "app.yaml:4:9: unknown locale 'fr'; expected one of: en, zh",
        "app.yaml:5:11: unknown timezone 'Asia/Shanghia'; did you mean 'Asia/Shanghai'? (an IANA name like Asia/Shanghai)",
        "app.yaml:6:8: 'label' in the app definition must be a text or a {locale: text} map, not a list",
        "app.yaml:7:11: 'entities' in the app definition must not be empty",
    ]


def test_missing_app_and_old_version_key() -> None:
    assert problems("version: 1\nentities: {t: {fields: {a: {type: text}}}}\n") == [
        "app.yaml:1:1: the app definition needs 'app'",
        "app.yaml:1:1: unknown key 'version' at the top level; write 'kiln (the definition format version; "
        "a pack's version goes in pack.yaml)' instead",
    ]


def test_names_of_roles_teams_entities_states_transitions() -> None:
    text = """
        app: repair
        roles: {Admin: {}}
        teams: {night-shift: {label: 夜班}}
        calendars: {24x7: {hours: {mon-fri: "09:00-17:00"}}}
        entities:
          Ticket:
            fields: {summary: {type: text}}
            workflow:
              states: {open: {}, id: {}}
              transitions: {Go: {from: open, to: id}}
    """
    assert problems(text) == [
        "app.yaml:2:9: 'Admin' is not a valid role name: use lowercase letters, digits and _, starting with a letter; e.g. 'admin'",
        "app.yaml:3:9: 'night-shift' is not a valid team name: use lowercase letters, digits and _, starting with a letter; "
        "e.g. 'night_shift'",
        "app.yaml:4:13: calendar '24x7' always exists (round the clock); give yours another name",
        "app.yaml:6:3: 'Ticket' is not a valid entity name: use lowercase letters, digits and _, starting with a letter; e.g. 'ticket'",
        "app.yaml:9:26: 'id' is not a valid state name: it is a system field (id, number, state, created_at, created_by, updated_at, version)",
        "app.yaml:10:21: 'Go' is not a valid transition name: use lowercase letters, digits and _, starting with a letter; e.g. 'go'",
    ]


def test_workflow_errors() -> None:
    extra = """
        workflow:
          initial: open
          states:
            open: {color: pink}
            done: {final: true, terminal: true}
          transitions:
            finish: {source: open, to: done, comment: maybe}
          approvals:
            boss: {before: finish, approvers: {role: a, team: b}, mode: some}
          cc:
            - {to: "boss of assignee"}
    """
    assert problems(app_with(entity=extra)) == [
        "app.yaml:9:23: unknown colour 'pink'; expected one of: blue, gray, green, orange, purple, red, yellow (or a #rrggbb value)",
        "app.yaml:10:29: unknown key 'terminal' in state done; write 'final' instead",
        "app.yaml:12:18: unknown key 'source' in transition finish; write 'from' instead",
        "app.yaml:12:51: unknown comment setting 'maybe'; expected one of: none, optional, required",
        "app.yaml:14:43: approvers name exactly one of: role, team or users",
        "app.yaml:14:69: unknown approval mode 'some'; expected one of: all, any",
        "app.yaml:16:17: 'boss of assignee' is not a recipient; write a user field, created_by, role:NAME, team:NAME, "
        "manager_of(FIELD) or lead_of(TEAM)",
    ]


def test_rules_and_actions_errors() -> None:
    extra = """
        rules:
          - name: r1
            trigger: created
            do:
              - assign: {field: assignee}
              - notify: {to: assignee, channels: [fax]}
              - frobnicate: 1
              - {set: {a: 1}, transition: go}
              - mark: purple
          - on: created
            do: []
    """
    assert problems(app_with(entity=extra)) == [
        "app.yaml:8:9: unknown key 'trigger' in rule 'r1'; write 'on' instead",
        "app.yaml:10:21: assign names exactly one of: team, role, user or from (e.g. {field: assignee, team: night_shift})",
        "app.yaml:11:46: unknown channel 'fax'; expected one of: dingtalk, email, in_app, sms, webhook, wecom",
        "app.yaml:12:13: unknown key 'frobnicate' in action 3; expected one of: add_tag, assign, create, mark, notify, "
        "remove_tag, set, transition, unmark, update, webhook",
        "app.yaml:13:13: write one action per list item (start each with '- ')",
        "app.yaml:14:19: unknown mark colour 'purple'; expected one of: orange, red, yellow",
        "app.yaml:16:13: 'do' in rule 2 must not be empty",
    ]


def test_sla_permissions_calendar_errors() -> None:
    extra = """
        sla:
          - {name: s1, stop: entered(done), due: 1h}
        permissions:
          tech: {read: own, write: all, update: {own: true, states: done}}
    """
    top = """
        calendars:
          office:
            hours: {monday: "08:30-12:00", sat: "9-12", sun: "20:00-08:00"}
            holidays: XX
            extra_holidays: [2026-13-01]
    """
    assert problems(app_with(entity=extra, top=top)) == [
        "app.yaml:7:41: unknown key 'due' in SLA 's1'; write 'target' instead",
        "app.yaml:9:25: unknown key 'write' in permissions of role tech; write 'update' instead",
        "app.yaml:9:65: 'states' in update permission must be a list, not 'done'",
        "app.yaml:12:13: 'monday' is not a day or day range; write e.g. mon-fri, sat (mon, tue, wed, thu, fri, sat, sun)",
        "app.yaml:12:42: '9-12' is not a time range; write HH:MM-HH:MM, several separated by commas, "
        'e.g. "08:30-12:00,13:00-17:30" (a range may cross midnight: "20:00-08:00")',
        "app.yaml:13:15: unknown holiday country 'XX' (an ISO code like CN)",
        "app.yaml:14:22: '2026-13-01' is not a date; write YYYY-MM-DD, e.g. 2026-12-31",
    ]


def test_dashboard_and_notification_errors() -> None:
    top = """
        dashboards:
          ops:
            widgets: []
            cards:
              - {name: c1, type: pie, entity: ticket}
              - {name: c2, type: sum, entity: ticket, numerator: x}
              - {name: c3, type: trend, entity: ticket, by: year}
              - {type: count, entity: ticket}
        notifications:
          channels: {fax: {}, email: {from: a@b.c}}
          templates: {t1: {subject: hi}}
    """
    assert problems(app_with(top=top)) == [
        "app.yaml:8:5: unknown key 'widgets' in dashboard ops; write 'cards' instead",
        "app.yaml:10:26: unknown card type 'pie'; expected one of: " + ", ".join(sorted(CARD_TYPES)),
        "app.yaml:11:9: a sum card needs 'field'",
        "app.yaml:11:47: 'numerator' is not valid on a sum card; it applies to ratio cards",
        "app.yaml:12:53: unknown trend grouping 'year'; expected one of: day, hour, month, week",
        "app.yaml:13:9: card 4 needs 'name'",
        "app.yaml:15:14: unknown key 'fax' in channels; expected one of: " + ", ".join(sorted(CHANNELS)),
        "app.yaml:15:30: channel email needs 'smtp'",
        "app.yaml:16:19: template t1 needs 'body'",
    ]


def test_null_where_a_mapping_belongs() -> None:
    assert problems(app_with("summary:")) == ["app.yaml:5:15: field summary has no value; write a mapping of keys"]


def test_states_and_roles_may_be_empty() -> None:
    assert problems(app_with(entity="workflow:\n  states:\n    open:\n", top="roles:\n  tech:\n")) == []


# -- the docs never fall behind the schema ----------------------------------------------------------
def schema_sections(rules: Rules, path: str = "app", seen: set[int] | None = None) -> Iterator[tuple[str, list[str]]]:
    """(path, keys) of every mapping the schema defines keys for; a shape used twice (the actions
    of rules and of escalations) is listed once, at its first path."""
    seen = set() if seen is None else seen
    schema, values = rules.get("schema"), rules.get("valuesrules")
    is_mapping = isinstance(schema, dict) and all(isinstance(v, dict) for v in schema.values()) and "type" in rules and (
        "dict" in rules["type"]
    )
    child = lambda key: key if path == "app" else f"{path}.{key}"  # noqa: E731
    if is_mapping and id(schema) not in seen:
        seen.add(id(schema))
        yield path, list(schema)
        for key, key_rules in schema.items():
            yield from schema_sections(key_rules, child(key), seen)
    elif isinstance(schema, dict) and not is_mapping:  # a list's item rules
        yield from schema_sections(schema, child("*"), seen)
    if isinstance(values, dict):
        yield from schema_sections(values, child("*"), seen)


def doc_sections(docs: str, paths: set[str]) -> dict[str, str]:
    """The text documenting each schema path: from a heading (or, for nested shapes, a paragraph)
    naming the path in backticks, to the next such place."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in docs.splitlines():
        named = [p for p in re.findall(r"`([a-z_.*]+)`", line) if p in paths]
        if named and (line.startswith("#") or (not line.startswith("|") and "." in named[-1])):
            current = sections.setdefault(named[-1], [])
        elif current is not None:
            current.append(line)
    return {path: "\n".join(lines) for path, lines in sections.items()}


def test_docs_cover_every_key() -> None:
    docs = (ROOT / "docs" / "definitions.md").read_text(encoding="utf-8")
    sections = {path: keys for path, keys in schema_sections(APP) if keys}
    assert len(sections) > 30 and "entities.*.fields.*" in sections  # the walk found the whole schema
    found = doc_sections(docs, set(sections))
    missing = [path for path in sections if path not in found]
    assert missing == [], f"docs/definitions.md has no section for: {missing}"
    undocumented = [f"{path}: {key}" for path, keys in sections.items() for key in keys if f"`{key}`" not in found[path]]
    assert undocumented == [], f"docs/definitions.md does not document: {undocumented}"


def test_docs_cover_every_type_and_event() -> None:
    docs = (ROOT / "docs" / "definitions.md").read_text(encoding="utf-8")
    words = [*FIELD_TYPES, *CARD_TYPES, *CHANNELS, *RULE_EVENTS]
    assert [w for w in words if f"`{w}" not in docs] == []


def test_an_app_may_not_take_a_name_the_api_uses(tmp_path):
    from engine.errors import DefinitionError
    from engine.schema import name_problem

    assert name_problem("files", "app") == "'files' is not a valid app name: /api/v1/files is a path of the API itself"
    assert name_problem("files", "entity") is None
    from engine.compiler import compile_definitions

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "app.yaml").write_text("app: me\nentities: {t: {fields: {a: {type: text}}}}\n", encoding="utf-8")
    try:
        compile_definitions(tmp_path, env={})
    except DefinitionError as exc:
        assert str(exc) == "x/app.yaml:1:6: 'me' is not a valid app name: /api/v1/me is a path of the API itself"
    else:
        raise AssertionError("an app named 'me' compiled")
