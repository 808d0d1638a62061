"""A compute budget per prompt (issue #15): the dense model as a choice, λ calibration, budget routing everywhere."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NAMES, SETS, draw_head, module_with_data, tiny_dataset, tiny_encoder
from test_routed_model import assert_each_scored_under_its_choice

from pudding.core.errors import OptionError
from pudding.core.scoring import Scorer
from pudding.router.budget import Calibration, choose, mean_kept, parse_budget, solve_lambda
from pudding.router.bundle import export_bundle, load_bundle
from pudding.router.data import RouterDataModule, transform_targets

PROMPTS = [
    "Question: Which is heavier, a stone or a leaf?\nAnswer:",
    "The river ran past the old mill and",
    "Question: a dog?\nAnswer:",
    "She counted the coins twice before",
    "Question: the quick red river and the slow blue stone?\nAnswer:",
    "sun rain tree",
]
BLOCKS = 6  # the tiny dataset's num_blocks; SETS omit 2 of them each, so with dense the choices keep 4 or 6


def dense_module(setup: dict):
    """A RouterModule set up on the tiny dataset with the dense model as a choice, as ``trainer.fit`` would, its
    head drawn so that predictions differ between prompts and choices, dense not always ahead."""
    module, data = module_with_data(setup, data={"val_fraction": 0.25, "dense_choice": True})
    draw_head(module, seed=0, bias=[0.0, 0.1, -0.1, 0.05, 0.3])
    return module, data


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("budget")
    return {
        "root": root,
        "encoder": tiny_encoder(root / "bert"),
        "dataset": tiny_dataset(root / "data", n=240),
    }


@pytest.fixture(scope="module")
def bundle(setup) -> Path:
    module, data = dense_module(setup)
    return export_bundle(module, setup["root"] / "bundle", datamodule=data, budget=0.8)


def routed_model(bundle: Path, llm: Path, budget=None):
    from pudding.routed.model import PuddingModel

    return PuddingModel.from_pretrained(
        bundle, base=str(llm), device="cpu", dtype="float32", cache_dir=bundle.parent / "c", budget=budget
    )


def val_texts(setup: dict, data: RouterDataModule) -> list[str]:
    """The router texts of the datamodule's validation rows, in its order."""
    from pudding.routerdata.dataset import load_router_dataset

    table = load_router_dataset(str(setup["dataset"]))[0].to_dict()
    text = {(t, i): x for t, i, x in zip(table["task"], table["item_id"], table["router_text"], strict=True)}
    return [text[(e["task"], e["item_id"])] for e in data.val_set]


# ------------------------------------------------------------------------------------------- the rule and λ


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.01, 2, "abc", "", True, float("nan"), [0.5]])
def test_a_bad_budget_is_a_one_line_error_naming_option_budget(bad):
    with pytest.raises(OptionError, match=r"^option budget: .* is not a number in \(0, 1\]") as exc:
        parse_budget(bad)
    assert "\n" not in str(exc.value)


def test_good_budgets_parse():
    assert parse_budget(None) is None and parse_budget("argmax") == "argmax" and parse_budget(" ARGMAX ") == "argmax"
    assert parse_budget(1) == 1.0 and parse_budget("0.85") == 0.85 and parse_budget(0.5) == 0.5


def test_lambda_zero_is_the_argmax_and_the_infinities_are_the_extreme_depths():
    preds = torch.tensor([[0.1, 0.9, 0.3, 0.2], [0.8, 0.1, 0.05, 0.7], [0.0, 0.0, 0.5, 0.5]])
    omitted = [3, 2, 1, 0]  # the last choice is the dense model
    assert choose(preds, omitted, 0.0).tolist() == preds.argmax(-1).tolist() == [1, 0, 2]
    assert choose(preds, omitted, -math.inf).tolist() == [3, 3, 3]  # fewest omitted: dense
    assert choose(preds, omitted, math.inf).tolist() == [0, 0, 0]
    # λ = 0.3: 0.1+0.9, 0.9+0.6, 0.3+0.3, 0.2 → choice 1; row 2: 0.8+0.9 → 0; row 3: 0.9, 0.6, 0.8, 0.5 → 0
    assert choose(preds, omitted, 0.3).tolist() == [1, 0, 0]
    # λ < 0 charges for omitted blocks: row 1 at -0.3 → 0.1-0.9, 0.9-0.6, 0.3-0.3, 0.2 → choice 1 (0.3)
    assert choose(preds, omitted, -0.3).tolist() == [1, 3, 3]
    # candidates of several depths, two of the same depth: +inf takes the better of the deepest
    assert choose(torch.tensor([[0.0, 0.4, 0.6, 1.0]]), [2, 2, 1, 0], math.inf).tolist() == [1]


