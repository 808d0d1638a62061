"""Throughput of router-dataset scoring, per task, and the full-build time it implies.

    python benchmarks/dataset_build.py --candidates checkpoints/candidates.yaml --data_dir ../shared/data \
        --dtypes float32,bfloat16 --items 128

Scores the first ``items`` router items of each task exactly as ``pudding dataset`` does (same work units, same
:func:`score_candidates`), without Lightning around it, times every unit, and extrapolates to all router items of
each task. With ``--compare_reuse true`` it also times the same units without the hidden-state prefix reuse.
"""

from __future__ import annotations

import json
import time

import torch
from jsonargparse import CLI

from pudding.core.candidates import load_candidates
from pudding.core.models.loading import load_base
from pudding.core.options import as_str_list
from pudding.core.scoring import Scorer
from pudding.core.tasks import DEFAULT_TASKS, DataOptions, router_items
from pudding.routerdata.predict import score_candidates
from pudding.routerdata.units import ScoringDataModule

ALL_TASKS = ",".join(DEFAULT_TASKS)


def run(
    candidates: str = "checkpoints/candidates.yaml",
    base: str | None = None,
    data_dir: str | None = None,
    tasks: list[str] | str = ALL_TASKS,
    dtypes: list[str] | str = "float32,bfloat16",
    items: int = 128,
    items_per_batch: int = 64,
    batch_tokens: int = 1024,
    compare_reuse: bool = False,
    threads: int | None = None,
    output: str | None = None,
) -> dict:
    """Time scoring on real items and extrapolate the full build.

    Args:
        candidates: Candidate file (K omission sets).
        base: Base model; None takes the candidate file's base_model.
        data_dir: Benchmark files (layout of ../shared/data).
        tasks: Tasks to time.
        dtypes: Model dtypes to time, comma-separated.
        items: Router items timed per task (the first ones in source order).
        items_per_batch: Work-unit size, as in ``pudding dataset``.
        batch_tokens: Token budget per forward pass, as in ``pudding dataset``.
        compare_reuse: Also time without hidden-state prefix reuse.
        threads: torch CPU threads (None: torch's default).
        output: Write the results as JSON here.
    """
    if threads:
        torch.set_num_threads(threads)
    cset = load_candidates(candidates)
    opts = DataOptions(data_dir=data_dir)
    task_names = as_str_list(tasks, "tasks")
    full = {t: len(router_items(t, opts)[0]) for t in task_names}
    results: dict = {"K": len(cset), "threads": torch.get_num_threads(), "router_items": full, "runs": {}}
    for dtype in as_str_list(dtypes, "dtypes"):
        lm = load_base(base or cset.base_model, dtype=dtype, device="cpu")
        scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=batch_tokens)
        for reuse in (True, False) if compare_reuse else (True,):
            per_task = {}
            for task in task_names:
                data = ScoringDataModule(tasks=[task], limit=items, data_dir=data_dir, items_per_batch=items_per_batch)
                data.load()
                started = time.perf_counter()
                for chunk in data.chunks:
                    unit = data.unit(chunk)
                    requests = list(zip(unit["context"], unit["continuation"], strict=True))
                    score_candidates(scorer, requests, cset.omission_sets, reuse_prefix=reuse)
                seconds = time.perf_counter() - started
                rate = data.num_items / seconds
                per_task[task] = {"items": data.num_items, "seconds": round(seconds, 2), "items_per_s": round(rate, 2)}
                per_task[task]["full_build_min"] = round(full[task] / rate / 60, 1)
                minutes = full[task] / rate / 60
                print(f"{dtype:9} reuse={reuse!s:5} {task:14} {rate:7.2f} items/s  full: {minutes:6.1f} min")
            total = sum(v["full_build_min"] for v in per_task.values())
            results["runs"][f"{dtype}/reuse={reuse}"] = {"per_task": per_task, "full_build_min": round(total, 1)}
            print(f"{dtype:9} reuse={reuse!s:5} full build of {sum(full.values())} items: about {total:.0f} min")
    if output:
        with open(output, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    CLI(run, as_positional=False)
