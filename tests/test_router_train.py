"""Router training end to end on a tiny random BERT and a tiny router dataset: CLI, module, bundle, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NAMES, SETS, module_with_data, tiny_dataset, tiny_encoder

from pudding.cli.train import main
from pudding.core.candidates import Choices
from pudding.router.bundle import BundleError, export_bundle, load_bundle
from pudding.router.module import RouterModelError


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("router")
    return {"encoder": tiny_encoder(root / "bert"), "dataset": tiny_dataset(root / "data"), "root": root}


def cli_args(setup: dict, *extra: str) -> list[str]:
    return [
        "--data.datasets",
        str(setup["dataset"]),
        "--model.encoder",
        str(setup["encoder"]),
        "--data.batch_size",
        "8",
        "--model.max_length",
        "64",
        *extra,
    ]


# ------------------------------------------------------------------------------------------- CLI


def test_fit_fast_dev_run_through_the_cli_writes_a_bundle(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", *cli_args(setup, "--trainer.fast_dev_run", "true")])
    bundle = tmp_path / "checkpoints" / "router" / "bundle"
    assert (bundle / "router.safetensors").is_file() and "router bundle written" in capsys.readouterr().err
    router, info = load_bundle(bundle, base_num_blocks=6)
    assert info["num_candidates"] == 4 and info["candidate_file"] == "rebuilt" and info["base_model"] == "tiny-llm"
    assert router.candidate_names == NAMES and router.omission_sets == SETS
    assert "model:" in (bundle / "training_config.yaml").read_text()
    # A second fit refuses to write over the bundle, before any training, with one line and status 2.
    before = (bundle / "router.safetensors").read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["fit", *cli_args(setup, "--trainer.fast_dev_run", "true")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("pudding-train: error: bundle folder checkpoints/router/bundle")
    assert (bundle / "router.safetensors").read_bytes() == before


def test_short_fit_logs_metrics_checkpoints_and_exports_the_best(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            *cli_args(
                setup,
                "--trainer.max_epochs",
                "2",
                "--model.warmup_steps",
                "2",
                "--bundle",
                "out",
                "--trainer.log_every_n_steps",
                "1",
            ),
        ]
    )
    runs = list((tmp_path / "checkpoints" / "router" / "tensorboard").glob("version_*"))
    assert len(runs) == 1
    ckpts = list((runs[0] / "checkpoints").glob("best*.ckpt"))
    assert len(ckpts) == 1 and (runs[0] / "config.yaml").is_file()
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()  # what fit --ckpt_path last resumes from
    info = json.loads((tmp_path / "out" / "router.json").read_text())
    assert info["checkpoint"] == str(ckpts[0])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs[0])).Reload()
    tags = set(events.Tags()["scalars"])
    for split in ("train", "val"):
        for name in ("mse", "selection_acc", "regret", "gain_vs_static"):
            assert f"{split}/{name}" in tags and f"{split}_by_task/boolq/{name}" in tags
        assert f"{split}_choice/00" in tags
    assert {"ref/val_regret_best_static", "ref/val_regret_random"} <= tags
    lr = events.Scalars(next(t for t in sorted(tags) if t.startswith("lr-AdamW")))
    assert lr[0].value == pytest.approx(5e-5 / 2) and lr[1].value == pytest.approx(5e-5)  # warm-up over 2 steps
    assert lr[-1].value < lr[2].value  # then linear decay
    assert len(events.Scalars("val/regret")) == 2  # once per epoch
    assert "val/choice" in events.Tags()["histograms"]

    # validate / test / predict restore the checkpoint (K from the data, weights from the file) and run.
    for sub in ("validate", "test", "predict"):
        main([sub, *cli_args(setup, "--ckpt_path", str(ckpts[0]), "--trainer.logger", "false")])

    # Any checkpoint exports the same bundle weights through the export command.
    main(["export", str(ckpts[0]), "--output", str(tmp_path / "again")])
    texts = ["Question: the cat?\nAnswer:", "Question: a quick red river and the slow blue stone?\nAnswer:"]
    first, _ = load_bundle(tmp_path / "out")
    second, _ = load_bundle(tmp_path / "again")
    assert torch.equal(first.predict_texts(texts), second.predict_texts(texts))
    with pytest.raises(SystemExit):
        main(["export", str(ckpts[0]), "--output", str(tmp_path / "again")])
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_last_checkpoint_follows_every_epoch_even_without_improvement(setup, tmp_path, monkeypatch):
    # lr 1e-30 (below float32 resolution): the second epoch's validation regret equals the first's, so the best
    # checkpoint stays at epoch 0; the last.ckpt that --ckpt_path last resumes from must still hold the end of epoch 1
    # (Lightning 2.6.6's own save_last skips it then, and a killed run would lose that epoch).
    monkeypatch.chdir(tmp_path)
    main(["fit", *cli_args(setup, "--trainer.max_epochs", "2", "--model.lr", "1e-30", "--bundle", "null")])
    (run,) = (tmp_path / "checkpoints" / "router" / "tensorboard").glob("version_*")
    (best,) = (run / "checkpoints").glob("best*.ckpt")
    assert best.name == "best-epoch=00.ckpt"
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    first = torch.load(best, map_location="cpu", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == 2 * first["global_step"] > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-epoch=00.ckpt", "last.ckpt"]


def test_tensorboard_has_the_hyper_parameters_against_val_regret_and_no_placeholder(setup, tmp_path, monkeypatch):
    """The HPARAMS tab: the fit's settings against its best validation regret (not Lightning's hp_metric = -1)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    monkeypatch.chdir(tmp_path)
    main(["fit", *cli_args(setup, "--trainer.max_epochs", "2", "--bundle", "null")])
    (run,) = (tmp_path / "checkpoints" / "router" / "tensorboard").glob("version_*")
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "hp_metric" not in scalars and {"hp/val_regret", "hp/epoch"} <= set(scalars)
    best = min(e.value for e in events.Scalars("val/regret"))
    assert events.Scalars("hp/val_regret")[-1].value == pytest.approx(best)
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {"lr", "loss", "encoder", "pooling"} <= set(start.hparams)


