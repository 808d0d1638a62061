"""The results table: every row is the right lookup in hand-made outcomes."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from pudding.core.outcomes import Outcomes, set_key
from pudding.core.results import build_rows, csv_table, markdown_table, routing_histogram

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


def test_several_depths_give_best_static_and_sleb_rows_per_depth():
    # a fourth candidate omitting 3 blocks (its outcomes copied from b/margin's): two depths, 2 and 3 omitted
    deep = (1, 2, 3)
    out = outcomes()
    for o in out.values():
        o.pred[set_key(deep)] = o.pred[set_key(SETS[1])]
        o.pred_norm[set_key(deep)] = o.pred_norm[set_key(SETS[1])]
    sets, names = [*SETS, deep], [*NAMES, "d/likelihood@3"]
    choices = {"piqa": [0, 1, 1, 3], "boolq": [0, 3]}
    rows = build_rows(out, names, sets, choices, {2: 1, 3: 3}, 10, sleb={2: (1, 2), 3: deep})
    named = {r.name: r for r in rows}
    kinds = [(r.kind, r.name) for r in rows if r.kind in ("best_static", "sleb")]
    assert kinds == [
        ("best_static", "best static @2 (b/margin)"),
        ("best_static", "best static @3 (d/likelihood@3)"),
        ("sleb", "SLEB @2 (perplexity, task-agnostic)"),
        ("sleb", "SLEB @3 (perplexity, task-agnostic)"),
    ]
    assert (
        named["best static @3 (d/likelihood@3)"].blocks_kept == 7
        and named["best static @2 (b/margin)"].blocks_kept == 8
    )
    assert named["SLEB @3 (perplexity, task-agnostic)"].results == named["best static @3 (d/likelihood@3)"].results
    assert named["SLEB @2 (perplexity, task-agnostic)"].results == named["a/likelihood"].results
    # routed: piqa sets 0,1,1,deep(=1's outcomes) → right, right, right, wrong; kept pooled over the 6 items
    assert rows[-1].results["piqa"]["acc"] == pytest.approx(0.75)
    assert rows[-1].blocks_kept == pytest.approx((8 + 8 + 8 + 7 + 8 + 7) / 6)
