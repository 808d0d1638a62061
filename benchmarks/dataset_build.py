"""Throughput of router-dataset scoring, per task, and the full-build time it implies.

    python benchmarks/dataset_build.py --candidates checkpoints/candidates.yaml --data_dir ../shared/data \
        --dtypes float32,bfloat16 --items 128

Scores the first ``items`` router items of each task exactly as ``pudding dataset`` does (same work units, same
:func:`score_candidates`), without Lightning around it, times every unit, and extrapolates to all router items of
each task. With ``--compare_reuse true`` it also times the same units without the hidden-state prefix reuse.

With ``--all_choices true`` every unit is scored as ``pudding dataset --all_choices true`` scores it: the gold pass
(what a gold-only build does, timed on its own) and then the pass over the other answer choices with the posterior
and correctness columns (:func:`~pudding.routerdata.predict.run_sets`, :func:`~pudding.routerdata.predict.
choice_columns`); both builds' times come from the same run, so machine load hits them alike:

    python benchmarks/dataset_build.py --candidates checkpoints/release/candidates.yaml --data_dir ../shared/data \
        --dtypes float32 --items 30 --all_choices true --output benchmarks/results/dataset_choices.json
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from jsonargparse import CLI

from pudding.core.candidates import load_candidates
from pudding.core.models.loading import load_base
from pudding.core.options import as_str_list
from pudding.core.scoring import Scorer
from pudding.core.tasks import DEFAULT_TASKS, DataOptions, router_items
from pudding.routerdata.predict import choice_columns, other_requests, run_sets, score_candidates
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
    all_choices: bool = False,
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
        all_choices: Time the all-choice build beside the gold-only one (same units, same run).
        output: Write the results as JSON here.
    """
    if threads:
        torch.set_num_threads(threads)
    cset = load_candidates(candidates)
    opts = DataOptions(data_dir=data_dir)
    task_names = as_str_list(tasks, "tasks")
    full = {t: len(router_items(t, opts)[0]) for t in task_names}
    results: dict = {
        "K": len(cset),
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "router_items": full,
        "runs": {},
    }
    if all_choices:
        results["all_choices"] = choices_runs(cset, base, data_dir, task_names, dtypes, items, items_per_batch, full)
        results["load_average_end"] = os.getloadavg()[0]
        lm = load_base(base or cset.base_model, dtype="float32", device="cpu")
        scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=batch_tokens)
        results["padded_tokens"] = padded_tokens(scorer, data_dir, task_names, items, items_per_batch)
        results["estimate"] = estimate(results)
        if output:
            with open(output, "w") as fh:
                json.dump(results, fh, indent=2)
        return results
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


def machine() -> dict:
    """CPU model, whether it has AMX (bfloat16 is fast only there) and the load average when the run starts."""
    name, flags = platform.processor() or "?", ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line for line in info.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {"cpu": name, "cores": os.cpu_count(), "amx": "amx_bf16" in flags, "load_average": os.getloadavg()[0]}


