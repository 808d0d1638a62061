"""The results table: every row is the right lookup in hand-made outcomes."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from pudding.core.outcomes import Outcomes, set_key
from pudding.core.results import (
    Row,
    build_rows,
    csv_table,
    markdown_table,
    paired_intervals,
    routing_histogram,
    stderr,
)

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
    assert [r["kind"] for r in parsed][-4:] == ["random", "random_in_task", "oracle", "routed"]
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


def test_random_within_task_and_task_level_pick_rows():
    """Random routing in the router's own proportions per task, and each task's own static set."""
    choices = {"piqa": [0, 1, 1, 2], "boolq": [0, 2]}
    rows = build_rows(outcomes(), NAMES, SETS, choices, 1, 10, task_pick={"piqa": 1, "boolq": 0})
    named = {r.kind: r for r in rows}
    # piqa shares 1/4, 2/4, 1/4 of sets 0, 1, 2 (right on 1, 2, 0 items of 4); boolq shares 1/2, 0, 1/2 (1, 0, 1 of 2)
    assert named["random_in_task"].results["piqa"]["acc"] == pytest.approx((0.25 * 1 + 0.5 * 2 + 0.25 * 0) / 4)
    assert named["random_in_task"].results["boolq"]["acc"] == pytest.approx((0.5 * 1 + 0.5 * 1) / 2)
    assert named["random_in_task"].blocks_kept == pytest.approx(8)
    pick = named["task_pick"]
    assert pick.name == "task-level pick (each task's best candidate on router data)"
    assert pick.results["piqa"]["acc"] == pytest.approx(0.5) and pick.results["boolq"]["acc"] == pytest.approx(0.5)
    assert [r.kind for r in rows].index("task_pick") == [r.kind for r in rows].index("best_static") + 1


def test_standard_errors_are_lm_evals():
    """Sample standard deviation (n - 1) over the square root of n, per task and metric."""
    rows = build_rows(outcomes(), NAMES, SETS, {"piqa": [0, 1, 1, 2], "boolq": [0, 2]}, 1, 10)
    dense = rows[0].results["piqa"]  # right on 2 of 4 items
    assert dense["acc_stderr"] == pytest.approx(np.std([1, 1, 0, 0], ddof=1) / 2)
    assert dense["acc_norm_stderr"] == pytest.approx(np.std([0, 0, 1, 1], ddof=1) / 2)
    assert stderr(np.array([1.0])) is None and "acc_norm_stderr" not in rows[0].results["boolq"]


def _row(name: str, values: list[float]) -> Row:
    row = Row(name, "static")
    row.add("piqa", {"acc": float(np.mean(values))}, {"acc": np.asarray(values)})
    return row


def test_paired_bootstrap_matches_a_closed_form_and_is_seeded():
    """Two items, differences 1 and 0: a resample's mean difference is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4, so the
    95% percentile interval is [0, 1] (a tie); a constant difference has no spread at all."""
    reference, other = _row("ref", [1, 1]), _row("other", [0, 1])
    (found,) = paired_intervals(reference, [reference, other], ["piqa"]).values()
    assert found == {"diff": 0.5, "low": 0.0, "high": 1.0, "tie": True}
    constant = paired_intervals(_row("ref", [1, 1, 1]), [_row("low", [0, 0, 0])], ["piqa"])["low"]
    assert constant == {"diff": 1.0, "low": 1.0, "high": 1.0, "tie": False}
    values = np.random.default_rng(1).integers(0, 2, size=(2, 300)).astype(float)
    a, b = _row("a", list(values[0])), _row("b", list(values[1]))
    first = paired_intervals(a, [b], ["piqa"], resamples=2000)["b"]
    assert first == paired_intervals(a, [b], ["piqa"], resamples=2000)["b"]  # the same seed, the same interval
    assert first != paired_intervals(a, [b], ["piqa"], resamples=2000, seed=1)["b"]
    # the spread of the resampled mean difference is the closed form's: sd of the differences / sqrt(n)
    half_width = (first["high"] - first["low"]) / 2
    assert half_width == pytest.approx(1.96 * np.std(values[0] - values[1]) / np.sqrt(300), rel=0.1)


def test_tables_carry_standard_errors_and_intervals():
    choices = {"piqa": [0, 1, 1, 2], "boolq": [0, 2]}
    rows = build_rows(outcomes(), NAMES, SETS, choices, 1, 10)
    intervals = paired_intervals(rows[-1], rows, ["piqa", "boolq"], resamples=500)
    assert set(intervals) == {r.name for r in rows[:-1]}
    md = markdown_table(rows, ["piqa", "boolq"], intervals=intervals)
    assert "PuDDing (router) minus row [95% CI]" in md.splitlines()[0] and " ±" in md
    dense = intervals["dense"]
    assert dense["diff"] == pytest.approx(rows[-1].average - rows[0].average)
    parsed = list(csv.DictReader(io.StringIO(csv_table(rows, ["piqa", "boolq"], intervals=intervals))))
    assert float(parsed[0]["diff_vs_reference"]) == pytest.approx(dense["diff"]) and parsed[-1]["diff_low"] == ""
    assert float(parsed[0]["piqa/acc_stderr"]) == pytest.approx(rows[0].results["piqa"]["acc_stderr"])
