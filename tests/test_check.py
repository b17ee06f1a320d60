"""`run.py check`, run the way a user runs it: a subprocess in the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

APP = """
app: repair
roles: {tech: {}}
entities:
  device:
    fields:
      code: {type: text}
  ticket:
    fields:
      summary: {type: text, required: true}
      category: {type: select, options: [network, system]}
      server_ip: {type: text}
    validations:
      - when: category == "system" and is_empty(server_ip)
        fields: [server_ip]
        message: 请补充服务器IP以便远程诊断
    workflow:
      states: {open: {}, done: {final: true}}
      transitions:
        finish: {from: open, to: done, roles: [tech]}
"""


def run_check(folder: Path) -> tuple[int, list[str]]:
    result = subprocess.run(
        [sys.executable, "run.py", "check", "--definitions", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stderr == ""
    return result.returncode, result.stdout.splitlines()


def test_valid_definitions(write_definitions) -> None:
    folder = write_definitions({"repair/app.yaml": APP})
    assert run_check(folder) == (0, ["ok: 1 app, 2 entities"])


def test_spec_example(write_definitions) -> None:
    text = (Path(__file__).parent / "fixtures" / "spec_example.yaml").read_text(encoding="utf-8")
    folder = write_definitions({"repair/app.yaml": text})
    assert run_check(folder) == (0, ["ok: 1 app, 3 entities"])


def test_unknown_field_type(write_definitions) -> None:
    folder = write_definitions({"repair/app.yaml": APP.replace("server_ip: {type: text}", "server_ip: {type: txt}")})
    code, lines = run_check(folder)
    assert code == 1
    assert lines == [f"{folder}/repair/app.yaml:11:25: unknown field type 'txt'; did you mean 'text'?", "1 error"]


def test_bad_indentation(write_definitions) -> None:
    folder = write_definitions({"repair/app.yaml": APP.replace("      summary:", "     summary:")})
    code, lines = run_check(folder)
    assert code == 1
    # YAML only sees the mistake where the next key fails to line up with the one moved.
    assert lines[0].startswith(f"{folder}/repair/app.yaml:10:7: YAML syntax error: bad indentation")
    assert lines[1:] == ["1 error"]


def test_undefined_state_in_a_transition(write_definitions) -> None:
    folder = write_definitions({"repair/app.yaml": APP.replace("to: done,", "to: dnoe,")})
    code, lines = run_check(folder)
    assert code == 1
    message = "unknown state 'dnoe' of ticket; did you mean 'done'?"
    assert lines[0] == f"{folder}/repair/app.yaml:19:34: {message}"
    assert lines[1:] == ["1 error"]


def test_typo_in_a_field_name_inside_a_condition(write_definitions) -> None:
    folder = write_definitions({"repair/app.yaml": APP.replace('category == "system"', 'categroy == "system"')})
    code, lines = run_check(folder)
    assert code == 1
    assert len(lines) == 2 and lines[1] == "1 error"
    assert lines[0].startswith(f"{folder}/repair/app.yaml:13:15: ")
    assert lines[0].endswith("unknown field 'categroy' in entity ticket; did you mean 'category'?")


def test_problems_of_several_files_are_sorted_and_relative(write_definitions, tmp_path: Path) -> None:
    write_definitions(
        {
            "repair/app.yaml": APP.replace("roles: [tech]", "roles: [boss]"),
            "repair/entities/part.yaml": "entities:\n  part:\n    fields:\n      name: {type: text, requird: true}\n",
        }
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "check", "--definitions", "definitions"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    # The schema stops an app before its references are checked: fix shapes first, then names.
    assert result.stdout.splitlines() == [
        "definitions/repair/entities/part.yaml:4:26: unknown key 'requird' in field name; did you mean 'required'?",
        "1 error",
    ]


def test_warnings_do_not_fail(write_definitions) -> None:
    text = APP.replace("app: repair", "app: repair\nnotifications:\n  channels:\n    wecom: {url: '${KILN_TEST_UNSET_VAR}'}")
    folder = write_definitions({"repair/app.yaml": text})
    code, lines = run_check(folder)
    assert code == 0
    assert lines == [
        f"{folder}/repair/app.yaml:4:19: warning: environment variable KILN_TEST_UNSET_VAR is not set; using an empty value",
        "ok: 1 app, 2 entities, 1 warning",
    ]


def test_no_definitions(tmp_path: Path) -> None:
    code, lines = run_check(tmp_path / "nothing")
    assert code == 1
    assert lines[0].startswith(f"{tmp_path / 'nothing'}:1:1: no app definitions found")
