"""notify and webhook (engine/outbox.py): recipients resolved to users, one outbox row per
recipient and channel in the change's transaction, never queued twice."""

from __future__ import annotations

import pytest

from engine import outbox
from engine.errors import ValidationFailed
from tests.test_rules_support import NOW, Lab, open_lab


@pytest.fixture
def lab(db_url, write_definitions, open_instance) -> Lab:
    return open_lab(db_url, write_definitions, open_instance)


def test_notify_resolves_every_kind_of_recipient(lab: Lab):
    lab.set_manager("t1", "boss")
    lab.set_lead("leads", "lee")
    item = lab.create("item", title="tell", owner="t1")
    rows = [r for r in lab.rows("kiln_outbox") if r["channel"] != "webhook"]
    names = {v: k for k, v in lab.users.items()}
    # owner, created_by, role:boss, team:crew (n1, t1 again, t2, t3), manager_of(owner) (boss again),
    # lead_of(leads), zed
    expected = ["t1", "sam", "boss", "n1", "t2", "t3", "lee", "zed"]
    assert [names[int(r["recipient"])] for r in rows if r["channel"] == "email"] == expected
    assert {r["channel"] for r in rows} == {"in_app", "email"} and len(rows) == 2 * len(expected)
    first = rows[0]
    assert first["status"] == "pending" and first["attempts"] == 0 and first["record_id"] == item["id"]
    assert first["event_key"] == f"lab/item/{item['id']}/v1/rule:tell/0"
    assert first["payload"]["subject"] == "Hi tell"
    assert first["payload"]["body"] == f"Item {item['id']} for t1: {{survey_url}}"  # left for delivery
    notified = [e for e in lab.history("item", item["id"]) if e["action"] == "notify"]
    assert notified[0]["rule"] == "tell" and "zed" in notified[0]["comment"]


def test_webhook_body_paths_become_values(lab: Lab):
    item = lab.create("item", title="tell", owner="t2")
    (hook,) = [r for r in lab.rows("kiln_outbox") if r["channel"] == "webhook"]
    assert hook["recipient"] == "https://hooks.example/x" and hook["record_id"] == item["id"]
    assert hook["payload"]["body"] == {"title": "tell", "owner": "t2", "fixed": "literal text"}
    assert hook["payload"]["method"] == "POST"


def test_the_same_notification_is_never_queued_twice(lab: Lab):
    table = lab.instance.schema.system["kiln_outbox"]
    args = dict(app="lab", entity="item", record_id=1, event_key="k/1", channel="sms", recipient="7", payload={}, now=NOW)
    with lab.instance.engine.begin() as conn:
        assert outbox.enqueue(conn, table, **args) is True
        assert outbox.enqueue(conn, table, **args) is False
        assert outbox.enqueue(conn, table, **{**args, "channel": "email"}) is True
    with lab.instance.engine.connect() as conn:
        assert len(outbox.pending(conn, table)) == 2
        assert [r["channel"] for r in outbox.for_record(conn, table, "lab", "item", 1)] == ["sms", "email"]


def test_a_refused_change_queues_nothing(lab: Lab):
    with pytest.raises(ValidationFailed):
        lab.create("item", title="tell", owner="nobody-such")
    assert lab.count("kiln_outbox") == 0
