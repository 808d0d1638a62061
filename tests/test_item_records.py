"""Per-item records beside every results table: they reproduce each row's accuracy, name the router's choices, and
hold no benchmark text (the tracked choices file no labels either)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import PIQA, REPO, write_piqa

from pudding.core.item_records import (
    CHOICE_COLUMNS,
    ITEM_COLUMNS,
    ItemRecordsError,
    read_item_records,
    read_routed_choices,
)
from pudding.core.outcomes import Outcomes, set_key
from pudding.core.results import Row, build_rows, rows_report, write_results

SETS = [(1, 2), (3, 4), (2, 5)]
NAMES = ["a/likelihood", "b/margin", "c/likelihood"]
CHOICE_SETS = [*SETS, ()]  # a router with the dense model as a choice (a budget router)
TASKS = ["piqa", "boolq"]


def outcomes(seed: int = 0) -> dict[str, Outcomes]:
    """piqa (acc and acc_norm, 2 choices) and boolq (acc only) with random predictions of every set, SLEB's included."""
    rng = np.random.default_rng(seed)
    keys = [set_key(s) for s in [*SETS, (), (1, 5)]]
    found = {}
    for task, n, k in (("piqa", 9, 2), ("boolq", 7, 2)):
        out = Outcomes(task, [f"{task}-{i}" for i in range(n)], rng.integers(0, k, size=n))
        out.pred = {key: rng.integers(0, k, size=n) for key in keys}
        out.pred_norm = {key: rng.integers(0, k, size=n) for key in keys}
        found[task] = out
    return found


CHOICES = {"piqa": [0, 1, 1, 2, 3, 3, 0, 2, 1], "boolq": [2, 2, 0, 3, 1, 2, 2]}


def rows() -> list[Row]:
    """Every kind of row: dense, the candidates, best static, the task-level pick, SLEB, random, random within task,
    oracle and the router (over the candidates plus the dense model)."""
    return build_rows(
        outcomes(),
        NAMES,
        SETS,
        CHOICES,
        1,
        10,
        sleb=(1, 5),
        choice_sets=CHOICE_SETS,
        routed_name="PuDDing (router, budget 0.8)",
        task_pick={"piqa": 2, "boolq": 0},
    )


def written(tmp_path, table_rows: list[Row], metric: str = "acc") -> list:
    report = rows_report(table_rows, metric)
    return write_results(tmp_path / "results.json", table_rows, TASKS, report, metric)


@pytest.mark.parametrize("metric", ["acc", "acc_norm"])
def test_item_records_reproduce_every_rows_accuracy(tmp_path, metric):
    table_rows = rows()
    assert {r.kind for r in table_rows} == {
        "dense",
        "static",
        "best_static",
        "task_pick",
        "sleb",
        "random",
        "random_in_task",
        "oracle",
        "routed",
    }
    paths = written(tmp_path, table_rows, metric)
    assert [p.name for p in paths[-2:]] == ["results.items.parquet", "results.choices.parquet"]
    table, info = read_item_records(paths[-2])
    assert info["metric"] == metric and info["tasks"] == TASKS and info["rows"] == [r.name for r in table_rows]
    records = table.to_pylist()
    for row in table_rows:
        per_task = {}
        for task in TASKS:
            mine = [r for r in records if r["row"] == row.name and r["task"] == task]
            assert {r["kind"] for r in mine} == {row.kind}
            # boolq has no acc_norm: its records are under acc, as the table reads it
            assert {r["metric"] for r in mine} == {metric if task == "piqa" else "acc"}
            weight = sum(r["weight"] for r in mine)
            assert weight == pytest.approx(row.results[task]["n"])  # every item weighs 1 in all
            per_task[task] = sum(r["weight"] * r["correct"] for r in mine) / weight
            assert per_task[task] == pytest.approx(row.metric(task, metric), abs=1e-12), (row.name, task)
            assert per_task[task] == pytest.approx(row.results[task][metric if task == "piqa" else "acc"])
        assert np.mean(list(per_task.values())) == pytest.approx(row.mean(metric), abs=1e-12)
        if metric == "acc":
            assert np.mean(list(per_task.values())) == pytest.approx(row.average, abs=1e-12)


