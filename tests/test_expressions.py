"""The expression language: parsing, type errors with positions, evaluation, SQL on both databases."""

from __future__ import annotations

import datetime as dt
import math
import operator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select

from engine.actors import Actor
from engine.builder import build_app
from engine.compiler import compile_definitions
from engine.db import connect
from engine.errors import DefinitionError, Loc
from engine.expressions import (
    Compiled,
    EvalContext,
    EvalError,
    NotSqlCompilable,
    SqlContext,
    compile_app,
    compile_expression,
    format_duration,
    parse_duration,
)
from engine.source import parse_yaml
from engine.tables import build_schema

APP = """
app: repair
timezone: Asia/Shanghai
roles: {reporter: {}, dispatcher: {}, technician: {}}
teams: {night_shift: {}, it_senior: {}}
entities:
  device:
    fields:
      code: {type: text}
      line: {type: select, options: {a: A线, b: B线}}
      site: {type: link, entity: site}
      labels: {type: tags}
  site:
    fields:
      city: {type: text}
  ticket:
    fields:
      summary: {type: text}
      device: {type: link, entity: device}
      category: {type: select, options: {mechanical: 机械, network: 网络, system: 系统}}
      urgency: {type: select, options: {high: 紧急, normal: 一般}}
      server_ip: {type: text}
      packet_loss: {type: decimal}
      qty: {type: integer}
      escalated: {type: boolean}
      due: {type: date}
      opens_at: {type: time}
      tags: {type: tags}
      assignee: {type: user}
      team: {type: team}
      double_cost: {type: computed, expr: "packet_loss * 2"}
      quad_cost: {type: computed, expr: "double_cost * 2"}
      age: {type: computed, expr: "now() - created_at"}
    workflow:
      initial: pending
      states: {pending: {}, dispatched: {}, closed: {}}
      transitions: {dispatch: {from: pending, to: dispatched}, close: {from: dispatched, to: closed}}
"""

NOW = dt.datetime(2026, 3, 1, 13, 0, tzinfo=dt.UTC)  # 21:00 in Shanghai
ANN = Actor(7, "ann", roles=frozenset({"dispatcher"}), teams=frozenset({"night_shift"}))


@pytest.fixture(scope="module")
def app():
    return build_app(parse_yaml(APP, "app.yaml"))


def compile_(app, source: str, expect: str | None = "boolean") -> Compiled:
    return compile_expression(source, Loc("app.yaml", 10, 5), app, app.entity("ticket"), expect)


def error(app, source: str, expect: str | None = "boolean") -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        compile_(app, source, expect)
    return info.value


# -- parsing and the whitelist -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message", "col"),
    [
        ("__import__('os')", "unknown function '__import__'", 5),
        ("summary.upper()", "only plain function calls", 5),
        ("summary.upper", "summary is a text field; it has no field 'upper'", 13),
        ("tags[0] == 'x'", "subscripts", 5),
        ("(lambda: 1)() == 1", "lambda is not allowed", 6),
        ("lambda: True", "lambda is not allowed", 5),
        ("'a'.join(['b']) == 'b'", "only plain function calls", 5),
        ("[x for x in tags]", "comprehensions", 5),
        ("qty % 2 == 0", "operator '%'", 5),
        ("qty ** 2 > 1", "operator '**'", 5),
        ("escalated is None", "'is' is not supported", 5),
        ("f'{summary}' == 'x'", "f-strings", 5),
        ("{'a': 1}", "dictionaries", 5),
        ("qty > > 1", "syntax error: invalid syntax", 11),
        ("qty == (1", "syntax error: '(' was never closed", 12),
        ("", "empty expression", 5),
        ("b'x' == summary", "literal b'x' is not supported", 5),
        ("escalated if qty else qty", "'... if ... else ...' is not supported", 5),
    ],
)
def test_refused_constructs(app, source: str, message: str, col: int) -> None:
    problem = error(app, source).problems[0]
    assert message in problem.message
    assert (problem.loc.line, problem.loc.col) == (10, col)


def test_unknown_function_lists_the_valid_ones(app) -> None:
    message = str(error(app, "contians(summary, 'x')"))
    assert "did you mean 'contains'?" in message
    assert "contains_any" in message and "time_between" in message


