"""`run.py user add` and `run.py token create`, run as the real command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from engine import accounts

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = """
app: estate
roles:
  customer_service: {label: 客服}
  technician: {label: 维修技师}
teams:
  maintenance: {label: 工程维修组}
entities:
  ticket:
    fields:
      summary: {type: text}
"""


@pytest.fixture
def setup(write_definitions, open_instance, db_url: str):
    """A migrated instance; returns a function running ``run.py`` against it, and its engine."""
    folder = write_definitions({"estate/app.yaml": DEFINITION})
    instance = open_instance(folder, db_url)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "run.py", *args, "--db", db_url, "--definitions", str(folder)]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)

    return cli, instance.engine


def test_user_add_prints_a_generated_password(setup):
    cli, engine = setup
    done = cli("user", "add", "li_jing", "--app", "estate", "--roles", "customer_service", "--team", "maintenance")
    assert done.returncode == 0, done.stderr
    assert "added user li_jing (estate: customer_service; team maintenance)" in done.stdout
    password = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("password: "))
    assert accounts.verify_password(engine, "li_jing", password)
    actor = accounts.actor_for(engine, "li_jing", "estate")
    assert actor.roles == {"customer_service"} and actor.teams == {"maintenance"}


def test_user_add_with_password_manager_and_admin(setup):
    cli, engine = setup
    assert cli("user", "add", "chen", "--app", "estate", "--roles", "technician", "--team", "maintenance", "--lead").returncode == 0
    done = cli("user", "add", "liu", "--app", "estate", "--roles", "technician,customer_service", "--manager", "chen",
               "--password", "s3cret-pass", "--display-name", "刘强")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "password" not in done.stdout  # it was given, so it is not echoed
    liu = accounts.get_user(engine, "liu")
    assert liu.manager_id == accounts.get_user(engine, "chen").id and liu.display_name == "刘强"
    assert accounts.verify_password(engine, "liu", "s3cret-pass")
    assert accounts.team_lead(engine, "estate", "maintenance") == "chen"
    again = cli("user", "add", "liu", "--admin")
    assert again.returncode == 0 and "updated user liu (instance admin)" in again.stdout
    assert "password unchanged" in again.stdout
    assert accounts.get_user(engine, "liu").is_admin and accounts.verify_password(engine, "liu", "s3cret-pass")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--app", "estat", "--roles", "technician"], "unknown app 'estat'; did you mean 'estate'?"),
        (["--app", "estate", "--roles", "technican"], "has no role 'technican'; did you mean 'technician'?"),
        (["--app", "estate", "--roles", "technician", "--team", "nightshift"], "has no team 'nightshift'"),
        (["--app", "estate", "--roles", "technician", "--manager", "nobody"], "no user named 'nobody'"),
        (["--roles", "technician"], "give --app APP"),
    ],
)
def test_user_add_refuses_unknown_names(setup, args: list[str], message: str):
    cli, engine = setup
    done = cli("user", "add", "wang", *args)
    assert done.returncode == 1
    assert message in done.stderr
    assert accounts.get_user(engine, "wang") is None


def test_token_create_prints_a_token_stored_only_hashed(setup):
    cli, engine = setup
    cli("user", "add", "erp", "--app", "estate", "--roles", "customer_service")
    done = cli("token", "create", "erp", "--label", "erp-sync")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("kiln_") and "\n" not in token
    found = accounts.user_for_token(engine, token)
    assert found is not None and found.username == "erp"
    tokens = accounts.tables()["kiln_api_tokens"]
    with engine.connect() as conn:
        stored = conn.execute(select(tokens.c.token_hash, tokens.c.name)).one()
    assert stored.token_hash != token and stored.name == "erp-sync"


def test_token_create_for_an_unknown_user(setup):
    cli, _ = setup
    done = cli("token", "create", "ghost")
    assert done.returncode == 1 and "no user named 'ghost'" in done.stderr and done.stdout == ""


def test_commands_on_an_unmigrated_database_say_how_to_migrate(tmp_path: Path, write_definitions):
    folder = write_definitions({"estate/app.yaml": DEFINITION})
    url = f"sqlite:///{tmp_path}/empty.db"
    for args in (["user", "add", "x", "--app", "estate", "--roles", "technician"], ["token", "create", "x"]):
        done = subprocess.run([sys.executable, "run.py", *args, "--db", url, "--definitions", str(folder)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 1 and "python run.py migrate" in done.stderr
