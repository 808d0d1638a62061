"""Router headroom: dense, best single candidate and per-item oracle, read off a router dataset."""

from __future__ import annotations

import math

import pytest

from pudding.routerdata import headroom, headroom_table
from pudding.routerdata.dataset import make_dataset
from pudding.routerdata.headroom import accuracy_table

NAMES = ["a", "b", "c"]


def _dataset(rows):
    tasks, scores, dense = zip(*rows, strict=True)
    return make_dataset(
        {
            "task": list(tasks),
            "item_id": [str(i) for i in range(len(rows))],
            "router_text": ["x"] * len(rows),
            "scores": [list(s) for s in scores],
            "dense_score": list(dense),
        },
        num_candidates=3,
    )


def test_headroom_numbers_by_hand():
    ds = _dataset(
        [
            ("t1", (-1.0, -2.0, -3.0), -1.5),
            ("t1", (-4.0, -1.0, -3.0), -0.5),
            ("t1", (-1.0, -3.0, -2.0), -2.0),
            ("t2", (-5.0, -5.0, -1.0), -2.0),
            ("t2", (float("nan"), -1.0, -1.0), -1.0),  # dropped: not finite
        ]
    )
    t1, t2, total = headroom(ds, NAMES)
    assert (t1.task, t1.rows, t2.task, t2.rows, total.task, total.rows) == ("t1", 3, "t2", 1, "all", 4)
    # t1: candidate means a=-2, b=-2, c=-8/3 -> best static -2 (first of the tie, a); per-item best -1, -1, -1.
    assert t1.dense == pytest.approx(-4.0 / 3)
    assert (t1.best_static, t1.best_static_name) == (pytest.approx(-2.0), "a")
    assert t1.oracle == pytest.approx(-1.0)
    assert (t1.most_often_best, t1.most_often_share) == ("a", pytest.approx(2 / 3))
    assert t1.oracle_beats_dense == pytest.approx(2 / 3)  # -1 > -1.5 and -1 > -2, but not -1 > -0.5
    assert (t2.best_static_name, t2.oracle, t2.oracle_beats_dense) == ("c", -1.0, 1.0)
    # all four rows: means a=-2.75, b=-2.75, c=-2.25 -> c
    assert (total.best_static, total.best_static_name) == (pytest.approx(-2.25), "c")
    assert total.oracle == pytest.approx(-1.0)
    table = headroom_table([t1, t2, total])
    assert "| t1 | 3 | -1.33 | -2.00 (a) | -1.00 | a (67 %) | 67 % |" in table
    assert math.isclose(total.dense, (-1.5 - 0.5 - 2.0 - 2.0) / 4)


def test_headroom_of_no_finite_rows_is_empty():
    ds = _dataset([("t", (float("inf"), -2.0, -3.0), -1.0), ("t", (-1.0, -2.0, -3.0), float("nan"))])
    assert headroom(ds, NAMES) == []


def test_headroom_rejects_wrong_number_of_names():
    ds = _dataset([("t", (-1.0, -2.0, -3.0), -1.0)])
    with pytest.raises(ValueError, match="do not match 2 candidate names"):
        headroom(ds, ["a", "b"])


def test_accuracy_table_by_hand():
    ds = _dataset([("t", [-1.0, -2.0, -3.0], -1.0), ("t", [-1.0, -2.0, -3.0], -1.0), ("u", [-1.0, -2.0, -3.0], -1.0)])
    ds = ds.add_column("correct", [[True, False, False], [False, False, True], [False, True, True]])
    ds = ds.add_column("dense_correct", [True, False, False])
    lines = accuracy_table(ds, NAMES).splitlines()
    assert lines[2] == "| t | 2 | 50.00 | 50.00 (a) | 100.00 |"  # a and c tie at 50 %: the first is named
    assert lines[3] == "| u | 1 | 0.00 | 100.00 (b) | 100.00 |"
    assert lines[4] == "| all | 3 | 33.33 | 66.67 (c) | 100.00 |"
