"""Delivering the outbox (engine/delivery.py, engine/channels/): every channel against real local
receivers, retries with back-off, permanent failures, leases, concurrent deliverers and a
deliverer killed mid-send, each ending with every notification delivered exactly once."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from apps.cli import main
from engine import channels, delivery, migrations, outbox
from engine.instance import Instance
from tests.test_delivery_support import NOW, Desk, Receiver, SMTPServer, free_port, open_desk

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    """A port for the SMTP server, which the test starts (it may be down at first)."""
    server = SMTPServer(free_port())
    yield server
    server.stop()


@pytest.fixture
def desk(db_url, write_definitions, open_instance, smtp: SMTPServer, receiver: Receiver) -> Desk:
    return open_desk(write_definitions, open_instance, db_url, smtp.port, receiver)


def by_channel(desk: Desk) -> dict[str, dict]:
    """The rows by channel; the rule's own webhook (not a notify) as ``erp``."""
    return {r["channel"] if r["payload"]["kind"] == "notify" else "erp": r for r in desk.rows()}


def test_every_channel_delivers_its_own_format_once(desk: Desk, smtp: SMTPServer, receiver: Receiver):
    smtp.start()
    ticket = desk.create("Printer jams")
    stats = delivery.deliver_due(desk.instance, NOW)
    assert stats.as_json() == {"claimed": 7, "sent": 7, "retried": 0, "failed": 0, "released": 0}
    rows = by_channel(desk)
    assert all(r["status"] == "sent" and r["attempts"] == 1 and r["sent_at"] == NOW for r in rows.values())
    keys = {name: delivery.idempotency_key(r) for name, r in rows.items()}
    assert len(set(keys.values())) == 7

    (mail,) = smtp.messages
    assert mail["To"] == "alice@example.com" and mail["From"] == "desk@example.com"
    assert mail["Subject"] == "New ticket T001" and mail["Message-ID"] == f"<{keys['email']}@example.com>"
    assert mail.get_payload(decode=True).decode().strip() == "T001 Printer jams is yours"

    (sms,) = receiver.at("/sms")
    assert sms.body == {"to": "13800000001", "text": "New ticket T001\nT001 Printer jams is yours"}
    assert (
        sms.key == keys["sms"]
        and sms.headers["x-kiln-delivery"] == keys["sms"]
        and sms.headers["x-sms-key"] == "k1"
    )

    (notify,) = receiver.at("/notify")
    assert notify.headers["x-token"] == "t1" and notify.key == keys["webhook"]
    assert notify.body["to"] == {"username": "alice", "email": "alice@example.com", "phone": "13800000001"}
    assert notify.body["subject"] == "New ticket T001" and notify.body["record"]["number"] == "T001"

    (erp,) = receiver.at("/erp")
    assert erp.body == {"number": "T001", "summary": "Printer jams"} and erp.headers["x-erp"] == "e1"
    assert erp.key == keys["erp"]

    (wecom,) = receiver.at("/wecom")
    assert wecom.query == {"key": "w1"}
    assert wecom.body == {"msgtype": "text", "text": {"content": "New ticket T001\nT001 Printer jams is yours",
                                                      "mentioned_mobile_list": ["13800000001"]}}  # fmt: skip

    (ding,) = receiver.at("/dingtalk")
    assert ding.query["access_token"] == "d1"
    assert ding.body["msgtype"] == "text" and ding.body["text"]["content"].endswith("is yours @13800000001")
    assert ding.body["at"] == {"atMobiles": ["13800000001"], "isAtAll": False}
    # DingTalk's documented signature: Base64(HMAC-SHA256(secret, "<timestamp>\n<secret>"))
    expected = hmac.new(b"SECd1", f"{ding.query['timestamp']}\nSECd1".encode(), hashlib.sha256).digest()
    assert ding.query["sign"] == base64.b64encode(expected).decode()

    table = desk.instance.schema.system["kiln_notifications"]
    with desk.instance.engine.connect() as conn:
        (note,) = conn.execute(select(table)).mappings()
    assert (
        note["user_id"] == desk.users["alice"]
        and note["record_id"] == ticket["id"]
        and note["read_at"] is None
    )
    assert (note["subject"], note["body"]) == ("New ticket T001", "T001 Printer jams is yours")

    # Nothing is due any more: a later run sends nothing again.
    assert delivery.deliver_due(desk.instance, NOW + dt.timedelta(days=1)).claimed == 0
    assert len(smtp.messages) == 1 and len(receiver.received) == 5