# -- type errors, with positions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message", "col"),
    [
        ('urgncy == "high"', "unknown field 'urgncy' in entity ticket; did you mean 'urgency'?", 5),
        ('qty > 1 and urgncy == "high"', "unknown field 'urgncy'", 17),
        ('device.lin == "a"', "unknown field 'lin' in entity device; did you mean 'line'?", 12),
        ('summary == 3', "cannot compare text with number", 5),
        ('qty == "3"', "cannot compare number with text", 5),
        ('category == "netwrk"', "'netwrk' is not an option of category; did you mean 'network'?", 17),
        ('category in ["network", "hardware"]', "'hardware' is not an option of category", 29),
        ('device.line == "c"', "'c' is not an option of device.line; expected one of: a, b", 20),
        ('state == "done"', "'done' is not a state of ticket's workflow; expected one of: closed, dispatched, pending", 14),
        ('summary', "a condition must be true or false, but this is text", 5),
        ('qty + 1', "a condition must be true or false, but this is number", 5),
        ('contains(summary)', "contains() takes 2 arguments, got 1", 5),
        ('now(1) > created_at', "now() takes 0 arguments, got 1", 5),
        ('has_role("boss")', "unknown role 'boss'", 14),
        ('in_team("night")', "unknown team 'night'", 13),
        ('count(tiket, qty > 1) > 1', "unknown entity 'tiket'; did you mean 'ticket'?", 11),
        ('count(ticket, qty > 1, within="7 days") > 1', "'7 days' is not a duration", 35),
        ('count(ticket, qty > 1, inside="7d") > 1', "count() has no argument 'inside'", 35),
        ('this.qty > 1', "'this' is only valid inside count(...)", 5),
        ('created_at - updated_at <= "2 hours"', "'2 hours' is not a duration", 32),
        ('created_at - updated_at <= 2', "cannot compare duration with number", 5),
        ('due > created_at', "a date field cannot be compared with a datetime", 5),
        ('summary < "b"', "text can only be compared with == and !=", 5),
        ('tags == null', "a multi-valued field is never null; use is_empty", 5),
        ('qty in summary', "'in' needs a list", 12),
        ('"x" in [1, 2]', "cannot compare text with number", 5),
        ('qty and escalated', "'and' needs true/false operands, but this is number", 5),
        ('not summary', "'not' needs true/false operands", 9),
        ('time_between(created_at, "8:00", "9:00")', "'8:00' is not a time of day", 30),
        ('hours_since(due) > 1', "hours_since() needs datetime here, not date", 17),
        ('assignee == "ann"', "cannot compare a user with text", 5),
        ('device == this', "'this' is only valid inside count(...)", 15),
        ('due + "3h" > today()', "a date can only move by whole days", 11),
        ('device.code.x == 1', "code is a text field; it has no field 'x'", 17),
        ('user.name == "a"', "user has no attribute 'name'; did you mean 'username'?", 10),
        ('changed(device.code)', "changed() takes a field name of ticket", 13),
        ('"轴承" in summary and urgncy', "unknown field 'urgncy'", 25),
    ],
)
def test_type_errors_point_at_the_character(app, source: str, message: str, col: int) -> None:
    problem = error(app, source).problems[0]
    assert message in problem.message, problem.message
    assert (problem.loc.file, problem.loc.line, problem.loc.col) == ("app.yaml", 10, col), problem


def test_default_must_fit_its_field(app) -> None:
    assert "expected date here, not number" in str(error(app, "qty + 1", expect="date"))
    assert compile_(app, "today()", expect="date").type == "date"


def test_check_reports_file_line_col(write_definitions) -> None:
    folder = write_definitions({
        "repair/app.yaml": """
            app: repair
            entities:
              ticket:
                fields:
                  urgency: {type: select, options: {high: H, normal: N}}
                  summary: {type: text, required_if: 'urgncy == "high"'}
                  note: {type: text, visible_if: urgency == "hi"}
        """,
    })  # fmt: skip
    with pytest.raises(DefinitionError) as info:
        compile_definitions(folder)
    lines = str(info.value).splitlines()
    assert any(line.endswith("app.yaml:6:43: unknown field 'urgncy' in entity ticket; did you mean 'urgency'?") for line in lines), lines
    assert any("app.yaml:7:49: 'hi' is not an option of urgency" in line for line in lines), lines