def test_overrides_reach_the_config_and_the_module(setup, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", *cli_args(setup, "--model.lr", "3e-5", "--trainer.max_epochs", "2", "--print_config")])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "lr: 3.0e-05" in out and "max_epochs: 2" in out and "batch_size: 8" in out
    assert f"encoder: {setup['encoder']}" in out and "router:" not in out  # linked: the data follows the model


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--data.datasets", "/nonexistent/ds"], "router dataset /nonexistent/ds does not exist"),
        (["--model.encoder", "/nonexistent/enc"], "option model.encoder: cannot load '/nonexistent/enc'"),
        (["--model.head_hidden", "[0]"], "option model.head_hidden: layer sizes must be positive, got [0]"),
        (["--model.pooling", "last"], "option model.pooling: 'last' is not one of cls, mean for this encoder"),
        (["--data.batch_size", "x"], 'Parser key "data.batch_size"'),
        (["--model.frob", "1"], "unrecognized arguments: --model.frob 1 (see pudding-train --help)"),
    ],
)
def test_bad_input_is_one_line_and_status_2(setup, tmp_path, monkeypatch, capsys, extra, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fit", *cli_args(setup, "--trainer.fast_dev_run", "true"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and expected in err[-1] and err[-1].startswith("pudding-train: error:")
    assert not (tmp_path / "checkpoints" / "router" / "bundle").exists()


def test_debug_shows_the_traceback(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RouterModelError):
        main(["fit", *cli_args(setup, "--model.encoder", "/nonexistent/enc"), "--debug"])
    monkeypatch.setenv("PUDDING_DEBUG", "1")
    with pytest.raises(RouterModelError):
        main(["fit", *cli_args(setup, "--model.encoder", "/nonexistent/enc")])


def test_mixed_candidate_files_and_not_a_dataset_are_refused(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    other = tiny_dataset(tmp_path / "other", sha="d" * 64)
    (tmp_path / "plain").mkdir()
    for datasets, expected in (
        (f"[{setup['dataset']},{other}]", "cannot mix router datasets made with different candidate files"),
        (str(tmp_path / "plain"), "is not a router dataset: pudding_meta.json is missing"),
    ):
        with pytest.raises(SystemExit):
            main(["fit", *cli_args(setup, "--trainer.fast_dev_run", "true", "--data.datasets", datasets)])
        assert expected in capsys.readouterr().err


def test_posterior_target_logs_regret_and_accuracy_regret_and_old_data_refuses_it(setup, tmp_path, monkeypatch, capsys):
    """--data.target posterior on all-choice data: regret follows the posterior, regret_acc (and its reference lines)
    is logged, the bundle records the target; on data without the all-choice columns the same option is refused in one
    line that names it and the dataset, before the encoder loads."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    data = tiny_dataset(tmp_path / "choices", all_choices=True)
    options = ["--data.target", "posterior", "--data.center", "true", "--data.datasets", str(data)]
    main(["fit", *cli_args(setup, "--trainer.max_epochs", "1", "--bundle", "out", *options)])
    (run,) = (tmp_path / "checkpoints" / "router" / "tensorboard").glob("version_*")
    tags = set(EventAccumulator(str(run)).Reload().Tags()["scalars"])
    assert {"val/regret", "val/regret_acc", "val_by_task/piqa/regret_acc", "train/regret_acc"} <= tags
    assert {"ref/val_regret_acc_best_static", "ref/val_regret_acc_random", "ref/val_regret_best_static"} <= tags
    meta = json.loads((tmp_path / "out" / "dataset_meta.json").read_text())
    assert meta["router_target"] == "posterior" and meta["center"] is True and "router_metric" not in meta

    for target in ("posterior", "correct"):
        with pytest.raises(SystemExit) as exc:
            main(["fit", *cli_args(setup, "--trainer.fast_dev_run", "true", "--data.target", target)])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and err[-1].startswith(f"pudding-train: error: option data.target {target}")
        assert str(setup["dataset"]) in err[-1]
    main(["fit", *cli_args(setup, "--trainer.max_epochs", "1", "--bundle", "null")])  # default target: no regret_acc
    runs = sorted((tmp_path / "checkpoints" / "router" / "tensorboard").glob("version_*"))
    tags = set(EventAccumulator(str(runs[-1])).Reload().Tags()["scalars"])
    assert "val/regret" in tags and not {t for t in tags if "regret_acc" in t}


# ------------------------------------------------------------------------------------------- module and bundle


def test_setup_takes_k_names_and_best_static_from_the_data(setup):
    module, data = module_with_data(setup)
    train_scores = np.stack([e["scores"] for e in data.train_set])
    assert (
        module.router.num_candidates == 4
        and module.router.candidate_names == NAMES
        and module.router.omission_sets == SETS
    )
    assert module.router.best_static == int(np.argmax(train_scores.mean(0)))
    assert module.tasks == ["boolq", "piqa"]
    assert module.references["ref/train_regret_best_static"] == pytest.approx(
        float((train_scores.max(1) - train_scores[:, module.router.best_static]).mean()), abs=1e-6
    )


def test_route_texts_is_argmax_of_predict_texts_in_input_order(setup):
    module, data = module_with_data(setup, dropout=0.5)
    module.train()
    texts = [f"Question: {' '.join(['red'] * n)}?\nAnswer:" for n in (30, 1, 12, 5, 50)]
    preds = module.router.predict_texts(texts, batch_size=2)
    assert module.training  # mode restored
    assert preds.shape == (5, 4) and preds.dtype == torch.float32
    assert module.router.route_texts(texts) == preds.argmax(-1).tolist()
    one_by_one = torch.cat([module.router.predict_texts([t]) for t in texts])
    torch.testing.assert_close(preds, one_by_one, atol=1e-5, rtol=1e-5)  # sorting and padding change nothing


def test_bundle_round_trip_gives_identical_predictions(setup, tmp_path):
    module, _ = module_with_data(setup)
    with torch.no_grad():
        module.router.head.weight.normal_()  # predictions that differ between candidates
    texts = ["Question: the sun and the rain?\nAnswer:", "Question: a dog?\nAnswer:", "x " * 100]
    folder = export_bundle(module, tmp_path / "bundle")
    loaded, info = load_bundle(folder)
    assert torch.equal(loaded.predict_texts(texts), module.router.predict_texts(texts))
    assert loaded.route_texts(texts) == module.router.route_texts(texts)
    assert info["best_static"] == module.router.best_static and info["candidates_sha256"] == "c" * 64
    assert set(info["versions"]) >= {"torch", "lightning", "transformers"}
    with pytest.raises(BundleError, match="exists; pass overwrite"):
        export_bundle(module, folder)
    export_bundle(module, folder, overwrite=True)
    assert not list(tmp_path.glob(".bundle.*"))  # no temporary or old folders left behind


def test_bundle_mismatches_and_missing_files_fail_with_one_line(setup, tmp_path):
    module, _ = module_with_data(setup)
    folder = export_bundle(module, tmp_path / "bundle")
    with pytest.raises(BundleError, match="candidates are for 'tiny-llm' with 6 blocks, the base model given has 30"):
        load_bundle(folder, base_num_blocks=30)
    config = json.loads((folder / "router.json").read_text())
    (folder / "router.json").write_text(json.dumps({**config, "num_candidates": 5}))
    with pytest.raises(BundleError, match="the router has K=5 outputs, candidates.yaml has 4 candidates"):
        load_bundle(folder)
    (folder / "candidates.yaml").unlink()
    with pytest.raises(BundleError, match="file candidates.yaml is missing"):
        load_bundle(folder)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_k_mismatch_between_router_and_data_is_refused(setup, tmp_path):
    module, _ = module_with_data(setup)
    with pytest.raises(RouterModelError, match="the router has K=4 outputs, the data has K=3 candidates"):
        module.configure_choices(Choices.of(NAMES[:3], SETS[:3], 6), 0)


@pytest.mark.parametrize("loss", ["mse", "huber", "listnet"])
def test_losses_train_down_on_a_fixed_batch(setup, loss):
    module, data = module_with_data(setup, loss=loss, dropout=0.0, lr=1e-3)
    batch = next(iter(data.train_dataloader()))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        value = module.loss_fn(module(batch["input_ids"], batch["attention_mask"]), batch["targets"])
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(float(value.detach()))
    assert losses[-1] < losses[0]


def _printed(capsys, *args: str) -> str:
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    return "\n".join(line for line in capsys.readouterr().out.splitlines() if not line.startswith("#"))


def test_shipped_configs_parse_and_the_default_one_equals_the_builtin_defaults(capsys):
    """configs/router.yaml writes out every built-in default, plus the zero-shot callback (it needs the base LLM, so
    a bare ``pudding-train fit`` leaves it out)."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    shipped = yaml.safe_load(_printed(capsys, "--config", str(repo / "configs" / "router.yaml")))
    callbacks = shipped["trainer"]["callbacks"]
    zeroshot = [c for c in callbacks if c["class_path"].endswith("ZeroShotEvalCallback")]
    assert len(zeroshot) == 1 and zeroshot[0]["init_args"]["limit"] == 200
    callbacks.remove(zeroshot[0])
    assert shipped == yaml.safe_load(_printed(capsys))
    paper = _printed(capsys, "--config", str(repo / "configs" / "router_paper.yaml"), "--data.batch_size", "16")
    for line in ("encoder: bert-base-uncased", "lr: 1.0e-05", "max_epochs: 10", "warmup_steps: 500", "pooling: cls"):
        assert line in paper
    assert "batch_size: 16" in paper and "monitor: val/regret" in paper


def test_a_text_router_runs_on_the_llm_s_device(setup, tmp_path):
    """load_bundle with the base model moves a text router to the model's device (a GPU's, for real users)."""
    from types import SimpleNamespace

    module, _ = module_with_data(setup)
    folder = export_bundle(module, tmp_path / "bundle")
    router, _ = load_bundle(folder, lm=SimpleNamespace(device=torch.device("meta")))
    assert {p.device.type for p in router.parameters()} == {"meta"}
    assert {p.device.type for p in load_bundle(folder)[0].parameters()} == {"cpu"}  # no model given: the host