def choices_runs(cset, base, data_dir, task_names, dtypes, items, items_per_batch, full) -> dict:
    """Per dtype and task: wall and CPU seconds of the gold pass (the gold-only build) and of the all-choice build
    (gold pass, then the other choices and the posterior/correctness columns), timed unit by unit, and the full
    builds they imply for one process. On a shared machine wall time follows the load; with one thread the CPU time
    hardly does, and the ratio of the two builds is measured on the same units either way."""
    runs = {}
    for dtype in as_str_list(dtypes, "dtypes"):
        lm = load_base(base or cset.base_model, dtype=dtype, device="cpu")
        scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=1024)
        per_task, sets = {}, cset.omission_sets
        for task in task_names:
            data = ScoringDataModule(tasks=[task], limit=items, data_dir=data_dir, items_per_batch=items_per_batch)
            data.load()
            wall, cpu = [0.0, 0.0], [0.0, 0.0]  # gold pass, other choices
            requests = {"gold": 0, "other": 0}
            for chunk in data.chunks:
                unit = data.unit(chunk)
                gold = list(zip(unit["context"], unit["continuation"], strict=True))
                others = other_requests(unit)
                clocks = [(time.perf_counter(), time.process_time())]
                dense, per_set = run_sets(scorer, gold, sets)
                clocks.append((time.perf_counter(), time.process_time()))
                other_dense, other_sets = run_sets(scorer, others, sets)
                choice_columns(unit, [dense, *per_set], [other_dense, *other_sets])
                clocks.append((time.perf_counter(), time.process_time()))
                for part in (0, 1):
                    wall[part] += clocks[part + 1][0] - clocks[part][0]
                    cpu[part] += clocks[part + 1][1] - clocks[part][1]
                requests["gold"] += len(gold)
                requests["other"] += len(others)
            n = data.num_items
            row = {"items": n, "requests": requests}
            for clock, (gold_s, other_s) in (("wall", wall), ("cpu", cpu)):
                row[f"gold_only_{clock}_s"] = round(gold_s, 2)
                row[f"all_choices_{clock}_s"] = round(gold_s + other_s, 2)
                row[f"ratio_{clock}"] = round((gold_s + other_s) / gold_s, 3)
                row[f"full_gold_only_{clock}_min"] = round(full[task] * gold_s / n / 60, 1)
                row[f"full_all_choices_{clock}_min"] = round(full[task] * (gold_s + other_s) / n / 60, 1)
            per_task[task] = row
            print(
                f"{dtype:9} {task:14} cpu s per item: gold only {cpu[0] / n:6.3f}, all choices {sum(cpu) / n:6.3f} "
                f"(x{row['ratio_cpu']:.2f}; wall x{row['ratio_wall']:.2f}); full, one process: "
                f"{row['full_gold_only_cpu_min']:6.1f} -> {row['full_all_choices_cpu_min']:6.1f} min of CPU"
            )
        totals = {}
        for clock in ("wall", "cpu"):
            for build in ("gold_only", "all_choices"):
                name = f"full_{build}_{clock}_min"
                totals[name] = round(sum(v[name] for v in per_task.values()), 1)
            totals[f"ratio_{clock}"] = round(
                totals[f"full_all_choices_{clock}_min"] / totals[f"full_gold_only_{clock}_min"], 3
            )
        runs[dtype] = {"per_task": per_task, **totals}
        print(f"{dtype:9} full build of {sum(full.values())} items, one process: {totals}")
    return runs


def padded_tokens(scorer: Scorer, data_dir, task_names, items: int, items_per_batch: int) -> dict:
    """Padded tokens each pass feeds the model (gold, the other choices, and all choices packed in one pass, the
    cheaper design not taken: it would change the gold scores' rounding), on the timed items and on all router items
    of each task: scoring time follows them, so they carry the timed slice to the full build."""
    out = {}
    for task in task_names:
        for limit in (items, None):
            data = ScoringDataModule(tasks=[task], limit=limit, data_dir=data_dir, items_per_batch=items_per_batch)
            data.load()
            counts = {"gold": 0, "other": 0, "packed": 0}
            for chunk in data.chunks:
                unit = data.unit(chunk)
                passes = {
                    "gold": list(zip(unit["context"], unit["continuation"], strict=True)),
                    "other": other_requests(unit),
                    "packed": [tuple(r) for requests in unit["requests"] for r in requests],
                }
                for name, requests in passes.items():
                    if requests:
                        counts[name] += sum(b.input_ids.numel() for b in scorer.prepare(requests).batches)
            out[f"{task}/{'all' if limit is None else limit}"] = {"items": data.num_items, **counts}
    return out


def estimate(results: dict) -> dict:
    """The full builds, per task: the timed slice's CPU seconds per padded token of each pass times the full set's
    padded tokens (the first items of a task can be shorter than its average: HellaSwag's are)."""
    tokens, out = results["padded_tokens"], {}
    for dtype, run in results["all_choices"].items():
        per_task, total = {}, {"gold_only": 0.0, "all_choices": 0.0, "packed": 0.0}
        for task, row in run["per_task"].items():
            part, whole = tokens[f"{task}/{row['items']}"], tokens[f"{task}/all"]
            gold_s, other_s = row["gold_only_cpu_s"], row["all_choices_cpu_s"] - row["gold_only_cpu_s"]
            gold = gold_s / part["gold"] * whole["gold"] / 60
            other = other_s / max(part["other"], 1) * whole["other"] / 60
            packed = gold_s / part["gold"] * whole["packed"] / 60
            per_task[task] = {"gold_only_min": round(gold, 1), "all_choices_min": round(gold + other, 1)}
            per_task[task]["packed_min"] = round(packed, 1)
            for name, value in (("gold_only", gold), ("all_choices", gold + other), ("packed", packed)):
                total[name] += value
        out[dtype] = {
            "per_task_cpu_min": per_task,
            **{f"{k}_cpu_min": round(v, 1) for k, v in total.items()},
            "ratio": round(total["all_choices"] / total["gold_only"], 3),
            "ratio_packed": round(total["packed"] / total["gold_only"], 3),
        }
    return out


if __name__ == "__main__":
    CLI(run, as_positional=False)
