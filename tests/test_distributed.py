"""Work in several processes on the CPU, compared with one process: router training under DDP (gloo; the text and the
``self`` router, the zero-shot callback's one-time scoring shared by the ranks), and the worker processes of
``pudding candidates`` and ``pudding eval`` (``--processes``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_dataset, tiny_encoder, write_piqa
from test_router_zeroshot import write_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    return {"encoder": tiny_encoder(root / "bert"), "dataset": tiny_dataset(root / "data", n=60), "root": root}


def fit(setup: dict, out: Path, devices: int, *extra: str, dataset: str = "dataset") -> subprocess.CompletedProcess:
    """``pudding-train fit`` in a fresh process, as a user runs it (DDP re-launches the other ranks from its argv)."""
    args = ["--data.datasets", setup[dataset], "--model.encoder", setup["encoder"], "--model.max_length", "64"]
    args += ["--data.batch_size", "4", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices)]
    args += ["--trainer.strategy", "ddp" if devices > 1 else "auto", "--trainer.max_epochs", "1"]
    args += ["--trainer.logger.init_args.save_dir", out / "logs", "--bundle", out / "bundle"]
    args += [*extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PUDDING_DEBUG": "1", "PYTHONPATH": pythonpath()}
    command = [sys.executable, "-m", "pudding.cli.train", "fit", *map(str, args)]
    return subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=600)


def pythonpath() -> str:
    """This checkout first on the path of a process started in another folder (a relative PYTHONPATH entry such as
    ``.`` would point there, and the installed copy would run instead of the code under test)."""
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e and Path(e).is_absolute()]
    return os.pathsep.join([str(REPO), *entries])


def val_metrics(out: Path) -> dict[str, float]:
    """The last value of every ``val/`` and ``ref/`` scalar a fit logged to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = (out / "logs" / "tensorboard").glob("version_*")
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    kept = ("val/", "val_by_task/", "ref/", "zeroshot")
    tags = [t for t in events.Tags()["scalars"] if t.startswith(kept) and t != "val/loss"]
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


# ------------------------------------------------------------------------------------------------ the self router
SELF_SETS = [[1, 4], [2, 3], [2, 5], [3, 4]]  # none omits block 0: the self router reads it


@pytest.fixture(scope="module")
def self_setup(setup, tiny_llm_dir) -> dict:
    root = setup["root"]
    data = write_piqa(write_data(root / "tasks"))
    return {**setup, "llm": tiny_llm_dir, "tasks": data, "self_data": tiny_dataset(root / "self", n=60, sets=SELF_SETS)}


def zeroshot_config(setup: dict, out: Path) -> Path:
    """Callbacks: the regret checkpoint and the zero-shot callback on boolq and piqa in chunks of 4 items (6 chunks
    to share), its cache and shards in ``out``'s own folders (each fit scores them itself)."""
    llm = {"base": str(setup["llm"]), "dtype": "float32", "cache_dir": str(setup["root"] / "models")}
    zeroshot = {
        "tasks": ["boolq", "piqa"],
        "limit": 12,
        "data_dir": str(setup["tasks"]),
        "llm": llm,
        "cache_dir": str(out / "zeroshot_cache"),
        "outcomes_dir": str(out / "outcomes"),
        "router_fraction": 0.5,
        "split_seed": 0,
        "chunk_items": 4,
    }
    callbacks = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/regret"}},
        {"class_path": "pudding.router.zeroshot.ZeroShotEvalCallback", "init_args": zeroshot},
    ]
    path = out / "callbacks.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def test_self_router_fits_in_two_processes_like_one_with_the_zero_shot_scoring_shared(self_setup, tmp_path):
    """The ``self`` router (features from the tiny LLM's first block) validates alike in one and two processes, and
    the zero-shot callback's one-time scoring is shared: each rank scores its own chunks (no rank waits in a
    collective while another scores) and both routed accuracies and references equal one process's."""
    llm = ["--data.llm.base", self_setup["llm"], "--data.llm.dtype", "float32"]
    llm += ["--data.llm.cache_dir", self_setup["root"] / "models"]
    head = ["--model.encoder", "self", "--model.pooling", "mean_last", "--model.head_hidden", "[16]"]
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"p{devices}"
        out.mkdir()
        extra = ["--config", zeroshot_config(self_setup, out), *head, *llm, "--model.lr", "1e-30"]
        runs[devices] = fit(self_setup, out, devices, *extra, dataset="self_data")
        assert runs[devices].returncode == 0, runs[devices].stderr[-3000:]
    printed = runs[2].stdout + runs[2].stderr
    shares = {rank: int(n) for rank, n in re.findall(r"\[zeroshot\] rank (\d): (\d+) chunks of its share", printed)}
    assert set(shares) == {"0", "1"} and min(shares.values()) >= 2 and sum(shares.values()) == 6, printed[-3000:]
    single, double = val_metrics(tmp_path / "p1"), val_metrics(tmp_path / "p2")
    assert "zeroshot/average" in single and "zeroshot_ref/oracle" in single and "val_by_task/piqa/regret" in single
    assert set(single) == set(double)
    for tag, value in single.items():
        assert double[tag] == pytest.approx(value, abs=1e-5), tag


