"""ZeroShotEvalCallback: routed accuracy equals scoring each item with its chosen set; references; cache; schedule."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from support.tiny import write_tiny_tasks as write_data
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pudding.core import outcomes
from pudding.core.accuracy import judge
from pudding.core.llm import LLMOptions
from pudding.core.models.loading import load_base
from pudding.core.scoring import Scorer
from pudding.core.tasks import DataOptions, clear_cache, eval_items, router_items
from pudding.router import zeroshot
from pudding.router.zeroshot import ZeroShotError, ZeroShotEvalCallback

SETS = [(1, 4), (2, 3), (0, 5), (3, 4)]
TASKS = ("arc_easy", "boolq")
LIMIT = 10
BEST_STATIC = 2


def dataset_rows(data: Path, fraction: float = 0.5) -> list[dict]:
    """Router-data rows as RouterDataModule keeps them: the tasks' router items with raw scores."""
    rng = np.random.default_rng(0)
    opts = DataOptions(str(data), fraction, 0)
    items = [item for task in TASKS for item in router_items(task, opts)[0]]
    return [{"task": i.task, "item_id": i.item_id, "scores": rng.normal(size=len(SETS))} for i in items]


def rule(text: str, epoch: int) -> int:
    """The fake router's choice: a fixed function of the prompt that changes with the epoch."""
    return (zlib.crc32(text.encode()) + epoch) % len(SETS)


class FakeRouter(LightningModule):
    """The RouterModule interface the callback relies on, with a trivial trainable parameter."""

    def __init__(self, best_static: int | None = BEST_STATIC) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.candidate_names = [f"c{i}" for i in range(len(SETS))]
        self.omission_sets = [list(s) for s in SETS]
        self.best_static = best_static
        self.routed_calls = 0

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def predict_texts(self, texts, batch_size: int = 64) -> torch.Tensor:
        choice = torch.tensor([rule(t, self.current_epoch) for t in texts])
        return nn.functional.one_hot(choice, len(SETS)).float()

    def route_texts(self, texts) -> list[int]:
        self.routed_calls += 1
        return self.predict_texts(texts).argmax(dim=1).tolist()

    @property
    def router(self) -> FakeRouter:
        """The callback reads the router of its module (a RouterModule's ``router``): here the module itself."""
        return self


class FakeData(LightningDataModule):
    """Router dataset metadata and rows, plus a few dummy batches so the loops run."""

    def __init__(self, meta: dict | None = None, train_set: list | None = None) -> None:
        super().__init__()
        self.meta = meta or {}
        self.train_set = train_set or []
        self.val_set: list = []

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llm_dir) -> dict:
    root = tmp_path_factory.mktemp("zeroshot")
    data = write_data(root / "data")
    meta = {
        "base_model": str(tiny_llm_dir),
        "dtype": "float32",
        "num_blocks": 6,
        "num_candidates": len(SETS),
        "omission_sets": [list(s) for s in SETS],
        "candidate_names": [f"c{i}" for i in range(len(SETS))],
        "candidates_sha256": "c" * 64,
        "tasks": list(TASKS),
        "router_fraction": 0.5,
        "split_seed": 0,
        "router_splits": {"arc_easy": "train", "boolq": "validation"},
    }
    return {"root": root, "model": tiny_llm_dir, "data": data, "meta": meta, "cache": root / "cache"}


def callback(setup: dict, **kwargs) -> ZeroShotEvalCallback:
    llm = LLMOptions(dtype="float32", device="cpu")
    options = dict(limit=LIMIT, data_dir=str(setup["data"]), llm=llm, cache_dir=setup["cache"])
    options["outcomes_dir"] = str(setup["root"] / "outcomes")  # the default is the checkout's checkpoints/outcomes
    return ZeroShotEvalCallback(**(options | kwargs))


def fit(
    setup: dict, cb: ZeroShotEvalCallback, max_epochs: int = 2, meta: dict | None = None, logger=False, **module
) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=max_epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        callbacks=[cb],
    )
    data = FakeData(meta or setup["meta"], dataset_rows(setup["data"], (meta or setup["meta"])["router_fraction"]))
    trainer.fit(FakeRouter(**module), datamodule=data)
    return trainer


