"""The assign action (engine/assignment.py): a named user, another field, round robin (also under
concurrent creates, on each backend) and least loaded."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_rules_support import NOW, Lab, open_lab


@pytest.fixture
def lab(db_url, write_definitions, open_instance) -> Lab:
    return open_lab(db_url, write_definitions, open_instance)


def test_assign_a_named_user_and_from_another_field(lab: Lab):
    assert lab.create("job", kind="named")["backup"] == "zed"
    copied = lab.create("job", kind="copy", worker="t2")
    assert copied["backup"] == "t2"
    history = lab.history("job", copied["id"])
    assert history[-1]["rule"] == "copy" and history[-1]["changes"] == {"backup": [None, "t2"]}


def test_round_robin_takes_turns_among_the_members_with_the_fields_role(lab: Lab):
    workers = [lab.create("job", kind="rr")["worker"] for _ in range(7)]
    assert workers == ["t1", "t2", "t3", "t1", "t2", "t3", "t1"]  # n1 is in crew but not a tech
    assert [r["turn"] for r in lab.rows("kiln_assign_cursor")] == [6]


def test_round_robin_under_concurrent_creates_gives_distinct_turns(lab: Lab):
    with ThreadPoolExecutor(max_workers=4) as pool:
        workers = list(pool.map(lambda _: lab.create("job", kind="rr")["worker"], range(12)))
    assert Counter(workers) == {"t1": 4, "t2": 4, "t3": 4}
    assert lab.rows("kiln_assign_cursor")[0]["turn"] == 11


def test_least_loaded_counts_open_records_and_breaks_ties_by_username(lab: Lab):
    lab.create("job", worker="t1")
    lab.create("job", worker="t1")
    done = lab.create("job", worker="t2")
    records = lab.records
    with records.transaction() as conn:  # a closed job is no load
        records.update_in(conn, records.entity("job"), done["id"], {}, 1, lab.actor(), NOW, move_to="done", transition="close")
    picks = [lab.create("job", kind="ll")["worker"] for _ in range(4)]
    # loads t1 2, t2 0, t3 0 -> t2 (tie with t3, by name); then t3; then t2 and t3 at 1 -> t2; t3
    assert picks == ["t2", "t3", "t2", "t3"]
