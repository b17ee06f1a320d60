"""Rules (engine/rules.py): events, order, conditions, the record actions, the depth limit and
scheduled rules, through the records service on tests/fixtures/rules_lab.yaml."""

from __future__ import annotations

import datetime as dt

import pytest

from engine import cron, rules, tags
from engine.errors import ValidationFailed
from engine.rules import RuleLoop
from tests.conftest import add_user
from tests.test_rules_support import NOW, Lab, open_lab


@pytest.fixture
def lab(db_url, write_definitions, open_instance) -> Lab:
    return open_lab(db_url, write_definitions, open_instance)


def _move(lab: Lab, record: dict, transition: str, to: str) -> None:
    """A transition as the workflow performs it (records.update_in with move_to)."""
    records = lab.records
    entity = records.entity("item")
    with records.transaction() as conn:
        version = records.load(conn, entity, record["id"])["version"]
        records.update_in(conn, entity, record["id"], {}, version, lab.actor(), NOW, move_to=to, transition=transition)


def test_each_event_fires_its_rules(lab: Lab):
    item = lab.create("item", title="events")
    assert lab.get("item", item["id"])["tags"] == ["created"]  # not field_set(x): x is empty
    item = lab.update("item", item, x="one")
    assert lab.get("item", item["id"])["tags"] == ["created", "updated", "x-set"]
    _move(lab, item, "start", "doing")
    assert set(lab.get("item", item["id"])["tags"]) == {
        "created", "updated", "x-set", "entered-doing", "left-open", "transition-start",
    }  # fmt: skip
    records = lab.records
    with records.transaction() as conn:
        record = records.load(conn, records.entity("item"), item["id"])
        rules.run_event(records, conn, records.entity("item"), record, "approved(boss_ok)", lab.actor("boss"), NOW)
    assert "approved" in lab.get("item", item["id"])["tags"]


def test_field_set_means_a_new_non_empty_value(lab: Lab):
    item = lab.create("item", title="events", x="given at create")
    assert lab.get("item", item["id"])["tags"] == ["created", "x-set"]
    item = lab.update("item", item, x=None)
    history = lab.history("item", item["id"])
    assert [e["action"] for e in history if e["rule"] == "on-field-set"] == ["add_tag"]  # not again for clearing


def test_rules_run_in_the_order_written_and_history_names_them(lab: Lab):
    item = lab.create("item", title="order")
    assert lab.get("item", item["id"])["n"] == 12  # first sets 1, then second computes n * 10 + 2
    history = lab.history("item", item["id"])
    assert [(e["action"], e["rule"], e["changes"].get("n")) for e in history] == [
        ("create", None, None), ("update", "first", [None, 1]), ("update", "second", [1, 12]),
    ]  # fmt: skip
    assert history[1]["actor"] == "system"


def test_the_changes_of_one_events_rules_are_written_once(lab: Lab):
    item = lab.create("item", title="order")
    # first and second changed the record before it was stored: one INSERT, no update
    assert lab.get("item", item["id"])["version"] == 1
    audit = [e for e in lab.history("item", item["id"]) if e["action"] == "update"]
    assert len(audit) == 2  # yet each rule's change has its entry
    item = lab.update("item", item, note="again")
    assert lab.get("item", item["id"])["version"] == 2