@pytest.fixture(scope="module")
def first_run(setup) -> tuple[ZeroShotEvalCallback, dict]:
    clear_cache()
    cb = callback(setup)
    trainer = fit(setup, cb)
    return cb, {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.fixture(scope="module")
def direct(setup) -> dict[str, dict]:
    """Each evaluation item scored on its own with every set and the dense model: correct or not (acc)."""
    base = load_base(str(setup["model"]), dtype="float32", device="cpu")
    scorer = Scorer(base.model, base.tokenizer)
    out = {}
    for task in TASKS:
        items = eval_items(task, DataOptions(str(setup["data"]), 0.5, 0))[0][:LIMIT]
        table = {}
        for omit in [(), *SETS]:
            results = [judge([item], [scorer.score(item.requests, omit)])[0] for item in items]
            table[omit] = np.array([r.pred == r.gold for r in results])
        out[task] = {"items": items, "correct": table}
    return out


def test_routed_accuracy_equals_scoring_each_item_with_its_chosen_set(setup, first_run, direct):
    cb, logged = first_run
    assert [h["epoch"] for h in cb.history] == [0, 1]  # sanity check not counted
    for entry in cb.history:
        per_task = {}
        for task in TASKS:
            items, correct = direct[task]["items"], direct[task]["correct"]
            chosen = [SETS[rule(item.router_text, entry["epoch"])] for item in items]
            assert len(set(chosen)) > 1
            per_task[task] = float(np.mean([correct[omit][i] for i, omit in enumerate(chosen)]))
            assert entry[f"zeroshot/{task}"] == pytest.approx(per_task[task], abs=1e-12)
        assert entry["zeroshot/average"] == pytest.approx(np.mean(list(per_task.values())), abs=1e-12)
    # the sets disagree on some items, so a wrong lookup could not pass by luck
    assert any(len({tuple(c[omit]) for omit in SETS}) > 1 for c in (direct[t]["correct"] for t in TASKS))
    # the last epoch's values are what was logged, and what the callback keeps
    assert cb.last_results == {k: v for k, v in cb.history[-1].items() if k != "epoch"}
    for name, value in cb.last_results.items():
        assert logged[name] == pytest.approx(value, abs=1e-6)
    assert [len(v) for v in cb.last_choices.values()] == [LIMIT, LIMIT]


def test_references_match_direct_scoring(first_run, direct):
    cb, logged = first_run
    for task in TASKS:
        correct = direct[task]["correct"]
        statics = [correct[omit].mean() for omit in SETS]
        refs = {name: cb.references[f"zeroshot_ref/{name}/{task}"] for name in zeroshot.REFERENCES}
        assert refs["dense"] == pytest.approx(correct[()].mean())
        assert refs["best_static"] == pytest.approx(statics[BEST_STATIC])
        assert refs["random"] == pytest.approx(np.mean(statics))
        assert refs["oracle"] == pytest.approx(np.any([correct[omit] for omit in SETS], axis=0).mean())
        assert all(refs["oracle"] >= s for s in statics)
    for name in zeroshot.REFERENCES:
        per_task = [cb.references[f"zeroshot_ref/{name}/{task}"] for task in TASKS]
        assert cb.references[f"zeroshot_ref/{name}"] == pytest.approx(np.mean(per_task))
        assert logged[f"zeroshot_ref/{name}"] == pytest.approx(cb.references[f"zeroshot_ref/{name}"], abs=1e-6)


def test_best_static_falls_back_to_router_training_rows(setup, first_run):
    cb = callback(setup)
    fit(setup, cb, max_epochs=1, best_static=None)
    rows = dataset_rows(setup["data"])
    best = int(np.argmax(np.stack([r["scores"] for r in rows]).mean(axis=0)))
    expected = np.mean([cb.outcomes[t].correct(cb.set_keys[best]).mean() for t in TASKS])
    assert cb.references["zeroshot_ref/best_static"] == pytest.approx(expected)


def test_second_run_reuses_the_cache_without_loading_the_model(setup, first_run, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the LLM was loaded although the outcomes are cached")

    monkeypatch.setattr(zeroshot, "load_base", refuse)
    monkeypatch.setattr(zeroshot, "spread_outcomes", refuse)
    cb = callback(setup)
    fit(setup, cb)
    assert cb.references == first_run[0].references and cb.history == first_run[0].history
    assert cb.table_path == first_run[0].table_path and cb.table_path.is_file()

    # another candidate file is another table; its sets' per-chunk shards are still reused (nothing is scored)
    monkeypatch.undo()
    monkeypatch.setattr(outcomes, "run_paths", refuse)
    cb = callback(setup)
    fit(setup, cb, max_epochs=1, meta=setup["meta"] | {"candidates_sha256": "d" * 64})
    assert cb.table_path != first_run[0].table_path and cb.references == first_run[0].references

    # other items (a smaller limit) are another key: the model is loaded again
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(zeroshot, "load_base", lambda *a, **k: calls.append(a) or load_base(*a, **k))
    cb = callback(setup, limit=LIMIT - 3)
    fit(setup, cb, max_epochs=1)
    assert len(calls) == 1 and cb.table_path != first_run[0].table_path
    assert [len(items) for items in cb.items.values()] == [LIMIT - 3, LIMIT - 3]


def test_outcomes_progress_file_carries_the_outcomes_to_a_fresh_machine(setup, first_run, tmp_path, monkeypatch):
    from pudding.core.outcomes_progress import read_outcomes_pack

    progress = tmp_path / "progress.parquet"
    dirs = dict(cache_dir=tmp_path / "table1", outcomes_dir=str(tmp_path / "shards1"), outcomes_progress=str(progress))
    fit(setup, callback(setup, **dirs), max_epochs=1)
    table, info = read_outcomes_pack(progress)
    assert info["shards"] == len(TASKS) and table.num_rows == len(TASKS) * LIMIT * (len(SETS) + 1)

    def refuse(*args, **kwargs):
        raise AssertionError("an outcome was scored again although the progress file holds it")

    monkeypatch.setattr(outcomes, "run_paths", refuse)
    dirs = dict(cache_dir=tmp_path / "table2", outcomes_dir=str(tmp_path / "shards2"), outcomes_progress=str(progress))
    cb = callback(setup, **dirs)
    fit(setup, cb, max_epochs=1)
    assert cb.references == first_run[0].references and cb.history == first_run[0].history[:1]
    assert callback(setup).outcomes_progress is None  # off unless asked for


def test_every_n_epochs_is_respected(setup, first_run, monkeypatch):
    monkeypatch.setattr(zeroshot, "load_base", lambda *a, **k: pytest.fail("cache should be hit"))
    cb = callback(setup, every_n_epochs=2)
    fit(setup, cb, max_epochs=5)
    assert [h["epoch"] for h in cb.history] == [1, 3]
    # `validate` (no fit start) evaluates too, from the cached outcomes
    cb = callback(setup)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_val_batches=1, callbacks=[cb])
    trainer.validate(FakeRouter(), datamodule=FakeData(setup["meta"], dataset_rows(setup["data"])))
    assert cb.history == first_run[0].history[:1]


def test_items_are_the_datasets_evaluation_items_and_a_leak_is_refused(setup, first_run):
    opts = DataOptions(str(setup["data"]), 0.5, 0)
    cb = first_run[0]
    for task in TASKS:
        assert cb.items[task] == eval_items(task, opts)[0][:LIMIT]
    # the router data was built with router_fraction 0.5; evaluating with 0.3 would score some of its rows
    with pytest.raises(ZeroShotError, match=r"boolq evaluation items .* are rows of the router dataset"):
        fit(setup, callback(setup, router_fraction=0.3), max_epochs=1)
    # a dataset built with another split is followed: its own items are evaluated
    meta = setup["meta"] | {"router_fraction": 0.3}
    cb = callback(setup, tasks="boolq")
    fit(setup, cb, max_epochs=1, meta=meta)
    assert cb.items["boolq"] == eval_items("boolq", DataOptions(str(setup["data"]), 0.3, 0))[0][:LIMIT]
    assert cb.items["boolq"] != first_run[0].items["boolq"]
    assert set(cb.last_results) == {"zeroshot/boolq", "zeroshot/average"}


def test_mismatched_candidates_and_bad_options_fail_clearly(setup):
    meta = setup["meta"] | {"omission_sets": [[0, 1]] * len(SETS)}
    with pytest.raises(ZeroShotError, match="omission sets differ from the router dataset"):
        fit(setup, callback(setup), max_epochs=1, meta=meta)
    with pytest.raises(ValueError, match="every_n_epochs"):
        ZeroShotEvalCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match="option limit"):
        ZeroShotEvalCallback(limit=0)


