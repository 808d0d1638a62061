"""Fault injection: SIGKILL the long jobs at seeded random points, rerun, compare with an uninterrupted run.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py --kills 3 --output benchmarks/results/fault_injection.json

Each job runs on a tiny configuration in a temporary folder (a random 12-block Llama with the default model's
tokenizer, a random 2-layer BERT router with the default router's tokenizer, a few real items from
``../shared/data``), as a real subprocess of the real command:

* ``candidates``: ``pudding candidates`` (greedy search; resumes from ``work_dir``). Equal: the same candidate file,
  byte for byte.
* ``dataset``: ``pudding dataset`` over that candidate file (resumes from its shards). Equal: the same rows (task,
  item_id, router_text) and bit-identical score vectors, and the same metadata.
* ``train``: ``pudding-train fit ... --ckpt_path last`` over that dataset (resumes from the newest ``last.ckpt``).
  Equal: bit-identical router weights in the final ``last.ckpt`` and in the exported bundle, and the same logged
  validation metrics of the final epoch.

A job is killed ``--kills`` times in a row (each at a uniform random time in ``[--min_s, the uninterrupted run's
duration]`` after its start, seeded), then run to the end; a kill that lands after the run finished counts as a
miss. After the final run the script also checks that no temporary or half-written file is left beside the
outputs. Results (one row per job) are printed and written as JSON; docs/errors.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test helpers (tests/support) serve the benchmarks too
DATA = REPO.parent / "shared" / "data"
JOBS = ("candidates", "dataset", "train")


# ------------------------------------------------------------------------------------------------ tiny models
def make_tiny_llm(folder: Path, num_layers: int = 12, hidden: int = 64) -> Path:
    """A random Llama with the default base model's tokenizer (read from the de-quantised GGUF cache)."""
    from support.tiny import save_tiny_llm
    from transformers import AutoTokenizer

    from pudding.core.models.loading import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source("default", REPO / "checkpoints" / "base_models"))
    return save_tiny_llm(folder, tokenizer, num_layers=num_layers, hidden=hidden)


# ------------------------------------------------------------------------------------------------ the commands
def flags(options: dict) -> list[str]:
    """``{"base": path, "limit": 16}`` as command-line words: ``["--base", "<path>", "--limit", "16"]``."""
    return [word for name, value in options.items() for word in (f"--{name}", str(value))]


def tiny_llm(inputs: dict) -> dict:
    """The base model options of the jobs that load the tiny LLM."""
    return {"base": inputs["llm"], "dtype": "float32"}


def command(job: str, root: Path, out: Path, inputs: dict, size: str = "script") -> list[str]:
    """The command line of ``job`` writing under ``out``; ``inputs`` holds the tiny models and upstream outputs."""
    py = [sys.executable, "-m"]
    small = size == "test"
    if job == "candidates":
        options = {
            **tiny_llm(inputs),
            "device": "cpu",
            "data_dir": DATA,
            "tasks": "piqa" if small else "piqa,boolq,arc_easy",
            "losses": "likelihood,margin",
            "num_omit": 3 if small else 5,
            "num_samples": 4 if small else 16,
            "output": out / "candidates.yaml",
            "work_dir": out / "search_work",
        }
        return [*py, "pudding.cli", "candidates", *flags(options)]
    if job == "dataset":
        options = {
            "candidates": inputs["candidates"],
            **tiny_llm(inputs),
            "data_dir": DATA,
            "tasks": "piqa,boolq",
            "limit": 16 if small else 48,
            "items_per_batch": 4 if small else 8,
            "progress_every": -1,
            "output": out / "router_dataset",
        }
        return [*py, "pudding.cli", "dataset", *flags(options)]
    if job == "train":
        options = {
            "data.datasets": inputs["dataset"],
            "model.encoder": inputs["encoder"],
            "model.max_length": 64,
            "model.warmup_steps": 2,
            "data.batch_size": 8,
            "trainer.max_epochs": 2 if small else 6,
            "trainer.logger.init_args.save_dir": out / "router",
            "bundle": out / "bundle",
            "ckpt_path": "last",
        }
        return [*py, "pudding.cli.train", "fit", *flags(options)]
    raise ValueError(f"unknown job {job!r}")