def test_a_creation_and_its_rules_entries_are_one_row_and_the_history_lists_each(lab: Lab):
    item = lab.create("item", title="order")  # by sam; the rules act as the system
    rows = lab.rows("kiln_audit", app="lab", entity="item", record_id=item["id"])
    assert [(r["action"], r["actor"], r["rule"]) for r in rows] == [("rules", "sam", "first, second")]
    assert [(step["action"], step["rule"]) for step in rows[0]["changes"]] == [("create", None), ("update", "first"), ("update", "second")]
    entries = lab.history("item", item["id"])
    assert [(e["id"], e["action"], e["actor"], e["rule"], e["comment"]) for e in entries] == [
        (rows[0]["id"], "create", "sam", None, None),
        (rows[0]["id"], "update", "system", "first", None),
        (rows[0]["id"], "update", "system", "second", None),
    ]  # fmt: skip
    assert entries[0]["changes"]["title"] == [None, "order"]
    assert [e["changes"] for e in entries[1:]] == [{"n": [None, 1]}, {"n": [1, 12]}]
    item = lab.update("item", item, note="again")  # a user's change: a row of its own, after them
    rows = lab.rows("kiln_audit", app="lab", entity="item", record_id=item["id"])
    assert [r["action"] for r in rows] == ["rules", "update"]


def test_a_count_within_a_window_gets_an_index_on_its_equalities_and_created_at(write_definitions):
    from benchmarks.rules import rules_app
    from engine.compiler import compile_definitions

    schema = compile_definitions(write_definitions({"bench/app.yaml": rules_app()})).schema
    indexes = {tuple(c.name for c in ix.columns) for ix in schema.entity("bench", "ticket").main.indexes}
    assert ("device", "category", "created_at") in indexes and ("device", "id") in indexes


THRESHOLDS = """
app: clinic
entities:
  visit:
    fields:
      place: {type: text}
      second: {type: boolean}
      tags: {type: tags}
    rules:
      - name: regular
        on: created
        when: 'count(visit, place == this.place and hours_since(created_at) < 24) >= 3'
        do: [{add_tag: regular}]
      - {name: second, on: created, when: 'count(visit, place == this.place) == 2', do: [{set: {second: true}}]}
"""


def test_counts_compared_with_a_number_decide_as_whole_counts(db_url, write_definitions, open_instance):
    """A count compared with a number stops reading past it (engine/expressions/evaluate.py): the
    third visit and on are regulars, only the second is the second, whether the count is prepared
    (``place == this.place``) or built per call (``hours_since`` reads the time)."""
    from engine.actors import SYSTEM

    instance = open_instance(write_definitions({"clinic/app.yaml": THRESHOLDS}), db_url)
    records = instance.records("clinic")
    made = [records.create("visit", {"place": "north"}, SYSTEM, NOW + dt.timedelta(minutes=i)) for i in range(6)]
    other = records.create("visit", {"place": "south"}, SYSTEM, NOW + dt.timedelta(minutes=9))
    assert [(v["tags"], v["second"]) for v in made] == [
        ([], None), ([], True), (["regular"], None), (["regular"], None), (["regular"], None), (["regular"], None),
    ]  # fmt: skip
    assert (other["tags"], other["second"]) == ([], None)
    later = records.create("visit", {"place": "north"}, SYSTEM, NOW + dt.timedelta(days=2))  # the others are 48 h old
    assert later["tags"] == [] and later["second"] is None


def test_a_rule_that_fires_itself_stops_and_rolls_everything_back(lab: Lab):
    item = lab.create("item", title="loop", n=0)
    before = lab.count("kiln_audit")
    with pytest.raises(RuleLoop) as refused:
        lab.update("item", item, note="go")
    assert refused.value.status == 409 and "bump -> bump" in refused.value.message
    assert lab.get("item", item["id"])["n"] == 0 and lab.get("item", item["id"])["note"] is None
    assert lab.count("kiln_audit") == before


def test_a_chain_of_rules_names_every_rule_and_a_create_rolls_back(lab: Lab):
    with pytest.raises(RuleLoop) as refused:
        lab.create("item", title="pingpong", a=1)
    assert "ping -> pong -> ping" in refused.value.message
    assert lab.count("lab__item") == 0 and lab.count("kiln_audit") == 0


def test_a_failing_action_names_its_rule_and_refuses_the_change(lab: Lab):
    with pytest.raises(ValidationFailed) as refused:
        lab.create("item", title="bad", x="not a number")
    assert refused.value.message.startswith("rule 'bad-set' (set): ") and "n" in refused.value.fields
    assert lab.count("lab__item") == 0 and lab.count("kiln_audit") == 0