def test_callback_from_yaml_in_lightning_cli(tmp_path):
    config = {
        "trainer": {
            "callbacks": [
                {
                    "class_path": "pudding.router.zeroshot.ZeroShotEvalCallback",
                    "init_args": {"limit": 7, "data_dir": "../shared/data", "every_n_epochs": 2},
                }
            ]
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = LightningCLI(FakeRouter, FakeData, run=False, args=["--config", str(path)])
    (cb,) = [c for c in cli.trainer.callbacks if isinstance(c, ZeroShotEvalCallback)]
    assert (cb.limit, cb.data_dir, cb.every_n_epochs, cb.metric) == (7, "../shared/data", 2, "acc")
    assert cb.cache_dir == Path("checkpoints/router/zeroshot_cache")


@pytest.fixture(autouse=True)
def _fresh_task_cache():
    clear_cache()
    yield
    clear_cache()


def test_tensorboard_draws_each_task_s_routed_accuracy_over_its_references(setup, first_run, tmp_path):
    """One custom-scalars chart per task (and the average): the routed line and the four reference lines together."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util import tensor_util

    logger = TensorBoardLogger(str(tmp_path), name="tb", default_hp_metric=False)
    fit(setup, callback(setup), max_epochs=1, logger=logger)
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    (written,) = events.Tensors("custom_scalars__config__")
    (category,) = layout_pb2.Layout.FromString(tensor_util.make_ndarray(written.tensor_proto).item()).category
    charts = {chart.title: list(chart.multiline.tag) for chart in category.chart}
    assert set(charts) == {"average", *TASKS}
    assert charts["boolq"] == ["zeroshot/boolq", *(f"zeroshot_ref/{r}/boolq" for r in zeroshot.REFERENCES)]
    logged = set(events.Tags()["scalars"])
    assert all(tag in logged for tags in charts.values() for tag in tags)  # every line of every chart has data
