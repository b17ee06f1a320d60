"""Definition load + compile of a 20-entity app (target: under 300 ms)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Result, median_ms, write_app
from engine.compiler import compile_definitions


def twenty_entities() -> str:
    lines = ["app: big", "roles: {agent: {label: 坐席}, lead: {label: 组长}}", "entities:"]
    for i in range(20):
        lines += [
            f"  e{i}:",
            f"    label: {{zh: 实体{i}, en: Entity {i}}}",
            f'    number: "E{i}-{{created:%Y%m%d}}-{{seq:4}}"',
            "    fields:",
            "      title: {type: text, required: true, max_length: 200}",
            "      body: {type: textarea}",
            "      kind: {type: select, options: {a: 甲, b: 乙, c: 丙}, required: true}",
            "      amount: {type: decimal, min: 0, max: 100000}",
            "      qty: {type: integer, min: 0}",
            "      due: {type: date, required_if: 'kind == \"a\"'}",
            "      at: {type: datetime}",
            "      done: {type: boolean, default: false}",
            "      owner: {type: user}",
            "      tags: {type: tags}",
            "      email: {type: email}",
            "      rating: {type: rating, max: 5}",
            f"      parent: {{type: link, entity: e{(i + 1) % 20}}}",
            "      total: {type: computed, expr: 'amount * qty'}",
            "    validations:",
            "      - {when: 'kind == \"b\" and is_empty(email)', fields: [email], message: 请填写邮箱}",
            "    workflow:",
            "      initial: open",
            "      states: {open: {}, working: {}, done: {final: true}}",
            "      transitions:",
            "        start: {from: open, to: working, roles: [agent]}",
            "        finish: {from: working, to: done, when: 'not is_empty(amount)'}",
            "    permissions:",
            "      agent: {create: true, read: own, update: {own: true, states: [open]}}",
            "      lead: {read: all, update: all}",
        ]
    return "\n".join(lines) + "\n"


def run(options: dict) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_app(Path(tmp), twenty_entities(), "big")
        ms = median_ms(lambda: compile_definitions(folder, env={}), runs=15)
    return [Result("compile: load + validate + compile, 20 entities", ms, "ms (median)", "< 300 ms")]