def test_records_are_the_outcomes_of_the_chosen_sets(tmp_path):
    """Each record's prediction is its set's outcome on its item; one record per item except random routing."""
    table_rows, out = rows(), outcomes()
    records = read_item_records(written(tmp_path, table_rows)[-2])[0].to_pylist()
    for r in records:
        task = out[r["task"]]
        i = task.item_ids.index(r["item_id"])
        assert r["pred"] == task.pred[set_key(r["omit"])][i]
        assert r["correct"] == (r["pred"] == task.gold[i]) and r["omit"] == sorted(r["omit"])
    by_row = {row.name: [r for r in records if r["row"] == row.name] for row in table_rows}
    for row in table_rows:
        if row.omit is not None:  # a static row: every item with the row's set
            assert {tuple(r["omit"]) for r in by_row[row.name]} == {tuple(sorted(row.omit))}
    random = by_row["random routing (expected)"]
    assert len(random) == 16 * len(CHOICE_SETS) and {r["weight"] for r in random} == {0.25}
    # random within task: boolq's router shares are 1/7 for set 0, 1/7 for 1, 4/7 for 2, 1/7 for dense
    in_task = [r for r in by_row["random routing within task (router's proportions)"] if r["item_id"] == "boolq-0"]
    assert sorted(r["weight"] for r in in_task) == pytest.approx([1 / 7, 1 / 7, 1 / 7, 4 / 7])
    # the oracle takes a set that answers the item wherever one does
    for r in by_row["oracle routing (upper bound)"]:
        task = out[r["task"]]
        i = task.item_ids.index(r["item_id"])
        any_right = any(task.correct(set_key(s))[i] for s in CHOICE_SETS)
        assert r["correct"] == any_right


def test_routed_choices_match_the_router_and_carry_no_labels(tmp_path):
    table_rows = rows()
    paths = written(tmp_path, table_rows)
    items = read_item_records(paths[-2])[0].to_pylist()
    choices, info = read_routed_choices(paths[-1])
    assert tuple(choices.column_names) == CHOICE_COLUMNS == ("row", "task", "item_id", "omit")  # no pred, no correct
    assert info["rows"] == ["PuDDing (router, budget 0.8)"]
    tracked = choices.to_pylist()
    for task, picks in CHOICES.items():
        wanted = [sorted(CHOICE_SETS[c]) for c in picks]
        assert [r["omit"] for r in tracked if r["task"] == task] == wanted
        assert [r["item_id"] for r in tracked if r["task"] == task] == outcomes()[task].item_ids
        routed = [r["omit"] for r in items if r["kind"] == "routed" and r["task"] == task]
        assert routed == wanted
    assert [] in [r["omit"] for r in tracked]  # the dense model, chosen on piqa-4


def test_items_file_has_only_ids_and_numbers(tmp_path):
    table, _ = read_item_records(written(tmp_path, rows())[-2])
    assert tuple(table.column_names) == ITEM_COLUMNS
    text = [name for name in table.column_names if pa.types.is_string(table.schema.field(name).type)]
    assert text == ["row", "kind", "task", "item_id", "metric"]
    assert set(table.column("metric").to_pylist()) <= {"acc", "acc_norm"}


def test_a_row_without_records_is_refused(tmp_path):
    row = Row("hand-made", "static")
    row.add("piqa", {"acc": 0.5}, {"acc": np.array([1.0, 0.0])})
    with pytest.raises(ItemRecordsError, match="row 'hand-made' has no per-item records for task 'piqa'"):
        write_results(tmp_path / "r.json", [row], ["piqa"], rows_report([row]))


# ------------------------------------------------------------------------------------------------ pudding eval


@pytest.fixture(scope="module")
def piqa_dir(tmp_path_factory):
    return write_piqa(tmp_path_factory.mktemp("data"))