def test_a_recipient_without_an_address_fails_at_once_and_says_why(
    desk: Desk, smtp: SMTPServer, receiver: Receiver
):
    smtp.start()
    desk.create("For bob", assignee="bob")
    stats = delivery.deliver_due(desk.instance, NOW)
    assert (stats.sent, stats.failed, stats.retried) == (5, 2, 0)
    rows = by_channel(desk)
    assert (
        rows["email"]["status"] == "failed"
        and rows["email"]["last_error"] == "user bob has no e-mail address"
    )
    assert rows["sms"]["status"] == "failed" and rows["sms"]["last_error"] == "user bob has no phone number"
    assert rows["email"]["attempts"] == 1 and rows["email"]["next_attempt_at"] is None
    assert smtp.messages == [] and receiver.at("/sms") == []
    # The group robots post to the group anyway, mentioning no one.
    assert "mentioned_mobile_list" not in receiver.at("/wecom")[0].body["text"]


def test_a_deactivated_user_and_an_unknown_channel_fail_at_once(desk: Desk, receiver: Receiver):
    desk.set_user("alice", is_active=False)
    desk.enqueue(1, "sms", str(desk.users["alice"]), {"kind": "notify", "body": "hi"})
    desk.enqueue(1, "fax", str(desk.users["bob"]), {"kind": "notify", "body": "hi"})
    assert delivery.deliver_due(desk.instance, NOW).failed == 2
    errors = {r["channel"]: r["last_error"] for r in desk.rows()}
    assert errors["sms"] == "user alice is deactivated"
    assert errors["fax"].startswith("unknown channel 'fax'")
    assert receiver.received == []


def test_smtp_down_for_a_while_then_up_delivers_exactly_once(desk: Desk, smtp: SMTPServer):
    desk.create("Mail me", channels="email")
    first = delivery.deliver_due(desk.instance, NOW)
    (row,) = desk.rows()
    assert first.retried == 1 and row["status"] == "retry" and row["attempts"] == 1
    assert "SMTP 127.0.0.1" in row["last_error"] and "ConnectionRefused" in row["last_error"]
    assert row["next_attempt_at"] == NOW + dt.timedelta(seconds=30)
    # Not due before its back-off has passed.
    assert delivery.deliver_due(desk.instance, NOW + dt.timedelta(seconds=29)).claimed == 0
    delivery.deliver_due(desk.instance, NOW + dt.timedelta(seconds=30))
    (row,) = desk.rows()
    assert row["attempts"] == 2 and row["next_attempt_at"] == NOW + dt.timedelta(seconds=90)  # doubled

    smtp.start()
    later = NOW + dt.timedelta(seconds=90)
    assert delivery.deliver_due(desk.instance, later).sent == 1
    (row,) = desk.rows()
    assert (
        row["status"] == "sent"
        and row["attempts"] == 3
        and row["sent_at"] == later
        and row["last_error"] is None
    )
    assert delivery.deliver_due(desk.instance, later + dt.timedelta(hours=5)).claimed == 0
    (mail,) = smtp.messages
    assert mail["Message-ID"] == f"<{delivery.idempotency_key(row)}@example.com>"


