"""The accuracy–compute curve (issue #15, part 4): ``pudding curve --bundle DIR``.

A tiny random Llama (6 blocks) routed by a tiny router over candidates of three depths (1, 2 and 3 blocks omitted)
plus the dense model; real evaluation items of two tasks (a few per task). Every number is checked against an
independent route to it: the dense row, separate ``pudding compare --bundle --budget B`` runs, the router data.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_head, module_with_data, tiny_dataset, tiny_encoder

from pudding.router.bundle import export_bundle

BLOCKS = 6
MULTI = [[1], [3], [1, 4], [2, 3], [1, 2, 4], [2, 3, 4]]
MULTI_NAMES = [
    "piqa/likelihood@1",
    "boolq/margin@1",
    "piqa/likelihood@2",
    "boolq/margin@2",
    "piqa/likelihood@3",
    "boolq/margin@3",
]
TASKS = ["piqa", "arc_easy"]
LIMIT = 12
SERIES = {"dense", "sleb", "best_static", "fixed_router", "budget_router", "oracle"}


def multi_module(setup: dict):
    """A RouterModule on the multi-depth dataset with the dense model as a choice, set up as ``trainer.fit`` would,
    its head drawn so that predictions differ between prompts and choices."""
    module, data = module_with_data(setup, data={"val_fraction": 0.25, "dense_choice": True})
    draw_head(module, seed=1, bias=[0.3, 0.2, 0.0, 0.1, -0.2, -0.1, 0.4])
    return module, data


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llm_dir) -> dict:
    root = tmp_path_factory.mktemp("sweep")
    setup = {
        "root": root,
        "llm": tiny_llm_dir,
        "encoder": tiny_encoder(root / "bert"),
        "dataset": tiny_dataset(root / "data", n=240, sets=MULTI, names=MULTI_NAMES),
    }
    module, data = multi_module(setup)
    setup["bundle"] = export_bundle(module, root / "bundle", datamodule=data)
    setup["train_scores"] = np.stack([e["scores"][: len(MULTI)] for e in data.train_set])
    return setup


def eval_args(setup: dict, shared_data: Path, output: Path, *extra, command: str = "curve") -> list[str]:
    args = [command, "--bundle", setup["bundle"], "--base", setup["llm"], "--data_dir", shared_data]
    args += ["--tasks", ",".join(TASKS), "--limit", LIMIT, "--dtype", "float32", "--device", "cpu"]
    args += ["--outcomes_dir", setup["root"] / "outcomes", "--sleb_samples", 2]
    return [str(a) for a in [*args, "--output", output, *extra]]


def error_line(capsys, argv: list) -> str:
    """Run ``pudding argv`` (a bad input): exit code 2 and one line on stderr, which is returned."""
    from pudding.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(err) == 1, err
    return err[0]


def bench_file(path: Path, base: str, tokens: int = 128, omit=(1, 2, 4)) -> Path:
    """A hand-made ``pudding bench`` report: dense pre-fill 100 ms, 70 ms with 3 blocks skipped, router 5 ms."""
    row = {
        "tokens": tokens,
        "omit": list(omit),
        "dense_prefill": {"median_ms": 100.0},
        "pruned_prefill": {"median_ms": 70.0 if omit else 100.0},
        "router": {"median_ms": 5.0},
        "routed_prefill": {"median_ms": 75.0},
        "ratio_routed_vs_dense": 0.75,
    }
    path.write_text(json.dumps({"base_model": base, "lengths": [{**row, "tokens": 64}, row]}))
    return path


@pytest.fixture(scope="module")
def curve(setup, shared_data) -> dict:
    from pudding.cli import main

    out = setup["root"] / "curve" / "curve.json"
    bench = bench_file(setup["root"] / "bench.json", str(setup["llm"]))
    main(eval_args(setup, shared_data, out, "--bench", bench))
    return json.loads(out.read_text())


def points(curve: dict, series: str) -> list[dict]:
    return curve["series"][series]


def test_the_curve_has_every_series_at_every_depth_and_every_file(curve, setup):
    assert set(curve["series"]) == SERIES and curve["depths"] == [1, 2, 3] and curve["num_blocks"] == BLOCKS
    assert len(points(curve, "dense")) == 1
    for series in ("sleb", "best_static", "fixed_router", "oracle"):
        assert [p["depth"] for p in points(curve, series)] == [1, 2, 3], series
    for series in ("sleb", "best_static", "oracle"):
        assert [p["blocks_kept"] for p in points(curve, series)] == [5.0, 4.0, 3.0], series
    # the default grid 0.70 … 1.00 plus the fractions where the mean crosses a depth: 3/6, 4/6, 5/6 (and 6/6)
    want = sorted({*(round(0.7 + 0.025 * i, 3) for i in range(13)), 0.5, 4 / 6, 5 / 6}, reverse=True)
    assert curve["budgets"] == pytest.approx(want)
    assert [p["budget"] for p in points(curve, "budget_router")] == pytest.approx(want)
    folder = setup["root"] / "curve"
    for suffix in (".json", ".md", ".csv", ".png"):
        assert (folder / f"curve{suffix}").stat().st_size > 0, suffix
    assert (folder / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(io.StringIO((folder / "curve.csv").read_text())))
    total = sum(len(v) for v in curve["series"].values())
    assert len(rows) == total and {r["series"] for r in rows} == SERIES
    dense = next(r for r in rows if r["series"] == "dense")
    assert float(dense["average_acc"]) == pytest.approx(points(curve, "dense")[0]["average"], abs=1e-6)
    assert (folder / "curve.md").read_text().count("\n") == total + 2
    assert curve["config"]["sweep"] is True and curve["config"]["budgets"] is None


def test_budget_one_is_the_dense_model_and_kept_falls_with_the_budget(curve):
    (dense,) = points(curve, "dense")
    routed = points(curve, "budget_router")
    top = routed[0]
    assert top["budget"] == 1.0 and top["lambda"] == "-inf"
    assert top["results"] == dense["results"] and top["blocks_kept"] == dense["blocks_kept"] == BLOCKS
    kept = [p["blocks_kept"] for p in routed]  # budgets largest first
    assert all(a >= b for a, b in zip(kept, kept[1:], strict=False)), kept
    assert kept[-1] == 3.0 and len(set(kept)) > 2  # the curve moves, down to every item at 3 omitted
    for p in routed:
        assert sum(p["depths"].values()) == LIMIT * len(TASKS)
        assert p["blocks_kept"] == pytest.approx(sum(int(d) * n for d, n in p["depths"].items()) / (LIMIT * 2))
        if 0.5 < p["budget"] < 1:  # calibrated within one block on the calibration rows
            assert abs(p["calibration_kept"] - p["budget"] * BLOCKS) <= 1.0


def test_best_static_at_each_depth_is_the_argmax_on_the_router_training_rows(curve, setup):
    scores = setup["train_scores"]
    assert curve["best_static_picked_on"] == "router training rows"
    for p in points(curve, "best_static"):
        columns = [i for i, s in enumerate(MULTI) if len(s) == p["depth"]]
        best = columns[int(np.argmax(scores[:, columns].mean(axis=0)))]
        assert p["candidate"] == MULTI_NAMES[best] and p["omit"] == MULTI[best]
    info = json.loads((setup["bundle"] / "router.json").read_text())
    by_depth = {int(d): i for d, i in info["best_static_by_depth"].items()}
    assert [MULTI_NAMES[by_depth[p["depth"]]] for p in points(curve, "best_static")] == [
        p["candidate"] for p in points(curve, "best_static")
    ]


def test_the_deepest_fixed_router_is_the_budget_router_below_every_depth_and_the_oracle_bounds_its_depth(curve):
    fixed = {p["depth"]: p for p in points(curve, "fixed_router")}
    lowest = points(curve, "budget_router")[-1]
    assert lowest["budget"] == 0.5 and lowest["lambda"] == "inf"
    assert fixed[3]["results"] == lowest["results"] and fixed[3]["blocks_kept"] == 3.0
    for series in ("best_static", "fixed_router"):  # routings among one depth's candidates (SLEB's set need not be one)
        for p in points(curve, series):
            oracle = next(o for o in points(curve, "oracle") if o["depth"] == p["depth"])
            for task in TASKS:
                assert oracle["results"][task]["acc"] >= p["results"][task]["acc"], (series, p["depth"], task)


@pytest.mark.parametrize("budget", [1.0, 0.9, 0.8, 0.75, 0.7])
def test_each_budget_point_equals_a_separate_eval_run_at_that_budget(curve, setup, shared_data, budget):
    from pudding.cli import main

    out = setup["root"] / f"single-{budget}" / "results.json"
    main(eval_args(setup, shared_data, out, "--budget", str(budget), "--sleb", "false", command="compare"))
    report = json.loads(out.read_text())
    routed = next(name for name, kind in report["kinds"].items() if kind == "routed")
    point = next(p for p in points(curve, "budget_router") if p["budget"] == pytest.approx(budget))
    assert report["results"][routed] == point["results"]
    assert report["blocks_kept"][routed] == point["blocks_kept"]
    assert report["config"]["budget_lambda"] == point["lambda"]
    # the same outcomes: the eval's static rows are the curve's static points
    assert report["results"]["dense"] == points(curve, "dense")[0]["results"]


def test_the_table_shows_best_static_and_sleb_at_every_depth(setup, shared_data, curve):
    from pudding.cli import main

    out = setup["root"] / "table" / "results.json"
    main(eval_args(setup, shared_data, out, "--budget", "argmax", command="compare"))
    report = json.loads(out.read_text())
    best = [name for name, kind in report["kinds"].items() if kind == "best_static"]
    sleb = [name for name, kind in report["kinds"].items() if kind == "sleb"]
    assert best == [p["label"] for p in points(curve, "best_static")]
    assert best[0].startswith("best static @1 (") and sleb == [
        f"SLEB @{d} (perplexity, task-agnostic)" for d in (1, 2, 3)
    ]
    for name, p in zip(sleb, points(curve, "sleb"), strict=True):
        assert report["results"][name] == p["results"] and report["omission_sets"][name] == p["omit"]
        assert len(p["omit"]) == p["depth"] and 0 not in p["omit"] and BLOCKS - 1 not in p["omit"]
    shallow, deeper = points(curve, "sleb")[0]["omit"], points(curve, "sleb")[-1]["omit"]
    assert set(shallow) <= set(deeper)  # one search, its prefixes
    assert report["config"]["best_static_picked_on"] == "router training rows"


def test_bench_gives_each_point_its_prefill_ratio(curve):
    bench = curve["bench"]
    assert bench["fit"] == "per block" and bench["ms_per_block"] == pytest.approx(10.0)
    assert bench["fixed_ms"] == pytest.approx(40.0) and bench["tokens"] == 128
    for series, items in curve["series"].items():
        for p in items:
            # the router's 5 ms count for the router series, except where the budget leaves only the dense model
            runs = series == "fixed_router" or (series == "budget_router" and p["lambda"] != "-inf")
            assert p["router_runs"] is (runs if series in ("fixed_router", "budget_router") else None), p["label"]
            router = 5.0 if runs else 0.0
            assert p["prefill_ratio"] == pytest.approx((40.0 + 10.0 * p["blocks_kept"] + router) / 100.0), series
    assert points(curve, "budget_router")[0]["prefill_ratio"] == pytest.approx(1.0)  # budget 1.0: the dense model
    assert points(curve, "dense")[0]["prefill_ratio"] == pytest.approx(1.0)


def test_a_bench_without_skipped_blocks_falls_back_to_the_share_of_blocks(tmp_path):
    from pudding.routed.sweep import prefill_model, read_bench

    model = prefill_model(read_bench(bench_file(tmp_path / "b.json", "m", omit=()), 128), BLOCKS, "m")
    assert model.fit.startswith("proportional") and model.ratio(3) == pytest.approx(0.5)
    assert model.ratio(3, routed=True) == pytest.approx(0.55)


def test_a_per_block_time_beyond_the_dense_time_falls_back_and_says_why(tmp_path):
    """Three blocks' noisy saving scaled to every block can exceed the dense time: no negative fixed time then."""
    from pudding.routed.sweep import prefill_model, read_bench

    path = bench_file(tmp_path / "b.json", "m")
    report = json.loads(path.read_text())
    report["lengths"][1]["pruned_prefill"]["median_ms"] = 100.0 - 3 * 101.0 / BLOCKS
    path.write_text(json.dumps(report))
    model = prefill_model(read_bench(path, 128), BLOCKS, "m")
    assert model.fit.startswith("proportional") and "exceeds the dense 100.0 ms" in model.fit
    assert model.fixed_ms == 0.0 and model.ratio(BLOCKS) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("[]", "no budget given"), ("", "no budget given"), ("1.5", "'1.5' is not a number in (0, 1]"),
     ("0", "'0' is not a number"), ("abc", "'abc' is not a number"), ("[0.8, x]", "'x' is not a number"),
     ("nan", "'nan' is not a number"), ("-0.5", "'-0.5' is not a number")],
)  # fmt: skip
def test_bad_budgets_are_one_line_naming_the_option(setup, shared_data, capsys, value, shown, tmp_path):
    line = error_line(capsys, eval_args(setup, shared_data, tmp_path / "c.json", "--budgets", value))
    assert line.startswith("pudding curve: error: option budgets: ") and shown in line, line