def test_pudding_eval_writes_records_that_reproduce_its_table(tmp_path, tiny_llm_dir, piqa_dir, capsys):
    from pudding.cli import main

    out = tmp_path / "eval.json"
    args = ["eval", "--base", str(tiny_llm_dir), "--data_dir", str(piqa_dir), "--router_fraction", "0.5"]
    args += ["--tasks", "piqa", "--omit", "1,3", "--progress", "false", "--average_metric", "acc_norm"]
    main([*args, "--output", str(out)])
    report = json.loads(out.read_text())
    table, info = read_item_records(tmp_path / "eval.items.parquet")
    assert not (tmp_path / "eval.choices.parquet").exists()  # no routed row, no choices file
    records = table.to_pylist()
    assert {r["omit"] == [1, 3] and r["metric"] == "acc_norm" for r in records} == {True}
    assert len(records) == report["results"]["omit"]["piqa"]["n"]
    assert np.mean([r["correct"] for r in records]) == pytest.approx(report["average"]["omit"])
    values = {v for column in ("row", "kind", "task", "item_id") for v in table.column(column).to_pylist()}
    benchmark_text = {t for goal, a, b, _ in PIQA for t in (goal, a, b)}
    assert not any(t in v for v in values for t in benchmark_text)
    # the records file is an output like the others: not replaced without --overwrite, found before any work
    (tmp_path / "again.items.parquet").write_text("")
    with pytest.raises(SystemExit) as exc:
        main([*args, "--output", str(tmp_path / "again.json")])
    assert exc.value.code == 2 and "again.items.parquet exists" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the tracked tables
RESULTS = REPO / "benchmarks" / "results"
TRACKED_CHOICES = sorted(RESULTS.glob("*/*.choices.parquet"))


def test_the_tracked_tables_have_their_choices_files():
    """Every routed results table under benchmarks/results/eval_full and eval_200 travels with its choices file."""
    routed = sorted(p for folder in ("eval_full", "eval_200") for p in (RESULTS / folder).glob("routed_*.json"))
    assert len(routed) >= 5
    assert [p.with_suffix("").with_suffix(".choices.parquet") for p in routed] == [
        p for p in TRACKED_CHOICES if p.parent.name in ("eval_full", "eval_200")
    ]


@pytest.fixture(scope="module")
def tracked_outcomes() -> dict[tuple[str, str, str], tuple[int, int]]:
    """(task, item id, set key) -> (pred, pred_norm) from the tracked outcomes progress file (float32 outcomes)."""
    from pudding.core.outcomes_progress import read_outcomes_pack

    table = read_outcomes_pack(RESULTS / "eval_progress.parquet")[0]
    cols = [table.column(n).to_pylist() for n in ("task", "item_id", "set_key", "pred", "pred_norm")]
    return {(t, i, s): (p, n) for t, i, s, p, n in zip(*cols, strict=True)}


@pytest.mark.parametrize("choices_path", TRACKED_CHOICES, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
def test_a_tracked_choices_file_rebuilds_its_tables_routed_rows(choices_path, tracked_outcomes, shared_data):
    """The router's tracked choice per item, the tracked outcomes and the benchmark's gold answers give the routed
    rows' per-task acc and acc_norm of the tracked table exactly: the published numbers can be checked by anyone."""
    from pudding.core.tasks.partition import load_split
    from pudding.core.tasks.registry import get_task

    table = json.loads(choices_path.with_name(choices_path.name.replace(".choices.parquet", ".json")).read_text())
    choices = read_routed_choices(choices_path)[0].to_pylist()
    assert choices, choices_path
    gold: dict[tuple[str, str], int] = {}
    for task in {c["task"] for c in choices}:
        items = load_split(task, get_task(task).eval_split, str(shared_data))
        gold.update({(task, item.item_id): item.gold for item in items})
    hits: dict[tuple[str, str], list[tuple[bool, bool]]] = {}
    for c in choices:
        pred, pred_norm = tracked_outcomes[(c["task"], c["item_id"], set_key(c["omit"]))]
        answer = gold[(c["task"], c["item_id"])]
        hits.setdefault((c["row"], c["task"]), []).append((pred == answer, pred_norm == answer))
    for (row, task), found in hits.items():
        published = table["results"][row][task]
        assert len(found) == published["n"], (row, task)
        assert np.mean([a for a, _ in found]) == pytest.approx(published["acc"], abs=1e-12), (row, task)
        if "acc_norm" in published:
            assert np.mean([b for _, b in found]) == pytest.approx(published["acc_norm"], abs=1e-12), (row, task)
    assert {row for row, _ in hits} == {r for r in table["results"] if table["kinds"][r] == "routed"}