def test_after_the_last_attempt_a_row_fails_and_a_retry_queues_it_again(desk: Desk, smtp: SMTPServer):
    desk.create("Mail me", channels="email")
    at = NOW
    for _ in range(3):
        delivery.deliver_due(desk.instance, at, max_attempts=3)
        at += dt.timedelta(hours=1)
    (row,) = desk.rows()
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("failed", 3, None)
    assert "ConnectionRefused" in row["last_error"]
    assert delivery.deliver_due(desk.instance, at + dt.timedelta(days=1)).claimed == 0

    table = desk.instance.schema.system["kiln_outbox"]
    with desk.instance.engine.begin() as conn:
        assert outbox.retry(conn, table, row["id"], at) is True
        assert outbox.retry(conn, table, row["id"], at) is False  # pending now: nothing to retry
    smtp.start()
    assert delivery.deliver_due(desk.instance, at).sent == 1
    assert len(smtp.messages) == 1 and desk.rows()[0]["attempts"] == 1


def test_a_refused_mailbox_is_permanent(desk: Desk, smtp: SMTPServer):
    smtp.refuse.add("alice@example.com")
    smtp.start()
    desk.create("Mail me", channels="email")
    assert delivery.deliver_due(desk.instance, NOW).failed == 1
    (row,) = desk.rows()
    assert (
        row["status"] == "failed" and "550" in row["last_error"] and "alice@example.com" in row["last_error"]
    )


def test_http_answers_decide_between_retry_and_failure(desk: Desk, receiver: Receiver):
    payload = {
        "kind": "webhook",
        "url": receiver.url("/erp"),
        "method": "POST",
        "headers": {},
        "body": {"n": 1},
    }
    desk.enqueue(3, "webhook", receiver.url("/erp"), payload)
    desk.enqueue(1, "wecom", str(desk.users["alice"]), {"kind": "notify", "subject": "s", "body": "b"})
    receiver.answers = [500, 400, 429, (200, {"errcode": 45009, "errmsg": "api freq out of limit"})]
    stats = delivery.deliver_due(desk.instance, NOW)
    assert (stats.retried, stats.failed) == (3, 1)
    rows = desk.rows()
    assert [r["status"] for r in rows] == ["retry", "failed", "retry", "retry"]
    assert "HTTP 500" in rows[0]["last_error"] and "HTTP 400" in rows[1]["last_error"]
    assert rows[3]["last_error"] == "wecom robot: errcode 45009 api freq out of limit"
    assert delivery.deliver_due(desk.instance, NOW + dt.timedelta(seconds=30)).sent == 3
    assert [r["status"] for r in desk.rows()] == ["sent", "failed", "sent", "sent"]
    # each retried row went out twice with its one key; the failed one once
    keys = [r.key for r in receiver.received]
    assert len(keys) == 7 and len(set(keys)) == 4


def test_a_receiver_that_does_not_answer_in_time_is_retried(desk: Desk, receiver: Receiver, monkeypatch):
    monkeypatch.setattr(channels, "HTTP_TIMEOUT", 0.3)
    receiver.delay = 1.5
    desk.enqueue(1, "sms", str(desk.users["alice"]), {"kind": "notify", "body": "slow"})
    assert delivery.deliver_due(desk.instance, NOW).retried == 1
    (row,) = desk.rows()
    assert row["status"] == "retry" and "timed out" in row["last_error"] and "/sms" in row["last_error"]


def test_an_in_app_row_delivered_again_adds_no_second_notification(desk: Desk):
    desk.enqueue(1, "in_app", str(desk.users["alice"]), {"kind": "notify", "subject": "s", "body": "b"})
    lease = dt.timedelta(minutes=1)
    (claimed,) = delivery.claim(desk.instance, desk.instance.schema.system["kiln_outbox"], NOW, 10, lease)
    # The deliverer holding it dies; after the lease another one takes it and delivers.
    assert delivery.deliver_due(desk.instance, NOW + lease / 2).claimed == 0
    assert delivery.deliver_due(desk.instance, NOW + lease).sent == 1
    # The first one comes back to life and marks its copy: nothing changes.
    with desk.instance.engine.begin() as conn:
        assert delivery.mark_sent(conn, desk.instance.schema.system["kiln_outbox"], claimed, NOW) is False
    table = desk.instance.schema.system["kiln_notifications"]
    with desk.instance.engine.connect() as conn:
        assert len(conn.execute(select(table)).all()) == 1
    assert desk.rows()[0]["attempts"] == 2


