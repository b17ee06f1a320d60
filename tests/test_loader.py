"""Reading an app folder: merging files, the overlay, ${VAR}, YAML 1.2 scalars, located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import DefinitionError, Loc
from engine.loader import app_folders, load_app_source
from engine.source import parse_yaml

APP = """
app: repair
entities:
  ticket:
    fields:
      summary: {type: text, label: 故障现象}
"""


def load(folder: Path, env: dict[str, str] | None = None):
    return load_app_source(folder, env or {}, folder.parent)


def test_files_merge_by_key(write_definitions) -> None:
    root = write_definitions({"repair/app.yaml": APP, "repair/entities/unit.yaml": "entities: {unit: {fields: {code: {type: text}}}}"})
    document = load(root / "repair").document
    assert list(document["entities"]) == ["ticket", "unit"]
    assert document["entities"]["unit"]["fields"]["code"] == {"type": "text"}
    # Each merged part keeps the place it came from.
    assert document["entities"].loc_of_key("unit") == Loc("repair/entities/unit.yaml", 1, 12)


def test_leaf_defined_twice_names_both_places(write_definitions) -> None:
    root = write_definitions({"repair/app.yaml": APP, "repair/more.yaml": "entities:\n  ticket:\n    fields:\n      summary: {type: textarea}\n"})
    with pytest.raises(DefinitionError) as caught:
        load(root / "repair")
    [problem] = caught.value.problems
    # Mappings merge down to the leaf: the clash is the field's 'type', in both files.
    assert problem.loc == Loc("repair/more.yaml", 4, 17)
    assert problem.message == "'type' is also defined at repair/app.yaml:5:17; define it in one file only"


def test_overlay_overrides_and_adds(write_definitions) -> None:
    root = write_definitions(
        {
            "repair/app.yaml": APP,
            "repair/custom.yaml": """
                entities:
                  ticket:
                    fields:
                      summary: {type: text, label: 问题描述}
                      remarks: {type: textarea}
                """,
        }
    )
    fields = load(root / "repair").document["entities"]["ticket"]["fields"]
    assert fields["summary"]["label"] == "问题描述"
    assert list(fields) == ["summary", "remarks"]
    assert fields.loc_of_key("remarks").file == "repair/custom.yaml"


def test_env_variables_and_defaults(write_definitions) -> None:
    root = write_definitions(
        {
            "repair/app.yaml": APP
            + """
notifications:
  channels:
    sms: {provider: webhook, url: "${SMS_URL}"}
    email: {smtp: "${SMTP_URL:-smtp://localhost:25}"}
    wecom: {url: "${WECOM_URL}"}
"""
        }
    )
    source = load(root / "repair", {"SMS_URL": "https://sms.example.com/send"})
    channels = source.document["notifications"]["channels"]
    assert channels["sms"]["url"] == "https://sms.example.com/send"
    assert channels["email"]["smtp"] == "smtp://localhost:25"
    assert channels["wecom"]["url"] == ""
    [warning] = source.warnings
    assert warning.severity == "warning" and "WECOM_URL" in warning.message
    assert warning.loc == Loc("repair/app.yaml", 11, 19)


def test_yaml_1_2_scalars() -> None:
    document = parse_yaml(
        "on: created\noff: yes\nstart: 09:00\nday: 2026-12-31\nflag: true\nother: no\nn: 010\nhex: 0x1F\n", "f.yaml"
    )
    assert document == {
        "on": "created", "off": "yes", "start": "09:00", "day": "2026-12-31", "flag": True, "other": "no",
        "n": 10, "hex": 31,
    }  # fmt: skip


def test_duplicate_key_in_one_file() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert str(caught.value) == "f.yaml:3:1: duplicate key 'a' (first at line 1)"


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("a:\n  b: 1\n c: 2\n", "f.yaml:3:2", "bad indentation"),
        ("a:\n  - x\n  y: 1\n", "f.yaml:3:3", "bad indentation"),
        ("a: b: c\n", "f.yaml:1:5", "unexpected ':'"),
        ("x: 1\na: [1, 2\n", "f.yaml:2:4", "unclosed '['"),
        ("a:\n\tb: 1\n", "f.yaml:2:1", "tab"),
    ],
)
def test_syntax_errors_are_located(text: str, where: str, words: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_yaml(text, "f.yaml")
    [problem] = caught.value.problems
    assert str(problem.loc) == where
    assert words in problem.message


def test_syntax_error_in_one_file_keeps_others(write_definitions) -> None:
    root = write_definitions({"repair/app.yaml": APP, "repair/bad.yaml": "entities:\n  unit:\n    fields: {a: 1\n"})
    with pytest.raises(DefinitionError) as caught:
        load(root / "repair")
    assert [str(p.loc) for p in caught.value.problems] == ["repair/bad.yaml:3:13"]


def test_app_folders_skip_hidden_and_empty(write_definitions, tmp_path: Path) -> None:
    root = write_definitions({"repair/app.yaml": APP, ".trash/app.yaml": APP, "notes/readme.txt": "x"})
    assert [p.name for p in app_folders(root)] == ["repair"]
    assert app_folders(tmp_path / "missing") == []