def brute_force_best(preds: torch.Tensor, omitted: list[int], target: float) -> float:
    """The mean blocks kept closest to ``target`` over every λ (midpoints between all switching points)."""
    cuts = {0.0}
    for row in preds.double():
        for a in range(len(omitted)):
            for b in range(len(omitted)):
                if omitted[a] != omitted[b]:
                    cuts.add(float((row[a] - row[b]) / (omitted[b] - omitted[a])))
    cuts = sorted(cuts)
    probes = [cuts[0] - 1, *((x + y) / 2 for x, y in zip(cuts, cuts[1:], strict=False)), cuts[-1] + 1]
    values = [mean_kept(preds, omitted, BLOCKS, lam) for lam in probes]
    return min(values, key=lambda v: (abs(v - target), v > target))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solve_lambda_finds_the_closest_mean_kept_of_any_lambda(seed):
    """Choices of several depths (1, 2 and 3 of 6 blocks omitted, and dense): bisection on the monotone mean kept
    reaches the best any λ can do, within one block of every reachable budget."""
    rng = np.random.default_rng(seed)
    omitted = [3, 1, 2, 3, 0]
    preds = torch.tensor(rng.normal(0, 1, (40, 5)) - 0.2 * np.array(omitted), dtype=torch.float32)
    previous = -1.0
    for budget in (0.5, 0.55, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0):
        lam, kept = solve_lambda(preds, omitted, BLOCKS, budget)
        assert kept == pytest.approx(mean_kept(preds, omitted, BLOCKS, lam))
        assert kept >= previous  # a larger budget never keeps fewer blocks
        previous = kept
        if budget * BLOCKS <= 3:
            assert lam == math.inf and kept == 3
        elif budget == 1.0:
            assert lam == -math.inf and kept == BLOCKS
        else:
            assert kept == pytest.approx(brute_force_best(preds, omitted, budget * BLOCKS))
            assert abs(kept - budget * BLOCKS) <= 1.0


# ------------------------------------------------------------------------------------------- data and router


@pytest.mark.parametrize("transform", ["raw", "minmax", "zscore"])
def test_dense_choice_adds_exactly_one_target_column_equal_to_dense_score(setup, transform):
    plain = RouterDataModule(datasets=str(setup["dataset"]), router=str(setup["encoder"]), target_transform=transform)
    dense = RouterDataModule(
        datasets=str(setup["dataset"]), router=str(setup["encoder"]), target_transform=transform, dense_choice=True
    )
    plain.setup("fit")
    dense.setup("fit")
    assert dense.num_candidates == plain.num_candidates == 4 and len(dense.choices) == 5 and len(plain.choices) == 4
    assert list(dense.choices.names) == [*NAMES, "dense"]
    assert [list(s) for s in dense.choices.omission_sets] == [*SETS, []]
    assert "dense_choice" not in plain.meta and dense.meta["dense_choice"] is True
    for mine, theirs in ((dense.train_set, plain.train_set), (dense.val_set, plain.val_set)):
        assert [(e["task"], e["item_id"]) for e in mine] == [(e["task"], e["item_id"]) for e in theirs]
        scores = np.stack([e["scores"] for e in mine])
        base = np.stack([e["scores"] for e in theirs])
        dense_score = np.array([e["dense_score"] for e in mine], dtype=np.float32)
        assert scores.shape == (len(mine), 5)
        np.testing.assert_array_equal(scores[:, :4], base)
        np.testing.assert_array_equal(scores[:, 4], dense_score)
        targets = np.stack([e["targets"] for e in mine])
        want = transform_targets(np.column_stack([base.astype(np.float64), dense_score]), transform)
        np.testing.assert_allclose(targets, want, rtol=1e-5, atol=1e-6)
        if transform == "raw":
            np.testing.assert_array_equal(targets[:, 4], dense_score)
        else:  # the transform sees all five columns of a row, so the candidates' targets change too
            assert not np.allclose(targets[:, :4], np.stack([e["targets"] for e in theirs]))