# -- compile_app -------------------------------------------------------------------------------

FULL = """
app: shop
roles: {clerk: {}}
entities:
  order:
    fields:
      amount: {type: decimal, required_if: 'state == "open"', visible_if: amount > 0, readonly_if: state == "paid"}
      placed: {type: date, default: today()}
      opened: {type: date, default: 2026-01-01}
      total: {type: computed, expr: amount * 2}
      cycle_a: {type: computed, expr: cycle_b + 1}
      cycle_b: {type: computed, expr: cycle_a + 1}
    form:
      - {section: main, fields: [amount], visible_if: amount > 1}
    validations:
      - {when: amount < 0, fields: [amount], message: no}
    workflow:
      initial: open
      states: {open: {}, paid: {}}
      transitions: {pay: {from: open, to: paid, when: amount > 0}}
      approvals: {big: {when: amount > 5000, before: pay, approvers: {role: clerk}}}
      cc: [{when: amount > 100, to: {role: clerk}}]
    permissions:
      clerk: {read: amount > 0, update: {when: created_by == user}}
    rules:
      - {name: r, on: created, when: changed(amount) and previous(amount) == null, do: []}
    sla:
      - {name: s, applies_if: 'amt > 1', start: created, stop: 'entered(paid)', target: 1h}
dashboards:
  d:
    cards:
      - {name: c, type: ratio, entity: order, where: 'amount > 1', numerator: 'state == "paid"'}
"""


def test_compile_app_compiles_every_expression() -> None:
    app = build_app(parse_yaml(FULL, "app.yaml"))
    compiled, problems = compile_app(app)
    order = app.entity("order")
    messages = [str(p) for p in problems]
    assert any("unknown field 'amt'" in m and m.startswith("app.yaml:28:") for m in messages), messages
    assert any("cycle" in m for m in messages), messages
    assert compiled.computed_types[("order", "total")] == "number"
    f = order.field("amount")
    for expr in (f.required_if, f.visible_if, f.readonly_if, order.form[0].visible_if, order.validations[0].when,
                 order.workflow.transitions[0].when, order.workflow.approvals[0].when, order.workflow.cc[0].when,
                 order.permissions[0].read, order.permissions[0].update.scope, order.rules[0].when):  # fmt: skip
        assert compiled[expr].type == "boolean", expr
    assert compiled[order.rules[0].when].uses_changes
    assert compiled[order.field("placed").default].type == "date"
    ctx = EvalContext(record={}, app=app, entity=order, now=NOW)
    assert compiled[order.field("opened").default].evaluate(ctx) == dt.date(2026, 1, 1)
    card = app.dashboards[0].cards[0]
    assert compiled.card(card, "where").source == "amount > 1"
    assert compiled[card.expr("numerator")].type == "boolean"
    assert compiled.card(card, "filter") is None


# -- evaluation --------------------------------------------------------------------------------

DEVICE = {"id": 3, "code": "D-3", "line": "a", "site": 9, "labels": ["old"]}
SITE = {"id": 9, "city": "苏州"}
RECORD: dict[str, Any] = {
    "id": 1, "number": "MX-1", "state": "pending", "summary": "轴承异响 bearing", "device": 3,
    "category": "network", "urgency": "high", "server_ip": None, "packet_loss": Decimal("12.50"), "qty": 3,
    "escalated": None, "due": dt.date(2026, 3, 2), "opens_at": dt.time(22, 30), "tags": ["x", "y"],
    "assignee": 7, "team": "night_shift", "double_cost": Decimal("25.00"),
    "created_at": dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC), "created_by": 7,
    "updated_at": dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC), "version": 1,
    "entered_pending_at": dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC),
    "entered_dispatched_at": dt.datetime(2026, 3, 1, 11, 30, tzinfo=dt.UTC), "entered_closed_at": None,
}  # fmt: skip


def evaluate(app, source: str, record: dict | None = None, **kw: Any) -> Any:
    loaded = {("device", 3): DEVICE, ("site", 9): SITE}
    ctx = EvalContext(record=RECORD if record is None else record, app=app, entity=app.entity("ticket"), now=NOW,
                      user=kw.pop("user", ANN), load=lambda e, i: loaded.get((e, i)), **kw)  # fmt: skip
    return compile_(app, source, expect=None).evaluate(ctx)