def test_claims_never_overlap_and_a_released_row_is_due_again(desk: Desk):
    desk.enqueue(5, "in_app", str(desk.users["alice"]), {"kind": "notify", "body": "b"})
    table = desk.instance.schema.system["kiln_outbox"]
    first = delivery.claim(desk.instance, table, NOW, 3, delivery.LEASE)
    second = delivery.claim(desk.instance, table, NOW, 3, delivery.LEASE)
    assert len(first) == 3 and len(second) == 2 and not {r["id"] for r in first} & {r["id"] for r in second}
    assert delivery.release(desk.instance, table, first, NOW) == 3
    assert {(r["status"], r["attempts"]) for r in desk.rows() if r["id"] in {x["id"] for x in first}} == {
        ("pending", 0)
    }
    assert delivery.deliver_due(desk.instance, NOW).sent == 3


def test_two_deliverers_at_once_never_send_the_same_row(desk: Desk, receiver: Receiver, tmp_path: Path):
    receiver.delay = 0.01
    desk.enqueue(40, "sms", str(desk.users["alice"]), {"kind": "notify", "body": "hello"})
    url = desk.instance.engine.url.render_as_string(hide_password=False)
    others = [Instance.open(desk.instance.definitions, url, env={}) for _ in range(2)]
    totals: list[delivery.Stats] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(instance: Instance) -> None:
        try:
            start.wait()
            while (stats := delivery.deliver_due(instance, NOW, limit=4)).claimed:
                totals.append(stats)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in others:
        i.close()
    assert errors == []
    keys = [r.key for r in receiver.received]
    assert len(keys) == 40 and len(set(keys)) == 40
    assert sum(s.sent for s in totals) == 40 and sum(s.claimed for s in totals) == 40
    assert {r["status"] for r in desk.rows()} == {"sent"}


WORKER = """
import datetime as dt, sys
sys.path.insert(0, {root!r})
from engine.delivery import deliver_due
from engine.instance import Instance
instance = Instance.open({definitions!r}, {url!r}, env={{}})
while True:
    deliver_due(instance, dt.datetime.now(dt.UTC), limit=2, lease=dt.timedelta(seconds=60))
"""


def test_a_deliverer_killed_mid_send_leaves_nothing_unsent_and_nothing_sent_twice_under_two_keys(
    desk: Desk, receiver: Receiver
):
    n = 8
    desk.enqueue(n, "sms", str(desk.users["alice"]), {"kind": "notify", "body": "hello"}, now=NOW)
    receiver.hold = 3  # the third request: the receiver takes it, the deliverer waits for the answer
    url = desk.instance.engine.url.render_as_string(hide_password=False)
    script = WORKER.format(root=str(ROOT), definitions=str(desk.instance.definitions), url=url)
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env={**os.environ})
    try:
        assert receiver.arrived.wait(60), "the worker never reached the third send"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    receiver.release.set()
    statuses = [r["status"] for r in desk.rows()]
    assert statuses[:2] == ["sent", "sent"] and statuses[2:4] == ["sending", "sending"], statuses
    assert statuses[4:] == ["pending"] * (n - 4)

    # Another deliverer, once the dead one's lease has run out.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
    while delivery.deliver_due(desk.instance, later).claimed:
        pass
    assert {r["status"] for r in desk.rows()} == {"sent"}
    keys = [r.key for r in receiver.received]
    # Row 3 reached the receiver twice (the window: sent, then killed before marking it), both
    # times with the same key; a receiver that drops a key it has seen got each row once.
    assert len(set(keys)) == n and len(keys) == n + 1
    assert keys.count(delivery.idempotency_key(desk.rows()[2])) == 2