# ------------------------------------------------------------------------------- pudding candidates / eval --processes
@pytest.fixture
def one_thread():
    """One torch thread in this process while a test runs: what each of two workers gets on this 2-core machine, so
    the one-process run does its arithmetic with the same kernels' thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TASKS, LOSSES = ("arc_easy", "boolq", "piqa"), ("likelihood", "margin")


def command(name: str, setup: dict, out: Path, processes: int, *extra: str) -> None:
    """``pudding <name>`` on the tiny LLM and the three tasks' files, in this process (the workers are spawned)."""
    from pudding.cli import main as pudding

    args = [name, "--base", str(setup["llm"]), "--data_dir", str(setup["tasks"]), "--dtype", "float32"]
    args += ["--tasks", ",".join(TASKS), "--router_fraction", "0.5", "--output", str(out)]
    pudding([*args, "--processes", str(processes), *map(str, extra)])


def test_candidates_in_two_processes_write_the_file_of_one(self_setup, tmp_path, one_thread, capfd):
    """Six runs (three tasks × two losses) dealt to two workers, each writing its run files; the first merges them:
    the candidate file is byte for byte the one process's, and each worker searched some of the runs."""
    for processes in (1, 2):
        capfd.readouterr()
        out = tmp_path / f"c{processes}.yaml"
        command("candidates", self_setup, out, processes, "--num_omit", 2, "--num_samples", 8)
    searched = re.findall(r"\[worker (\d)/2\] \[\d/6 (\w+/\w+)\] done", capfd.readouterr().out)
    assert sorted(name for _, name in searched) == sorted(f"{t}/{loss}" for t in TASKS for loss in LOSSES)
    assert {worker for worker, _ in searched} == {"1", "2"}  # each worker searched some of the six runs
    one, two = (tmp_path / "c1.yaml").read_bytes(), (tmp_path / "c2.yaml").read_bytes()
    assert one == two and b"piqa" in one and b"boolq" in one
    assert len(list((tmp_path / "c2.yaml.runs").glob("*.json"))) == 6


def test_eval_in_two_processes_gives_the_rows_of_one(self_setup, tmp_path, one_thread):
    """Dense and two candidates on three tasks, in chunks of 128 items: the three (task, chunk) units dealt to two
    workers through a shard folder; every row, average and setting of the results JSON equals one process's."""
    from test_cli import write_candidates

    cands = write_candidates(tmp_path / "cands.yaml", self_setup["llm"])
    for processes in (1, 2):
        command(
            "eval", self_setup, tmp_path / f"e{processes}.json", processes, "--candidates", cands, "--progress", "false"
        )
    one, two = (json.loads((tmp_path / f"e{n}.json").read_text()) for n in (1, 2))
    assert list(one["results"]) == ["dense", "piqa/likelihood", "piqa/margin"]
    assert {t: r["n"] for t, r in one["results"]["dense"].items()} == {"arc_easy": 24, "boolq": 26, "piqa": 9}
    for part in ("results", "average", "omission_sets", "blocks_kept", "kinds"):
        assert one[part] == two[part], part
    assert (one["config"]["processes"], two["config"]["processes"], two["config"]["devices"]) == (1, 2, ["cpu"] * 2)
    assert {k: v for k, v in one["config"].items() if k != "processes"} == {
        k: v for k, v in two["config"].items() if k not in ("processes", "devices")
    }