TRUE = [
    # literals, comparisons and chains
    "1 < 2", "1 <= qty <= 3", "qty == 3", "qty != 4", "packet_loss > 12.4", "packet_loss == 12.5", "-qty == -3",
    'summary != "x"', "true", "True", "not false", "not None == 1", 'category == "network"',
    # null rules: a comparison with null is false either way; == null / != null test for it
    "server_ip == null", "server_ip == None", "escalated == null", "not (server_ip == \"a\")", "not (server_ip != \"a\")",
    "entered_closed_at == null", "assignee != null", "not escalated",
    # in / not in
    'category in ["network", "system"]', 'category not in ["system"]', '"x" in tags', '"z" not in tags',
    '"轴承" in summary', '"z" not in summary', "qty in [1, 3]", "assignee in [user.id, 9]", "team in user.teams",
    "not (server_ip in [\"a\"])", "not (server_ip not in [\"a\"])",
    # and / or
    "qty > 1 and packet_loss > 1", "qty > 5 or packet_loss > 1", "not (qty > 5 or packet_loss > 100)",
    # arithmetic
    "qty + 1 == 4", "qty - 1 == 2", "qty * 2 == 6", "qty / 2 == 1.5", "packet_loss * 2 == 25", "(qty + packet_loss) * 2 == 31",
    "qty / 0 == null", 'summary + "!" == "轴承异响 bearing!"', "qty * (qty / 0) == null",
    # dates, datetimes, durations
    'entered_dispatched_at - created_at <= "2h"', 'entered_dispatched_at - created_at == "1h30m"',
    'entered_dispatched_at - created_at > "89m"', 'created_at + "3h" == now()', 'now() - "3h" == created_at',
    'updated_at - "2h" == created_at', 'created_at >= today()', 'created_at < "2026-03-02"', "due > today()",
    'due == "2026-03-02"', 'due - "1d" == today()', 'today() + "1d" == due', 'due - today() == "1d"',
    'created_at == "2026-03-01T18:00:00+08:00"', 'opens_at > "22:00"', 'date(created_at) == today()',
    'date(now()) == "2026-03-01"',
    # functions
    "is_empty(server_ip)", "not is_empty(summary)", 'is_empty("")', "is_empty(previous(tags))", "not is_empty(tags)",
    'contains(summary, "bear")', 'not contains(summary, "Bear")', 'contains(tags, "y")', 'contains_any(summary, ["x", "异响"])',
    'contains_any(tags, ["q", "x"])', 'not contains_any(server_ip, ["a"])', "len(summary) == 12", "len(tags) == 2",
    'time_between(now(), "20:00", "07:59")', 'not time_between(now(), "08:00", "20:59")', 'time_between(now(), "21:00", "21:00")',
    'time_between(opens_at, "22:00", "06:00")', 'time_between(created_at, "18:00", "18:00")',
    "hours_since(created_at) == 3", "hours_since(entered_dispatched_at) == 1.5", "hours_since(updated_at) < 1.01",
    'has_role("dispatcher")', 'not has_role("reporter")', 'in_team("night_shift")', 'not in_team("it_senior")',
    # links, user
    'device.line == "a"', 'device.code == "D-3"', 'device.site.city == "苏州"', '"old" in device.labels',
    "device == 3", "assignee == user", "assignee == user.id", "created_by == user", 'user.username == "ann"',
    'user.team == "night_shift"', 'team == user.team', '"dispatcher" in user.roles',
    # system fields and computed values
    'state == "pending"', 'number == "MX-1"', "id == 1", "version == 1", "double_cost == 25",
]  # fmt: skip


@pytest.mark.parametrize("source", TRUE)
def test_evaluates_true(app, source: str) -> None:
    assert evaluate(app, source) is True


FALSE = [
    "qty > 3", "server_ip != null", 'server_ip == "a"', 'server_ip != "a"', "escalated == false", "escalated",
    'server_ip in ["a"]', 'server_ip not in ["a"]', "qty / 0 > 1", 'contains(server_ip, "a")', "is_empty(tags)",
    'entered_closed_at - created_at > "1h"', "hours_since(entered_closed_at) > 1", 'time_between(entered_closed_at, "00:00", "23:59")',
    'device.site.city == "北京"', 'category == "system" and is_empty(server_ip)',
]  # fmt: skip


