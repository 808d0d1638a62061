"""The results table: every row is the right lookup in hand-made outcomes."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from pudding.outcomes import Outcomes, set_key
from pudding.routed.table import build_rows, csv_table, markdown_table, routing_histogram

SETS = [(1, 2), (3, 4), (2, 5)]
NAMES = ["a/likelihood", "b/margin", "c/likelihood"]


def outcomes() -> dict[str, Outcomes]:
    # piqa has acc and acc_norm, boolq acc only; gold is 0 everywhere, pred 0 means right
    piqa = Outcomes("piqa", ["p0", "p1", "p2", "p3"], np.zeros(4, dtype=np.int64))
    piqa.pred = {
        "": np.array([0, 0, 1, 1]),
        set_key(SETS[0]): np.array([0, 1, 1, 1]),
        set_key(SETS[1]): np.array([1, 0, 0, 1]),
        set_key(SETS[2]): np.array([1, 1, 1, 1]),
    }
    piqa.pred_norm = {k: 1 - v for k, v in piqa.pred.items()}
    boolq = Outcomes("boolq", ["b0", "b1"], np.zeros(2, dtype=np.int64))
    boolq.pred = {"": np.array([1, 1]), set_key(SETS[0]): np.array([0, 1]), set_key(SETS[1]): np.array([1, 1])}
    boolq.pred[set_key(SETS[2])] = np.array([1, 0])
    boolq.pred_norm = dict(boolq.pred)
    return {"piqa": piqa, "boolq": boolq}


def test_rows_are_the_right_lookups():
    choices = {"piqa": [0, 1, 1, 2], "boolq": [0, 2]}
    rows = {r.kind if r.kind != "static" else r.name: r for r in build_rows(outcomes(), NAMES, SETS, choices, 1, 10)}
    assert rows["dense"].results["piqa"]["acc"] == pytest.approx(0.5)
    assert rows["dense"].results["piqa"]["acc_norm"] == pytest.approx(0.5)
    assert rows["a/likelihood"].results["piqa"]["acc"] == pytest.approx(0.25)
    assert rows["best_static"].results == rows["b/margin"].results
    # routed: piqa items 0..3 use sets 0,1,1,2 → right, right, right, wrong; boolq: set 0 on b0 right, set 2 on b1
    assert rows["routed"].results["piqa"]["acc"] == pytest.approx(0.75)
    assert rows["routed"].results["boolq"]["acc"] == pytest.approx(1.0)
    assert rows["routed"].average == pytest.approx((0.75 + 1.0) / 2)
    # oracle: any candidate right; random: mean over candidates
    assert rows["oracle"].results["piqa"]["acc"] == pytest.approx(0.75)
    assert rows["random"].results["piqa"]["acc"] == pytest.approx((1 + 2 + 0) / 12)
    assert rows["random"].results["boolq"]["acc"] == pytest.approx((1 + 0 + 1) / 6)
    assert "acc_norm" not in rows["routed"].results["boolq"]
    assert rows["dense"].blocks_kept == 10 and rows["routed"].blocks_kept == 8


def test_routed_acc_norm_uses_the_norm_predictions():
    choices = {"piqa": [2, 2, 2, 2], "boolq": [0, 0]}
    routed = build_rows(outcomes(), NAMES, SETS, choices, 0, 10)[-1]
    assert routed.results["piqa"]["acc"] == 0.0 and routed.results["piqa"]["acc_norm"] == 1.0


def test_wrong_number_of_choices_is_refused():
    with pytest.raises(ValueError, match="piqa: 3 routing choices for 4 items"):
        build_rows(outcomes(), NAMES, SETS, {"piqa": [0, 1, 2], "boolq": [0, 0]}, 0, 10)


def test_histogram_and_tables():
    choices = {"piqa": [0, 1, 1, 2], "boolq": [0, 2]}
    assert routing_histogram(choices, 3) == {"piqa": [1, 2, 1], "boolq": [1, 0, 1]}
    rows = build_rows(outcomes(), NAMES, SETS, choices, 1, 10, sleb=(1, 2))
    md = markdown_table(rows, ["piqa", "boolq"])
    assert md.count("\n") == len(rows) + 1 and "**PuDDing (router)**" in md
    parsed = list(csv.DictReader(io.StringIO(csv_table(rows, ["piqa", "boolq"]))))
    assert [r["kind"] for r in parsed][-3:] == ["random", "oracle", "routed"]
    assert float(parsed[-1]["piqa/acc"]) == pytest.approx(0.75)
    assert parsed[5]["kind"] == "sleb" and float(parsed[5]["boolq/acc"]) == pytest.approx(0.5)