def test_dense_router_predicts_k_plus_one_and_its_metrics_count_dense_as_a_choice(setup):
    module, data = dense_module(setup)
    assert module.router.num_candidates == 5 and module.router.candidate_names == [*NAMES, "dense"]
    assert (
        module.router.omission_sets == [*SETS, []]
        and module.router.blocks_kept == [4, 4, 4, 4, 6]
        and module.router.dense_choice
    )
    train = np.stack([e["scores"] for e in data.train_set])
    assert module.router.best_static == int(np.argmax(train[:, :4].mean(0)))  # the best static *candidate*
    val = np.stack([e["scores"] for e in data.val_set]).astype(np.float64)
    assert module.references["ref/val_regret_dense"] == pytest.approx(float((val.max(1) - val[:, 4]).mean()))
    batch = next(iter(data.val_dataloader()))
    preds = module(batch["input_ids"], batch["attention_mask"])
    for metric in module.metrics["m_val"].values():
        metric.update(preds.detach(), batch["targets"], batch["scores"])
    picks = preds.argmax(-1)
    assert module.metrics["m_val"]["choice"].compute().tolist() == torch.bincount(picks, minlength=5).tolist()
    best = batch["scores"].max(-1).values
    chosen = batch["scores"].gather(-1, picks[:, None])[:, 0]
    assert float(module.metrics["m_val"]["regret"].compute()) == pytest.approx(float((best - chosen).mean()), abs=1e-6)