@pytest.mark.parametrize("source", FALSE)
def test_evaluates_false(app, source: str) -> None:
    assert evaluate(app, source) is False


def test_values(app) -> None:
    assert evaluate(app, "qty / 2") == Decimal("1.5")
    assert evaluate(app, "entered_dispatched_at - created_at") == dt.timedelta(minutes=90)
    assert evaluate(app, 'created_at + "1d"') == dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
    assert evaluate(app, "today()") == dt.date(2026, 3, 1)
    assert evaluate(app, "now()") == NOW
    assert evaluate(app, "user") == 7
    assert evaluate(app, "user.team", user=None) is None
    assert evaluate(app, "device.line", record={**RECORD, "device": None}) is None
    assert evaluate(app, "device.labels", record={**RECORD, "device": None}) == []
    assert evaluate(app, "packet_loss", record={**RECORD, "packet_loss": 0.1}) == Decimal("0.1")
    assert compile_(app, "age", expect=None).type == "duration"
    assert compile_(app, "quad_cost", expect=None).type == "number"


def test_no_user(app) -> None:
    assert evaluate(app, "assignee == user", user=None) is False
    assert evaluate(app, "assignee != user", user=None) is False
    assert evaluate(app, 'has_role("dispatcher")', user=None) is False
    assert evaluate(app, "team in user.teams", user=None) is False


def test_changed_and_previous(app) -> None:
    before = {**RECORD, "urgency": "normal"}
    assert evaluate(app, "changed(urgency)", previous=before) is True
    assert evaluate(app, "changed(summary)", previous=before) is False
    assert evaluate(app, 'previous(urgency) == "normal" and urgency == "high"', previous=before) is True
    # A new record has no previous version: what has a value has changed.
    assert evaluate(app, "changed(summary) and not changed(server_ip)") is True
    assert evaluate(app, "previous(urgency) == null") is True
    compiled = compile_(app, "changed(urgency)")
    assert compiled.uses_changes
    with pytest.raises(NotSqlCompilable):
        compiled.clause(None)  # type: ignore[arg-type]


def test_count_calls_the_counter(app) -> None:
    calls = []

    def count(entity: str, inner: Compiled, within: float | None, this: Any, at_most: int | None = None) -> int:
        calls.append((entity, inner.source, within, this["id"], at_most))
        return 3

    assert evaluate(app, 'count(ticket, device == this.device, within="7d") >= 3', count=count) is True
    assert calls == [("ticket", "device == this.device", 7 * 86400.0, 1, 4)]  # 4 rows settle it
    calls.clear()
    assert evaluate(app, "count(ticket, device == this.device) + 1 > 3", count=count) is True
    assert calls[0][-1] is None  # not compared with a number itself: counted whole