def test_record_actions_set_mark_tag_create_update(lab: Lab):
    item = lab.create("item", title="actions")
    shown = lab.get("item", item["id"])
    assert shown["level"] == "high" and shown["note"] == "actions"  # a literal option and an expression
    assert shown["flags"] == {"red": {"since": NOW.isoformat(), "rule": "actions"}} and shown["tags"] == ["b"]
    logs = lab.rows("lab__log")
    assert [(r["item"], r["text"], r["seen"]) for r in logs] == [(item["id"], "actions", True)]
    actions = [(e["action"], e["rule"]) for e in lab.history("item", item["id"])]
    assert actions == [
        ("create", None), ("update", "actions"), ("mark", "actions"), ("add_tag", "actions"), ("remove_tag", "actions"),
        ("create:log", "actions"),  # what the rule created, named in its own record's history
    ]  # fmt: skip
    assert lab.history("item", item["id"])[-1]["changes"] == {"id": [None, logs[0]["id"]]}
    log_history = lab.records.history("log", logs[0]["id"], lab.actor())
    assert [(e["action"], e["rule"]) for e in log_history] == [("create", "actions"), ("update", "actions")]
    lab.update("item", lab.get("item", item["id"]), level="low")
    assert lab.get("item", item["id"])["flags"] == {}  # the calm rule unmarked it
    listed = lab.records.list("item", lab.actor()).items
    assert listed[0]["flags"] == {} and listed[0]["tags"] == ["b"]


def test_a_new_records_flags_are_read_only_when_something_marked_it(lab: Lab):
    """A create's answer skips the flags query for a record nothing marked in its transaction
    (engine/tags.py, FRESH); a mark in that transaction or any later one still shows."""
    marked = lab.create("item", title="actions")
    assert marked["flags"] == {"red": {"since": NOW.isoformat(), "rule": "actions"}}
    calm = lab.create("item", title="calm")
    assert calm["flags"] == {}
    entity = lab.records.entity("item")
    with lab.records.transaction() as conn:  # later, as the time scan marks (the pool reuses the connection)
        tags.mark(conn, lab.records, entity, calm["id"], "orange", NOW, "later")
    assert list(lab.get("item", calm["id"])["flags"]) == ["orange"]
    assert list(lab.records.list("item", lab.actor()).items[0]["flags"]) == ["orange"]


def test_entities_without_tag_or_mark_actions_still_show_empty_lists(lab: Lab):
    log = lab.get("log", lab.create("item", title="actions")["id"])  # the log the rule created has id 1
    assert log["tags"] == [] and log["flags"] == {}


def test_scheduled_rules_are_due_in_the_app_timezone(lab: Lab):
    app = lab.records.app
    since = dt.datetime(2026, 3, 6, 0, 0, tzinfo=dt.UTC)  # Friday 08:00 Shanghai
    until = since + dt.timedelta(days=3, hours=1)  # to Monday 09:00 Shanghai
    due = rules.due_scheduled_rules(app, since, until)
    # not Friday 08:00 itself (since is excluded), not the weekend; Monday 08:00 = 00:00 UTC
    assert [(e.name, r.name, at) for e, r, at in due] == [("item", "nightly", dt.datetime(2026, 3, 9, 0, 0, tzinfo=dt.UTC))]
    assert rules.due_scheduled_rules(app, since - dt.timedelta(minutes=1), since)[0][2] == since


def test_run_scheduled_acts_on_the_records_its_condition_selects(lab: Lab):
    open_one = lab.create("item", title="sched")
    lab.create("item", title="other")
    entity = lab.records.entity("item")
    rule = next(r for r in entity.rules if r.name == "nightly")
    with lab.records.transaction() as conn:
        assert rules.run_scheduled(lab.records, conn, entity, rule, NOW) == 1
    assert list(lab.get("item", open_one["id"])["flags"]) == ["orange"]