@pytest.mark.parametrize(
    ("extra", "shown", "command"),
    [
        (["--budgets", "0.8"], "pudding compare: error: unrecognized arguments: --budgets 0.8", "compare"),
        (["--budget", "0.8"], "pudding curve: error: unrecognized arguments: --budget 0.8", "curve"),
        (["--bench", "/nonexistent/bench.json"], "option bench: /nonexistent/bench.json is not", "curve"),
        (["--bench", "BENCH64"], "has no 128-token row (it has 64)", "curve"),
    ],
)
def test_bad_sweep_options_are_one_line(setup, shared_data, capsys, extra, shown, command, tmp_path):
    """Each command has only its own options: the curve's are unknown to the table, and the reverse."""
    if "BENCH64" in extra:
        path = tmp_path / "b64.json"
        path.write_text(json.dumps({"base_model": "x", "lengths": [{"tokens": 64}]}))
        extra = [str(path) if e == "BENCH64" else e for e in extra]
    line = error_line(capsys, eval_args(setup, shared_data, tmp_path / "c.json", *extra, command=command))
    assert shown in line, line


def sweep_of(folder: Path) -> list:
    """``pudding curve`` of the bundle ``folder`` on a base model that does not exist (none may load)."""
    return ["curve", "--bundle", folder, "--base", "/nonexistent/model", "--tasks", "piqa"]


def test_a_sweep_of_a_bundle_with_one_depth_is_refused_before_any_model_loads(setup, tmp_path, capsys):
    flat = {**setup, "dataset": tiny_dataset(tmp_path / "flat", n=48)}
    module, data = module_with_data(flat)
    line = error_line(capsys, sweep_of(export_bundle(module, tmp_path / "flat_bundle", datamodule=data)))
    assert "option bundle: every choice of router bundle" in line and "keeps 4 of 6 blocks" in line


def test_a_sweep_of_a_bundle_without_calibration_is_refused_before_any_model_loads(setup, tmp_path, capsys):
    module, _ = multi_module(setup)
    folder = export_bundle(module, tmp_path / "uncalibrated")  # no router data given: no calibration
    line = error_line(capsys, sweep_of(folder))
    assert "option bundle: router bundle" in line and "has no budget calibration" in line
