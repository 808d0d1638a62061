"""Router training in several processes (DDP on the CPU, gloo): it completes, agrees with one process, and writes the
bundle once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_dataset, tiny_encoder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    return {"encoder": tiny_encoder(root / "bert"), "dataset": tiny_dataset(root / "data", n=60), "root": root}


def fit(setup: dict, out: Path, devices: int, *extra: str) -> subprocess.CompletedProcess:
    """``pudding-train fit`` in a fresh process, as a user runs it (DDP re-launches the other ranks from its argv)."""
    args = ["--data.datasets", setup["dataset"], "--model.encoder", setup["encoder"], "--model.max_length", "64"]
    args += ["--data.batch_size", "4", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices)]
    args += ["--trainer.strategy", "ddp" if devices > 1 else "auto", "--trainer.max_epochs", "1"]
    args += ["--trainer.logger.init_args.save_dir", out / "logs", "--bundle", out / "bundle"]
    args += [*extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PUDDING_DEBUG": "1"}
    command = [sys.executable, "-m", "pudding.cli.train", "fit", *map(str, args)]
    return subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=600)


def val_metrics(out: Path) -> dict[str, float]:
    """The last value of every ``val/`` and ``ref/`` scalar a fit logged to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = (out / "logs" / "tensorboard").glob("version_*")
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith(("val/", "val_by_task/", "ref/")) and t != "val/loss"]
    return {t: events.Scalars(t)[-1].value for t in tags}


def test_two_processes_fit_like_one_and_write_the_bundle_once(setup, tmp_path):
    """With a learning rate too small to move a float32 weight, both fits validate the same router on the same
    items: every validation metric (overall and per task; sums over every rank's rows) and every reference must agree;
    only the training batches differ (each rank trains on its own half). ``val/loss`` is each rank's batch mean
    averaged over the ranks, equal only where they hold equal counts, so it is not compared."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    done = [fit(setup, folder, devices, "--model.lr", "1e-30") for folder, devices in ((one, 1), (two, 2))]
    for result in done:
        assert result.returncode == 0, result.stderr[-3000:]
    assert (two / "bundle" / "router.json").is_file()
    assert [p.name for p in two.iterdir() if p.name.startswith((".bundle", "bundle"))] == ["bundle"]  # written once
    single, double = val_metrics(one), val_metrics(two)
    assert set(single) == set(double) and "val/regret" in single and "val_by_task/boolq/regret" in single
    for tag, value in single.items():
        assert double[tag] == pytest.approx(value, abs=1e-5), tag
