"""Timing helpers and the shared benchmark fixture app."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICKET_APP = """
app: bench
timezone: Asia/Shanghai
roles:
  reporter: {label: 报修人}
  dispatcher: {label: 值班组长}
  technician: {label: 维修技师}
entities:
  device:
    label: 设备
    fields:
      code: {type: text, required: true, unique: true}
      name: {type: text, required: true}
      line: {type: select, options: {a: A线, b: B线, c: C线}}
  ticket:
    label: 维修工单
    number: "MX{created:%Y%m%d}-{seq:6}"
    fields:
      summary: {type: text, required: true, max_length: 200}
      device: {type: link, entity: device, required: true}
      category: {type: select, options: {mechanical: 机械, electrical: 电气, network: 网络, system: 系统}}
      urgency: {type: select, required: true, default: normal, options: {high: 紧急, normal: 一般}}
      server_ip: {type: text, pattern: '^\\d+\\.\\d+\\.\\d+\\.\\d+$'}
      packet_loss: {type: decimal, min: 0, max: 100}
      est_cost: {type: decimal, scale: 2}
      assignee: {type: user, role: technician}
      tags: {type: tags}
    validations:
      - when: category == "system" and is_empty(server_ip)
        fields: [server_ip]
        message: 请补充服务器IP以便远程诊断
    workflow:
      initial: pending
      states: {pending: {}, dispatched: {}, in_progress: {}, awaiting_check: {}, closed: {final: true}}
      transitions:
        dispatch: {from: pending, to: dispatched}
    permissions:
      dispatcher: {create: true, read: all, update: all}
      reporter: {create: true, read: own}
"""


@dataclass
class Result:
    name: str
    value: float
    unit: str
    target: str = ""
    note: str = ""

    def line(self) -> str:
        target = f"  (target {self.target})" if self.target else ""
        note = f"  [{self.note}]" if self.note else ""
        return f"{self.name:<58} {self.value:>12,.2f} {self.unit}{target}{note}"


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def write_app(folder: Path, text: str, app: str = "bench") -> Path:
    (folder / app).mkdir(parents=True, exist_ok=True)
    (folder / app / "app.yaml").write_text(text, encoding="utf-8")
    return folder