def test_an_existing_database_gets_the_notifications_table_by_migrate(desk: Desk, capsys):
    instance = desk.instance
    with instance.engine.begin() as conn:
        conn.execute(text("DROP TABLE kiln_notifications"))
    plan = migrations.pending(instance.engine, instance.compiled)
    assert plan is not None and "kiln_notifications" in plan.render()
    url = instance.engine.url.render_as_string(hide_password=False)
    assert main(["migrate", "--db", url, "--definitions", str(instance.definitions)]) == 0
    assert "kiln_notifications" in capsys.readouterr().out
    assert inspect(instance.engine).has_table("kiln_notifications")
    assert migrations.pending(instance.engine, instance.compiled) is None


# -- run.py outbox -------------------------------------------------------------------------------


def cli(desk: Desk, *args: str) -> int:
    url = desk.instance.engine.url.render_as_string(hide_password=False)
    return main(["outbox", "--db", url, "--definitions", str(desk.instance.definitions), *args])


def test_the_outbox_command_lists_retries_and_delivers(desk: Desk, smtp: SMTPServer, capsys):
    desk.create("Mail me", channels="email")
    desk.create("For bob", assignee="bob", channels="email")
    assert cli(desk, "--deliver", "--now", NOW.isoformat()) == 0
    assert capsys.readouterr().out.strip() == "claimed 2: sent 0, to retry 1, failed 1"

    assert cli(desk) == 0
    out = capsys.readouterr().out
    assert "failed   " in out and "error: user bob has no e-mail address" in out
    assert "retry    " in out and "alice desk/ticket/1" in out and "ConnectionRefused" in out

    assert cli(desk, "--status", "failed", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["recipient_name"] == "bob" and row["status"] == "failed" and row["attempts"] == 1

    desk.set_user("bob", email="bob@example.com")
    assert cli(desk, "--retry", str(row["id"]), "--now", NOW.isoformat()) == 0
    assert f"outbox row {row['id']} queued again" in capsys.readouterr().out
    assert cli(desk, "--retry", str(row["id"])) == 1
    assert "no failed or waiting outbox row" in capsys.readouterr().err

    smtp.start()
    assert cli(desk, "--deliver", "--now", (NOW + dt.timedelta(minutes=1)).isoformat()) == 0
    assert capsys.readouterr().out.strip() == "claimed 2: sent 2, to retry 0, failed 0"
    assert sorted(m["To"] for m in smtp.messages) == ["alice@example.com", "bob@example.com"]
    assert cli(desk, "--status", "pending") == 0
    assert capsys.readouterr().out.strip() == "no outbox rows with status pending"


def test_user_add_sets_the_addresses_notifications_go_to(desk: Desk, capsys):
    url = desk.instance.engine.url.render_as_string(hide_password=False)
    common = ["--db", url, "--definitions", str(desk.instance.definitions)]
    carol = [
        "user",
        "add",
        "carol",
        "--app",
        "desk",
        "--roles",
        "agent",
        "--email",
        "c@example.com",
        "--phone",
        "139",
    ]
    assert main([*carol, *common]) == 0
    assert main(["user", "add", "bob", "--phone", "13700000000", "--admin", *common]) == 0
    users = desk.instance.schema.system["kiln_users"]
    with desk.instance.engine.connect() as conn:
        found = dict(
            conn.execute(
                select(users.c.username, users.c.phone).where(users.c.username.in_(["carol", "bob"]))
            ).all()
        )
        email = conn.execute(select(users.c.email).where(users.c.username == "carol")).scalar_one()
    assert found == {"carol": "139", "bob": "13700000000"} and email == "c@example.com"