def test_cron_fields():
    sets = cron.cron_sets("*/15 8-17 1,15 * mon-fri")
    assert sets[0] == {0, 15, 30, 45} and sets[1] == set(range(8, 18)) and sets[2] == {1, 15} and sets[4] == {1, 2, 3, 4, 5}
    local = dt.datetime(2026, 3, 1, 8, 30)  # Sunday the 1st: the day of month matches (cron: either)
    assert cron.cron_matches(sets, "*/15 8-17 1,15 * mon-fri", local)
    assert not cron.cron_matches(sets, "*/15 8-17 1,15 * mon-fri", local.replace(day=7))  # a Saturday


CHECKED_APP = """
app: shop
timezone: Asia/Shanghai
roles:
  clerk: {label: 店员}
entities:
  order:
    label: 订单
    fields:
      kind: {type: select, options: {a: A, b: B}}
      ref: {type: text}
      code: {type: text, pattern: '^\\\\d+$'}
    validations:
      - when: kind == "b" and is_empty(ref)
        fields: [ref]
        message: B needs a reference
    rules:
      - {name: flip, on: created, when: 'kind == "a"', do: [{set: {kind: b}}]}
      - {name: recode, on: created, when: 'ref == "recode"', do: [{set: {code: "x1"}}]}
"""


def test_a_creations_rule_changes_are_checked_with_the_record_and_a_refusal_stores_nothing(db_url, write_definitions, open_instance):
    """The rules of a creation change the record before it is stored: what they set together
    must still pass the field checks and the validations, or the creation is refused, naming
    them, and nothing of it is written."""
    from engine.actors import SYSTEM

    instance = open_instance(write_definitions({"shop/app.yaml": CHECKED_APP}), db_url)
    records = instance.records("shop")
    with pytest.raises(ValidationFailed) as refused:
        records.create("order", {"kind": "a"}, SYSTEM, NOW)  # flip makes it B without a reference
    assert refused.value.message.startswith("rule 'flip': ") and "ref" in refused.value.fields
    with pytest.raises(ValidationFailed) as refused:
        records.create("order", {"kind": "b", "ref": "recode"}, SYSTEM, NOW)  # recode breaks the pattern
    assert refused.value.message.startswith("rule 'recode': ") and "code" in refused.value.fields
    lab = Lab(instance, {})
    assert lab.count("shop__order") == 0 and lab.count("kiln_audit") == 0
    kept = records.create("order", {"kind": "a", "ref": "R-1"}, SYSTEM, NOW)
    assert (kept["kind"], kept["version"]) == ("b", 1)


REQUIRED_APP = """
app: desk
entities:
  request:
    fields:
      kind: {type: select, options: {a: A, b: B}}
      title: {type: text, required: true}
      note: {type: text, required_if: 'kind == "b"'}
      detail: {type: text, required: true, visible_if: 'kind == "b"'}
    rules:
      - {name: flip, on: created, when: 'kind == "a"', do: [{set: {kind: b}}]}
      - {name: blank, on: created, when: 'title == "blank"', do: [{set: {title: ""}}]}
"""


def test_what_a_creations_rules_change_makes_other_fields_required_again(db_url, write_definitions, open_instance):
    """The record is checked again after its creation's rules for what their changes can
    change: a field they empty, and fields whose being required depends on a field they set."""
    from engine.actors import SYSTEM

    records = open_instance(write_definitions({"desk/app.yaml": REQUIRED_APP}), db_url).records("desk")
    with pytest.raises(ValidationFailed) as refused:
        records.create("request", {"kind": "a", "title": "t"}, SYSTEM, NOW)  # B now: note and detail are required
    assert set(refused.value.fields) == {"note", "detail"}
    with pytest.raises(ValidationFailed) as refused:
        records.create("request", {"title": "blank"}, SYSTEM, NOW)
    assert set(refused.value.fields) == {"title"}
    kept = records.create("request", {"kind": "a", "title": "t", "note": "n", "detail": "d"}, SYSTEM, NOW)
    assert kept["kind"] == "b"