@pytest.mark.parametrize("op", ["<", "<=", "==", "!=", ">=", ">"])
@pytest.mark.parametrize("threshold", ["0", "2", "2.5", "3", "-1"])
@pytest.mark.parametrize("flipped", [False, True])
def test_a_count_compared_with_a_number_reads_no_more_rows_than_settle_it(app, op, threshold, flipped) -> None:
    """The counter may stop at the cap it is given: for every count, cap, operator and side the
    comparison comes out as with the whole count."""
    test = {"<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">=": operator.ge, ">": operator.gt}[op]
    counted, number = "count(ticket, device == this.device)", float(threshold)
    source = f"{threshold} {op} {counted}" if flipped else f"{counted} {op} {threshold}"
    for total in range(6):
        caps: list[int | None] = []

        def count(entity: str, inner: Compiled, within: float | None, this: Any, at_most: int | None = None,
                  total: int = total, caps: list = caps) -> int:  # fmt: skip
            caps.append(at_most)
            return total if at_most is None else min(total, at_most)

        expected = test(number, total) if flipped else test(total, number)
        assert evaluate(app, source, count=count) is expected, (source, total)
        assert caps == [max(0, math.floor(number) + 1)]
    with pytest.raises(EvalError):
        evaluate(app, "count(ticket, qty > 1) > 1")


def test_link_needs_a_loader(app) -> None:
    ctx = EvalContext(record=RECORD, app=app, entity=app.entity("ticket"), now=NOW)
    with pytest.raises(EvalError):
        compile_(app, 'device.line == "a"').evaluate(ctx)
    with pytest.raises(EvalError):  # both operands are evaluated before the null test
        compile_(app, "server_ip == device.code").evaluate(ctx)


def test_this_needs_the_outer_record(app) -> None:
    count = compile_(app, "count(ticket, qty >= this.qty) > 0").root.left
    ctx = EvalContext(record=RECORD, app=app, entity=app.entity("ticket"), now=NOW)
    with pytest.raises(EvalError):
        count.inner.evaluate(ctx)
    assert count.inner.evaluate(EvalContext(record=RECORD, app=app, entity=app.entity("ticket"), now=NOW, this=RECORD))


def test_links_are_loaded_once_per_evaluation(app) -> None:
    loads = []

    def load(entity: str, record_id: Any) -> dict | None:
        loads.append((entity, record_id))
        return {("device", 3): DEVICE, ("site", 9): SITE}.get((entity, record_id))

    compiled = compile_(app, 'device.line == "a" and device.code == "D-3" and device.site.city == "苏州"')
    ctx = EvalContext(record=RECORD, app=app, entity=app.entity("ticket"), now=NOW, load=load)
    assert compiled.evaluate(ctx) is True
    assert loads == [("device", 3), ("site", 9)]
    assert compiled.evaluate(ctx) is True  # a new evaluation reads the linked records afresh
    assert loads == [("device", 3), ("site", 9)] * 2


def test_the_python_form_is_built_once(app, monkeypatch) -> None:
    from engine.expressions import evaluate as python

    built = []
    monkeypatch.setattr(python, "condition", lambda node, build=python.condition: built.append(node) or build(node))
    compiled = compile_(app, 'category == "network" and qty >= 3')

    def evaluate(qty: int) -> Any:
        return compiled.evaluate(EvalContext(record={**RECORD, "qty": qty}, app=app, entity=app.entity("ticket"), now=NOW))

    assert evaluate(3) is True
    assert built[0] is compiled.root
    first = list(built)
    assert (evaluate(2), evaluate(4)) == (False, True)
    assert built == first  # the closures of the first evaluation serve the next ones


def test_durations() -> None:
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("7d") == dt.timedelta(days=7)
    assert parse_duration("2w") == dt.timedelta(days=14)
    assert parse_duration("45s") == dt.timedelta(seconds=45)
    assert parse_duration("2 hours") is None and parse_duration("") is None and parse_duration("h") is None
    assert format_duration(dt.timedelta(minutes=90)) == "1h30m"


# -- SQL on both databases ---------------------------------------------------------------------


@pytest.fixture
def database(app, db_url: str):
    schema = build_schema([app], {("repair", "ticket", "double_cost"): "number", ("repair", "ticket", "quad_cost"): "number",
                                  ("repair", "ticket", "age"): "duration"})  # fmt: skip
    engine = connect(db_url)
    schema.metadata.create_all(engine)
    tables = {name: schema.entity("repair", name) for name in ("site", "device", "ticket")}
    empty = {**{k: None for k in RECORD}, "tags": [], "state": "closed", "created_at": NOW - dt.timedelta(days=9),
             "updated_at": NOW, "version": 1}  # fmt: skip
    other = {**RECORD, "id": 2, "number": "MX-2", "summary": "network down", "qty": 0, "device": None, "tags": ["z"],
             "team": None, "escalated": True, "assignee": 8, "created_at": NOW - dt.timedelta(days=2)}  # fmt: skip
    records = [RECORD, other, {**empty, "id": 3, "number": "MX-3"}]
    with engine.begin() as conn:
        conn.execute(insert(tables["site"].main), [{**SITE, "created_at": NOW, "updated_at": NOW}])
        conn.execute(insert(tables["device"].main), [{**{k: v for k, v in DEVICE.items() if k != "labels"}, "created_at": NOW, "updated_at": NOW}])
        conn.execute(insert(tables["device"].children["labels"]), [{"record_id": 3, "position": 0, "value": "old"}])
        conn.execute(insert(tables["ticket"].main), [{k: v for k, v in r.items() if k != "tags"} for r in records])
        conn.execute(insert(tables["ticket"].children["tags"]),
                     [{"record_id": r["id"], "position": i, "value": t} for r in records for i, t in enumerate(r["tags"])])  # fmt: skip
    yield schema, engine, records
    engine.dispose()


def _python_ids(app, source: str, records: list[dict]) -> set[int]:
    loaded = {("device", 3): DEVICE, ("site", 9): SITE}
    by_id = {r["id"]: r for r in records}

    def count(entity: str, inner: Compiled, within: float | None, this: Any, at_most: int | None = None) -> int:
        ctxs = [EvalContext(record=r, app=app, entity=app.entity(entity), now=NOW, user=ANN, this=this,
                            load=lambda e, i: loaded.get((e, i)), count=count) for r in by_id.values()  # fmt: skip
                if within is None or r["created_at"] >= NOW - dt.timedelta(seconds=within)]
        found = sum(inner.evaluate(ctx) for ctx in ctxs)
        return found if at_most is None else min(found, at_most)

    compiled = compile_(app, source)
    ids = set()
    for record in records:
        ctx = EvalContext(record=record, app=app, entity=app.entity("ticket"), now=NOW, user=ANN,
                          load=lambda e, i: loaded.get((e, i)), count=count)  # fmt: skip
        if compiled.evaluate(ctx):
            ids.add(record["id"])
    return ids


SQL_CASES = [s for s in TRUE + FALSE if "previous(" not in s] + [
    'count(ticket, qty >= this.qty) == 1', 'count(ticket, device == this.device, within="3d") >= 2',
    'count(ticket, "z" in tags or "x" in this.tags) >= 2', "count(ticket, true) == 3",
    'count(ticket, count(ticket, this.id == id) == 1) == 3', "is_empty(device.labels)",
]


@pytest.mark.parametrize("source", SQL_CASES)
def test_sql_selects_what_python_selects(app, database, source: str) -> None:
    schema, engine, records = database
    table = schema.entity("repair", "ticket").main
    clause = compile_(app, source).clause(SqlContext(schema, app, app.entity("ticket"), NOW, ANN))
    with engine.connect() as conn:
        selected = set(conn.execute(select(table.c.id).where(clause)).scalars())
    assert selected == _python_ids(app, source, records)


def test_sql_values(app, database) -> None:
    schema, engine, _ = database
    table = schema.entity("repair", "ticket").main
    ctx = SqlContext(schema, app, app.entity("ticket"), NOW, ANN)

    def value(source: str) -> Any:
        clause = compile_(app, source, expect=None).clause(ctx)
        with engine.connect() as conn:
            return conn.execute(select(clause).where(table.c.id == 1)).scalar_one()

    assert float(value("qty / 2")) == 1.5
    assert float(value("entered_dispatched_at - created_at")) == 5400
    assert value('created_at + "1d"') == dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
    assert value('due + "1d"') == dt.date(2026, 3, 3)
    assert value("date(created_at)") == dt.date(2026, 3, 1)
    assert value("device.site.city") == "苏州"
    assert value("len(tags)") == 2
    assert float(value("hours_since(created_at)")) == 3


def test_count_inner_clause_with_this_values(app, database) -> None:
    """The records service counts with the inner condition and ``this`` bound as literals."""
    schema, engine, _ = database
    seen = {}

    def count(entity: str, inner: Compiled, within: float | None, this: Any, at_most: int | None = None) -> int:
        table = schema.entity("repair", entity).main
        sql = SqlContext(schema, app, app.entity(entity), NOW, ANN, table=table, this_values=this)
        with engine.connect() as conn:
            seen["n"] = len(conn.execute(select(table.c.id).where(inner.clause(sql))).all())
        return seen["n"]

    source = 'count(ticket, category == this.category and "x" in this.tags and device.line == "a") == 1'
    assert evaluate(app, source, count=count) is True
    assert seen["n"] == 1


def test_sqlite_local_time_function_follows_daylight_saving() -> None:
    from engine.expressions.dialect import kiln_local

    assert kiln_local("2026-03-08 06:30:00.000000", "America/New_York") == "2026-03-08 01:30:00.000000"
    assert kiln_local("2026-03-08 07:30:00.000000", "America/New_York") == "2026-03-08 03:30:00.000000"
    assert kiln_local(None, "Asia/Shanghai") is None