def environment() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PUDDING_DEBUG", None)
    return env


def run_to_end(cmd: list[str], cwd: Path) -> float:
    """Run ``cmd`` to completion (it must succeed); returns its wall time in seconds."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=environment(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def kill_at(cmd: list[str], cwd: Path, after_s: float) -> bool:
    """Start ``cmd`` and SIGKILL it ``after_s`` seconds later; False when it had already finished (a miss)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after_s)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


# ------------------------------------------------------------------------------------------------ comparisons
def resumable_state(job: str, out: Path) -> dict:
    """What a rerun can resume from after a kill: finished and partial search runs, dataset shards, or the epoch
    of the newest ``last.ckpt`` (None: the kill came before the first checkpoint, so the rerun starts over)."""
    state: dict = {"state_files": len(list(out.rglob("*")))}
    if job == "candidates":
        runs = list((out / "search_work").glob("*.json"))
        state["finished_runs"] = sum(".partial" not in p.name for p in runs)
        state["partial_runs"] = sum(".partial" in p.name for p in runs)
    elif job == "dataset":
        state["shards"] = len(list((out / "router_dataset.work").glob("*/shards/*")))
    elif job == "train":
        import torch

        found = sorted((out / "router").glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        ckpt = torch.load(found[-1], map_location="cpu", weights_only=False) if found else None
        state["last_ckpt_epoch"] = None if ckpt is None else ckpt["epoch"]
    return state


def leftovers(out: Path) -> list[str]:
    """Temporary or half-written files the atomic writers would leave if they were interrupted mid-write."""
    names = ("*.tmp*", ".*.tmp-*", ".*.old-*", "*.partial*")
    return sorted(str(p.relative_to(out)) for pattern in names for p in out.rglob(pattern))


def compare(job: str, ref: Path, got: Path) -> dict:
    """What equality means per job (see the module docstring); returns {'equal': bool, ...details}."""
    if job == "candidates":
        a, b = (ref / "candidates.yaml").read_bytes(), (got / "candidates.yaml").read_bytes()
        return {"equal": a == b, "what": "candidate file bytes", "bytes": len(a)}
    if job == "dataset":
        from pudding.routerdata.dataset import load_router_dataset

        (da, ma), (db, mb) = (load_router_dataset(p / "router_dataset") for p in (ref, got))
        ta, tb = da.to_dict(), db.to_dict()
        same_rows = all(ta[k] == tb[k] for k in ("task", "item_id", "router_text"))
        sa, sb = np.asarray(ta["scores"]), np.asarray(tb["scores"])
        same_scores = sa.shape == sb.shape and np.array_equal(sa, sb, equal_nan=True)
        same_dense = np.array_equal(np.asarray(ta["dense_score"]), np.asarray(tb["dense_score"]), equal_nan=True)
        skip = {"seconds", "created", "build_seconds", "output", "work_dir", "timing"}
        meta_diff = sorted(k for k in set(ma) | set(mb) if k not in skip and ma.get(k) != mb.get(k))
        return {
            "equal": same_rows and same_scores and same_dense,
            "what": "rows, score vectors (bit-identical), dense scores",
            "rows": len(ta["item_id"]),
            "metadata_fields_differing": meta_diff,
        }
    if job == "train":
        import torch
        from safetensors.torch import load_file

        def last(out: Path) -> dict:
            found = sorted((out / "router").glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            return torch.load(found[-1], map_location="cpu", weights_only=False)

        ca, cb = last(ref), last(got)
        sa, sb = ca["state_dict"], cb["state_dict"]
        same_last = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        wa, wb = (load_file(str(p / "bundle" / "router.safetensors")) for p in (ref, got))
        same_bundle = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        cba = ca["callbacks"]
        best = [v.get("best_model_score") for k, v in cba.items() if "ModelCheckpoint" in k]
        best_b = [v.get("best_model_score") for k, v in cb["callbacks"].items() if "ModelCheckpoint" in k]
        return {
            "equal": same_last and same_bundle and best == best_b,
            "what": "last.ckpt weights, bundle weights (bit-identical), best val/regret",
            "epochs": ca["epoch"] + 1,
            "global_step": ca["global_step"],
            "best_val_regret": [None if v is None else float(v) for v in best],
        }
    raise ValueError(job)


# ------------------------------------------------------------------------------------------------ one job
def run_job(job: str, root: Path, inputs: dict, kills: int, rng: random.Random, min_s: float, size: str) -> dict:
    """Uninterrupted reference run, then ``kills`` seeded SIGKILLs in a row and a final run; compare."""
    ref, got = root / f"{job}-reference", root / f"{job}-killed"
    ref.mkdir()
    got.mkdir()
    reference_s = run_to_end(command(job, root, ref, inputs, size), ref)
    records = []
    for _ in range(kills):
        at = rng.uniform(max(min(min_s, reference_s * 0.5), reference_s * 0.3), reference_s * 0.85)
        landed = kill_at(command(job, root, got, inputs, size), got, at)
        records.append({"after_s": round(at, 2), "killed": landed, **resumable_state(job, got)})
    done = {"candidates": "candidates.yaml", "dataset": "router_dataset", "train": "bundle"}[job]
    # a kill that lands after the output is in place (while the process exits) leaves a finished job: no rerun
    final_s = run_to_end(command(job, root, got, inputs, size), got) if not (got / done).exists() else 0.0
    result = {
        "job": job,
        "reference_s": round(reference_s, 1),
        "final_rerun_s": round(final_s, 1),
        "kills": records,
        "kills_landed": sum(r["killed"] for r in records),
        "leftovers": leftovers(got),
        **compare(job, ref, got),
    }
    result["equal"] = result["equal"] and not result["leftovers"]
    return result


def prepare(root: Path, size: str = "script") -> dict:
    from support.tiny import save_tiny_encoder

    return {
        "llm": make_tiny_llm(root / "llm", num_layers=6 if size == "test" else 12),
        "encoder": save_tiny_encoder(root / "encoder"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated subset of candidates,dataset,train")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs in a row before the final run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--min_s", type=float, default=6.0, help="earliest kill (s; imports take a few seconds)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    opts = parser.parse_args(argv)
    jobs = [j for j in opts.jobs.split(",") if j]
    rng = random.Random(opts.seed)
    tmp = None
    if opts.keep:
        root = Path(opts.keep)
        root.mkdir(parents=True, exist_ok=False)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="pudding-faults-")
        root = Path(tmp.name)
    try:
        inputs = prepare(root)
        results = []
        for job in jobs:
            if job == "dataset" and "candidates" not in inputs:
                inputs["candidates"] = root / "candidates-reference" / "candidates.yaml"
            result = run_job(job, root, inputs, opts.kills, rng, opts.min_s, "script")
            results.append(result)
            print(json.dumps(result), flush=True)
            if job == "candidates":
                inputs["candidates"] = root / "candidates-reference" / "candidates.yaml"
            if job == "dataset":
                inputs["dataset"] = root / "dataset-reference" / "router_dataset"
    finally:
        if tmp is not None:
            tmp.cleanup()
    threads = os.environ.get("OMP_NUM_THREADS")
    report = {"kills_per_job": opts.kills, "seed": opts.seed, "omp_threads": threads, "results": results}
    print(f"{'job':<12}{'reference s':>12}{'kills landed':>14}{'equal':>8}")
    for r in results:
        print(f"{r['job']:<12}{r['reference_s']:>12}{r['kills_landed']:>10}/{len(r['kills'])}{str(r['equal']):>8}")
    if opts.output:
        Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.output).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