GUARDED_APP = """
app: yard
entities:
  job:
    fields:
      title: {type: text}
      locked: {type: boolean}
      grade: {type: select, options: {a: A, b: B}, readonly_if: locked}
      tags: {type: tags, readonly_if: locked}
    rules:
      - {name: regrade, on: updated, when: 'title == "regrade"', do: [{set: {grade: b}}, {add_tag: seen}]}
      - {name: retag, on: updated, when: 'title == "retag"', do: [{add_tag: late}]}
"""


def test_a_rule_refused_by_readonly_if_names_itself_and_its_action_and_changes_nothing(db_url, write_definitions, open_instance):
    """Rules made only of literal sets and tags are staged as they are (engine/staging.py:
    stage_edits); a field's readonly_if still refuses them, naming the rule and the action."""
    from engine.actors import SYSTEM

    instance = open_instance(write_definitions({"yard/app.yaml": GUARDED_APP}), db_url)
    records = instance.records("yard")
    job = records.create("job", {"title": "new", "locked": True, "grade": "a"}, SYSTEM, NOW)
    lab = Lab(instance, {})
    trail = lab.count("kiln_audit")
    for title, prefix, field in (("regrade", "rule 'regrade' (set): ", "grade"), ("retag", "rule 'retag' (add_tag): ", "tags")):
        with pytest.raises(ValidationFailed) as refused:
            records.update("job", job["id"], {"title": title}, None, SYSTEM, NOW)
        assert refused.value.message.startswith(prefix) and set(refused.value.fields) == {field}
    unlocked = records.update("job", job["id"], {"locked": False}, None, SYSTEM, NOW)
    assert lab.count("kiln_audit") == trail + 1  # the refused updates wrote nothing
    assert (unlocked["title"], unlocked["grade"], unlocked["tags"]) == ("new", "a", [])
    done = records.update("job", job["id"], {"title": "regrade"}, None, SYSTEM, NOW)
    assert (done["grade"], done["tags"]) == ("b", ["seen"])
    steps = [(e["action"], e["rule"], e["changes"]) for e in records.history("job", job["id"], SYSTEM)[-2:]]
    assert steps == [("update", "regrade", {"grade": ["a", "b"]}), ("update", "regrade", {"tags": [None, ["seen"]]})]


ROLE_APP = """
app: works
roles:
  clerk: {label: 文员}
entities:
  job:
    fields:
      title: {type: text}
      grade: {type: select, options: {a: A, b: B}}
    permissions:
      clerk: {create: true, read: all, update: all, readonly: [grade]}
    rules:
      - {name: grade-b, on: created, when: 'title == "big"', do: [{set: {grade: b}}]}
"""


def test_a_rule_sets_a_field_the_role_of_the_user_who_fired_it_may_not(db_url, write_definitions, open_instance):
    """A rule acts as the system, whoever fired it: a clerk's creation gets the grade its rule
    sets, though the clerk may not set it (and is refused when trying)."""
    from engine.actors import Actor

    instance = open_instance(write_definitions({"works/app.yaml": ROLE_APP}), db_url)
    records = instance.records("works")
    clerk = Actor(add_user(instance, "li", "works", ["clerk"]), "li", frozenset({"clerk"}))
    with pytest.raises(ValidationFailed) as refused:
        records.create("job", {"title": "small", "grade": "a"}, clerk, NOW)
    assert set(refused.value.fields) == {"grade"}
    job = records.create("job", {"title": "big"}, clerk, NOW)
    assert job["grade"] == "b"
    steps = [(e["action"], e["actor"], e["rule"], e["changes"]) for e in records.history("job", job["id"], clerk)]
    assert steps[1:] == [("update", "system", "grade-b", {"grade": [None, "b"]})]
