"""The suite's schedule under pytest-xdist (tests/conftest.py): files are the units of work, the long ones start
first by their measured seconds. A renamed or split file must keep its place in that table, or it would start
last and keep one worker busy alone at the end."""

from __future__ import annotations

from pathlib import Path

from conftest import FILE_SECONDS, start_order

ROOT = Path(__file__).resolve().parents[1]


class Item:  # what start_order reads of a pytest item
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def test_every_file_the_schedule_names_exists_and_longest_files_start_first():
    assert [f for f in FILE_SECONDS if not (ROOT / f).is_file()] == []
    items = [Item("tests/test_env.py::test_a"), Item("tests/test_learning_turn.py::test_b")]
    items += [Item("tests/test_learning_episode.py::test_c"), Item("tests/test_env.py::test_d")]
    ordered = [i.nodeid for i in sorted(items, key=start_order)]
    assert ordered == [
        "tests/test_learning_episode.py::test_c",
        "tests/test_learning_turn.py::test_b",
        "tests/test_env.py::test_a",  # an unlisted file keeps its collection order, after the listed ones
        "tests/test_env.py::test_d",
    ]