def test_fit_with_dense_choice_logs_depths_and_writes_a_calibrated_bundle(setup, tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pudding.cli.train import main

    monkeypatch.chdir(tmp_path)
    args = ["--data.datasets", str(setup["dataset"]), "--model.encoder", str(setup["encoder"])]
    args += ["--data.batch_size", "16", "--model.max_length", "64", "--data.dense_choice", "true"]
    args += ["--data.val_fraction", "0.25"]
    main(["fit", *args, "--trainer.max_epochs", "1", "--budget", "0.8", "--bundle", "out"])
    info = json.loads((tmp_path / "out" / "router.json").read_text())
    assert info["dense_choice"] is True and info["num_candidates"] == 5 and info["budget"] == 0.8
    assert info["omission_sets"][-1] == [] and info["blocks_kept"] == [4, 4, 4, 4, 6]
    assert info["calibration"]["split"] == "val" and info["calibration"]["rows"] == 60
    table = {row["budget"]: row for row in info["calibration"]["table"]}
    assert table[1.0]["lambda"] == "-inf" and table[1.0]["depths"] == {"6": 60}
    assert all(abs(row["mean_kept"] - row["budget"] * BLOCKS) <= 1 for row in table.values() if row["budget"] > 4 / 6)
    router, _ = load_bundle(tmp_path / "out")
    assert router.budget == 0.8 and router.calibration.rows == 60
    run = next((tmp_path / "checkpoints" / "router" / "tensorboard").glob("version_*"))
    tags = set(EventAccumulator(str(run)).Reload().Tags()["scalars"])
    assert {"val/blocks_kept", "val_kept/04", "val_kept/06", "val_by_task/boolq/blocks_kept"} <= tags
    # export from the checkpoint calibrates again from the run's config: the same predictions
    ckpt = next((run / "checkpoints").glob("best*.ckpt"))
    main(["export", str(ckpt), "--output", str(tmp_path / "again"), "--budget", "0.9"])
    again, info2 = load_bundle(tmp_path / "again")
    assert info2["budget"] == 0.9 and again.budget == 0.9
    torch.testing.assert_close(again.calibration.preds, router.calibration.preds)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # a bad default budget is refused before training
        main(["fit", *args, "--budget", "1.5", "--bundle", "bad"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("pudding-train: error: option budget: 1.5 is not a number")


# ------------------------------------------------------------------------------------------- bundles


def test_bundle_records_choices_and_the_calibration(bundle, setup):
    info = json.loads((bundle / "router.json").read_text())
    assert info["candidate_names"] == [*NAMES, "dense"] and info["omission_sets"][-1] == []
    assert info["blocks_kept"] == [4, 4, 4, 4, 6] and info["budget"] == 0.8 and info["dense_choice"] is True
    assert (bundle / "calibration.safetensors").is_file()
    router, _ = load_bundle(bundle)
    assert router.budget == 0.8 and router.omission_sets == [*SETS, []]
    lam, kept = router.calibration.solve(0.8)
    assert router.route_lambda == lam and abs(kept - 0.8 * BLOCKS) <= 1
    assert len(router.candidate_names) == 5 and router.num_blocks == BLOCKS


@pytest.mark.parametrize("budget", [0.7, 0.75, 0.8, 0.9, 0.95])
def test_calibrated_lambda_keeps_the_budget_within_one_block_on_the_validation_rows(setup, bundle, budget):
    _, data = dense_module(setup)
    texts = val_texts(setup, data)
    router, _ = load_bundle(bundle, budget=budget)
    kept = np.array(router.blocks_kept)[router.route_texts(texts)]
    assert len(texts) == router.calibration.rows == 60
    assert abs(kept.mean() - budget * BLOCKS) <= 1.0
    lam, stored = router.calibration.solve(budget)
    assert kept.mean() == pytest.approx(stored, abs=2 / len(texts))  # routing the texts again: the stored picks


def test_lambda_zero_picks_the_highest_predicted_score(bundle):
    router, _ = load_bundle(bundle, budget="argmax")  # the bundle's default budget (0.8) set aside
    preds = router.predict_texts(PROMPTS)
    assert router.route_lambda == 0.0 and router.budget is None
    assert router.route_texts(PROMPTS) == [int(np.argmax(row)) for row in preds.numpy()]
    router.set_budget(0.8)
    assert router.route_lambda != 0.0
    router.set_budget(None)
    assert router.route_texts(PROMPTS) == preds.argmax(-1).tolist()


def test_same_depth_router_refuses_a_budget_and_routes_as_before(setup, tmp_path):
    module, data = module_with_data(setup)
    folder = export_bundle(module, tmp_path / "plain", datamodule=data)
    info = json.loads((folder / "router.json").read_text())
    assert info["calibration"] is None and info["budget"] is None and info["dense_choice"] is False
    assert not (folder / "calibration.safetensors").exists()
    router, _ = load_bundle(folder)
    assert router.route_texts(PROMPTS) == module.router.route_texts(PROMPTS)
    with pytest.raises(OptionError, match="option budget: every choice of this router keeps 4 of 6 blocks"):
        load_bundle(folder, budget=0.9)
    with pytest.raises(OptionError, match="option budget: every choice"):
        export_bundle(module, tmp_path / "plain2", budget=0.9)


# ------------------------------------------------------------------------------------------- routed inference


def test_budget_one_routes_everything_to_dense_and_scores_equal_the_dense_model(bundle, tiny_llm_dir):
    model = routed_model(bundle, tiny_llm_dir, budget=1.0)
    assert model.route(PROMPTS) == [4] * len(PROMPTS) and model.blocks_kept[4] == BLOCKS
    requests = [(p, c) for p in PROMPTS for c in (" yes", " no, not at all")]
    got = model.loglikelihood(requests)
    want = Scorer(model.lm.model, model.lm.tokenizer).score(requests, omit=())
    assert [g.logprob for g in got] == [w.logprob for w in want]
    assert [g.is_greedy for g in got] == [w.is_greedy for w in want]
    ids = model.lm.tokenizer(PROMPTS[0], return_tensors="pt")
    dense = model.lm.model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    text = model.lm.tokenizer.decode(dense[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert model.generate(PROMPTS[:1], max_new_tokens=4, pad_token_id=0) == [text]


def test_budget_one_routes_without_running_the_router_encoder(bundle, tiny_llm_dir, monkeypatch):
    """Under budget 1.0 only the dense choice can win, so routing costs nothing; other budgets still predict."""
    model = routed_model(bundle, tiny_llm_dir, budget=1.0)
    calls: list[int] = []
    predict = model.router.predict_texts
    monkeypatch.setattr(model.router, "predict_texts", lambda texts, *a: calls.append(len(texts)) or predict(texts, *a))
    assert model.router.fixed_choice() == 4 and model.route(PROMPTS) == [4] * len(PROMPTS) and calls == []
    model.set_budget(0.8)
    assert model.router.fixed_choice() is None
    model.route(PROMPTS)
    assert calls == [len(set(PROMPTS))]


def test_a_mixed_batch_gives_the_numbers_of_one_prompt_at_a_time(bundle, tiny_llm_dir):
    model = routed_model(bundle, tiny_llm_dir)
    assert model.budget == 0.8  # the bundle's default
    # calibrate on these very prompts so that half go to the dense model and half to a candidate (5 of 6 kept)
    preds = model.router.predict_texts(PROMPTS)
    model.router.calibration = Calibration(preds, torch.zeros_like(preds), model.router.omitted, BLOCKS)
    model.set_budget(5 / 6)
    choices = model.route(PROMPTS)
    depths = [model.blocks_kept[c] for c in choices]
    assert sorted(depths) == [4, 4, 4, 6, 6, 6]
    requests = [(p, c) for p in PROMPTS for c in (" yes", " the river")]
    together = model.loglikelihood(requests)
    alone = [model.loglikelihood([r])[0] for r in requests]
    assert [s.logprob for s in together] == pytest.approx([s.logprob for s in alone], abs=1e-4)
    assert_each_scored_under_its_choice(model, requests, together)
    mixed = model.generate(PROMPTS, max_new_tokens=4)
    assert mixed == [model.generate([p], max_new_tokens=4)[0] for p in PROMPTS]


def test_lm_eval_model_takes_budget_from_model_args(bundle, tiny_llm_dir, monkeypatch):
    from lm_eval.api.instance import Instance

    import pudding  # noqa: F401  (registers the model)
    from pudding.integrations.lmeval import PuddingLM
    from pudding.routed.model import PuddingModel

    seen = {}
    original = PuddingModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return original(cls, *args, **{**kwargs, "base": str(tiny_llm_dir), "cache_dir": bundle.parent / "c"})

    monkeypatch.setattr(PuddingModel, "from_pretrained", classmethod(spy))
    lm = PuddingLM.create_from_arg_string(f"bundle={bundle},budget=1.0,dtype=float32,device=cpu")
    assert seen["budget"] == 1.0 and lm.model.budget == 1.0
    requests = [Instance("loglikelihood", {}, (p, " yes"), idx=0, metadata=("t", i, 1)) for i, p in enumerate(PROMPTS)]
    got = lm.loglikelihood(requests)
    want = Scorer(lm.model.lm.model, lm.model.lm.tokenizer).score([(p, " yes") for p in PROMPTS], omit=())
    assert lm.depths == [BLOCKS] * len(PROMPTS) and [g[0] for g in got] == [w.logprob for w in want]
    lm = PuddingLM.create_from_arg_string(f"bundle={bundle},budget=argmax,dtype=float32,device=cpu")
    assert lm.model.budget is None
    with pytest.raises(OptionError, match="option budget: 'lots'"):
        PuddingLM.create_from_arg_string(f"bundle={bundle},budget=lots")


@pytest.mark.parametrize("command", ["compare", "bench"])
@pytest.mark.parametrize("budget", ["0", "1.5", "lots"])
def test_eval_and_bench_refuse_a_bad_budget_in_one_line(bundle, command, budget, capsys):
    from pudding.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--bundle", str(bundle), "--budget", budget])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "option budget:" in err[0], err


def test_eval_refuses_a_budget_without_a_bundle(capsys):
    from pudding.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "--budget", "0.8", "--tasks", "piqa"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err == [
        "pudding eval: error: unrecognized arguments: --budget 0.8 (see pudding eval --help)"
    ]


def test_eval_bundle_with_a_budget_reports_depths_per_task(bundle, tiny_llm_dir, shared_data, tmp_path):
    from pudding.core.tasks import DataOptions, eval_items
    from pudding.routed.evaluate import evaluate_bundle

    options = DataOptions(data_dir=str(shared_data))
    report = evaluate_bundle(
        str(bundle),
        ["piqa"],
        options,
        limit=8,
        base=str(tiny_llm_dir),
        dtype="float32",
        device="cpu",
        outcomes_dir=tmp_path / "outcomes",
        sleb=False,
        output=tmp_path / "results",
        log=lambda _: None,
        budget=1.0,
    )
    routed = next(name for name, kind in report["kinds"].items() if kind == "routed")
    assert routed == "PuDDing (router, budget 1)" and report["blocks_kept"][routed] == BLOCKS
    assert report["results"][routed]["piqa"] == report["results"]["dense"]["piqa"]  # every item on the dense model
    assert report["routing_depths"] == {"piqa": {"6": 8}} and report["routing_histogram"]["piqa"] == [0, 0, 0, 0, 8]
    assert report["config"]["budget"] == 1.0 and report["config"]["budget_lambda"] == "-inf"
    assert report["candidate_names"] == [*NAMES, "dense"]
    assert len(eval_items("piqa", options)[0][:8]) == 8


def test_budget_config_is_the_router_config_plus_dense_choice(capsys):
    import yaml

    from pudding.cli.train import main

    repo = Path(__file__).resolve().parents[1]

    def printed(config: str) -> dict:
        with pytest.raises(SystemExit):
            main(["fit", "--config", str(repo / "configs" / config), "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    plain, budget = printed("router.yaml"), printed("router_budget.yaml")
    assert plain["data"]["dense_choice"] is False and plain["budget"] is None
    assert budget["data"]["dense_choice"] is True and budget["budget"] == 0.85
    assert budget["bundle"] == "checkpoints/router/bundle_budget"
    for config in (plain, budget):
        config["data"].pop("dense_choice"), config.pop("budget"), config.pop("bundle")
    assert plain == budget


def test_zeroshot_callback_accepts_the_dense_choice_and_refuses_it_without(tmp_path):
    from pudding.router.zeroshot import ZeroShotError, ZeroShotEvalCallback

    meta = {"omission_sets": SETS, "base_model": "tiny-llm"}
    callback = ZeroShotEvalCallback(cache_dir=str(tmp_path))
    with pytest.raises(ZeroShotError, match="the module's 5 omission sets differ from the router dataset's 4"):
        callback.plan(meta, [], [*SETS, []], torch.device("cpu"))
    with pytest.raises(ZeroShotError, match="metadata names no tasks"):  # past the sets check, on to the items
        callback.plan({**meta, "dense_choice": True}, [], [*SETS, []], torch.device("cpu"))


def test_bench_under_budget_one_times_the_dense_model_and_records_the_depth(bundle, tiny_llm_dir, tmp_path, capsys):
    from pudding.cli import main

    out = tmp_path / "bench.json"
    args = [
        "bench",
        "--bundle",
        str(bundle),
        "--base",
        str(tiny_llm_dir),
        "--lengths",
        "8",
        "--repeats",
        "1",
        "--warmup",
        "0",
    ]
    main([*args, "--new_tokens", "2", "--dtype", "float32", "--device", "cpu", "--budget", "1.0", "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["budget"] == 1.0 and report["budget_lambda"] == "-inf"
    (row,) = report["lengths"]
    assert row["omit"] == [] and row["choice"] == 4 and row["blocks_kept"] == BLOCKS
    assert "0 blocks skipped, 6 kept" in capsys.readouterr().out
