"""``pudding compare``: routed pruning against every baseline on the tasks' evaluation items, in one table.

The LLM work is one :func:`pudding.core.outcomes.compute_outcomes` pass per task over the dense model, every candidate
and the SLEB set (block prefixes shared; shards on disk, so a killed run continues where it stopped); the SLEB set
itself comes from the same greedy search on perplexity (:mod:`pudding.search.sleb`). The router then routes each
item's prompt once, and every row of the table is a lookup (:mod:`pudding.core.results`), with PuDDing minus every
other row and its paired bootstrap interval (:data:`BOOTSTRAP`).

Under a compute budget (``budget``, :mod:`pudding.router.budget`) the router's predictions per item are computed
once and :meth:`~pudding.router.model.Router.choose` turns them into choices; routing the same predictions
under another budget (``router.set_budget(b)`` then ``router.choose(preds)``) is a lookup as well, which is all the
budget sweep (:mod:`pudding.routed.sweep`) needs; :func:`prepare_bundle` is the shared, once-only work, and
:class:`BundleSettings` the settings both share. When the
router's choices differ in depth the report has ``routing_depths`` (per task, items per number of blocks kept) and
``config`` records the budget and its λ. With candidates of several depths, the table has the best static candidate
and SLEB at each depth.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pudding.core.candidates import CandidateSet
from pudding.core.errors import OptionError
from pudding.core.io import print_line
from pudding.core.llm import LLMOptions
from pudding.core.models.adapters import get_layers
from pudding.core.options import check_positive
from pudding.core.outcomes import DEFAULT_OUTCOMES_DIR, Outcomes, compute_outcomes, model_key
from pudding.core.outcomes_progress import outcomes_saver
from pudding.core.results import (
    build_rows,
    depth_histogram,
    depth_lines,
    paired_intervals,
    routing_histogram,
    rows_report,
    text_table,
    write_results,
)
from pudding.core.scoring import Scorer
from pudding.core.tasks import DataOptions, TaskDataError, eval_items
from pudding.router.budget import lambda_text
from pudding.router.bundle import check_bundle, check_bundle_files, resolve_bundle
from pudding.router.static import best_static_by_depth, best_static_by_task
from pudding.routerdata.dataset import RouterDataError, load_router_dataset
from pudding.search.sleb import sleb_search, sleb_sets, sleb_texts


def check_split(meta: dict, options: DataOptions) -> None:
    """Refuse evaluation items that could overlap the router's training data (other router_fraction/split_seed)."""
    for key in ("router_fraction", "split_seed"):
        trained = meta.get(key)
        if trained is not None and trained != getattr(options, key):
            raise OptionError(
                f"option {key}: the router was trained on data built with {key}={trained}, not {getattr(options, key)}"
                "; evaluating with another split would test on training items"
            )


BOOTSTRAP = {"resamples": 10_000, "seed": 0, "level": 0.95}
"""The intervals of a bundle's table: PuDDing minus every other row, paired and stratified by task
(:func:`pudding.core.results.paired_intervals`)."""


@dataclass
class BundleRun:
    """What every row and every point of a bundle's evaluation is looked up in: outcomes and router predictions.

    ``choice_sets`` / ``choice_names`` are the router's choices (the candidates, plus the dense model last when it is
    a choice); ``sleb`` is SLEB's omission set per candidate depth (empty without SLEB); ``preds[task]`` are the
    router's predictions [N, C] for that task's items, made once.
    """

    bundle: str
    tasks: list[str]
    cset: CandidateSet
    router: Any
    config: dict
    record: dict
    device: str
    base: str
    outcomes: dict[str, Outcomes]
    preds: dict[str, torch.Tensor]
    choice_names: list[str]
    choice_sets: list[tuple[int, ...]]
    batch_tokens: int
    """The scorer's tokens per batch (``auto`` resolved)."""
    sleb: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cset.candidates]

    @property
    def sets(self) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.cset.omission_sets]

    @property
    def depths_differ(self) -> bool:
        return len({len(s) for s in self.choice_sets}) > 1

    def choices(self) -> dict[str, list[int]]:
        """The router's choice per item of each task under its current rule (argmax, or its budget)."""
        return {task: self.router.choose(p).tolist() for task, p in self.preds.items()}

    def best_static_by_depth(self) -> tuple[dict[int, int], str]:
        """Per candidate depth, the best static candidate (index) and which router rows picked it.

        The bundle's ``best_static_by_depth`` (router-training rows, as ``best_static``); a bundle written before it
        was recorded: the single depth's ``best_static``, or with several depths the best per depth on the
        calibration rows (the router's validation rows: router data too, never evaluation items).
        """
        recorded = getattr(self.router, "best_static_by_depth", None) or {}
        depths = self.cset.depths
        if set(recorded) >= set(depths):
            return {d: int(recorded[d]) for d in depths}, "router training rows"
        if len(depths) == 1:
            return {depths[0]: int(self.config["best_static"])}, "router training rows"
        calibration = getattr(self.router, "calibration", None)
        if calibration is None:
            raise OptionError(
                f"router bundle {self.bundle}: it records no best static candidate per depth and has no calibration "
                "rows to pick them on; re-export it (pudding-train export CHECKPOINT --output DIR)"
            )
        k = len(self.cset)
        return best_static_by_depth(calibration.scores[:, :k].numpy(), self.sets), "router validation rows"

    def task_pick(self) -> tuple[dict[str, int], str] | None:
        """Per task, the candidate (index) with the best mean score on that task's router data, and where it was
        read: the bundle's ``best_static_by_task``, else the router datasets its metadata names (when they are at
        hand and were built from the same candidate file); None when neither is (the row is then left out)."""
        recorded = getattr(self.router, "best_static_by_task", None) or {}
        if set(recorded) >= set(self.tasks):
            return {t: int(recorded[t]) for t in self.tasks}, "the bundle (every router-data row of the task)"
        meta = json.loads((Path(self.bundle) / "dataset_meta.json").read_text())
        scores, tasks = [], []
        for path in meta.get("datasets") or []:
            try:
                dataset, found = load_router_dataset(path)
            except RouterDataError:
                return None
            if found.get("candidates_sha256") != meta.get("candidates_sha256"):
                return None
            scores.append(np.asarray(dataset["scores"], dtype=np.float64))
            tasks += list(dataset["task"])
        if not scores:
            return None
        picks = best_static_by_task(np.concatenate(scores), tasks)
        if not set(picks) >= set(self.tasks):
            return None
        return {t: picks[t] for t in self.tasks}, f"the router data ({', '.join(meta['datasets'])})"


@dataclass
class BundleSettings(LLMOptions):
    """How a bundle's evaluation runs: the settings :func:`evaluate_bundle` and
    :func:`pudding.routed.sweep.sweep_bundle` share (a new one is added here, once), beside the LLM's own
    (:class:`~pudding.core.llm.LLMOptions`; ``base`` null: the bundle's base model).

    Both functions take one as ``settings`` and its fields as keyword arguments too (``limit=8, sleb=False``: they
    override ``settings``'s); ``pudding compare`` and ``pudding curve`` options are such settings.

    Args:
        limit: Evaluate only the first ``limit`` evaluation items of each task (None: all).
        outcomes_dir: Where per-item outcomes and the SLEB search are kept (a killed run resumes).
        outcomes_progress: An outcomes progress file (:mod:`pudding.core.outcomes_progress`; item ids and predicted
            choices only: no text, no gold labels): when it exists it seeds ``outcomes_dir`` before any scoring, and
            it is rewritten from ``outcomes_dir`` as chunks finish (at most every 5 minutes), after each task and
            after SLEB, so a killed run's finished chunks travel in one file.
        sleb: Add SLEB (one task-agnostic set per candidate depth from the greedy search on perplexity).
        sleb_samples: Texts per task pooled for SLEB's perplexity (router items, never evaluation items).
        corpus: A text file (blank-line separated paragraphs) for SLEB's perplexity instead of the pooled text.
    """

    limit: int | None = None
    outcomes_dir: str | Path = DEFAULT_OUTCOMES_DIR
    outcomes_progress: str | Path | None = None
    sleb: bool = True
    sleb_samples: int = 16
    corpus: str | None = None

    def check(self) -> None:
        check_positive(self.limit, "limit")
        check_positive(self.sleb_samples, "sleb_samples")
        if self.outcomes_progress is not None and Path(self.outcomes_progress).is_dir():
            raise OptionError(f"option outcomes_progress: {self.outcomes_progress} is a folder, give a file")

    @classmethod
    def resolve(cls, settings: BundleSettings | None, overrides: dict[str, Any]) -> BundleSettings:
        """``settings`` (None: the defaults) with the fields named in ``overrides`` replaced; an unknown name is a
        TypeError naming it."""
        return replace(settings or cls(), **overrides)


def check_bundle_inputs(bundle: str | Path, settings: BundleSettings) -> str:
    """What a bundle's evaluation needs, checked before any model loads: every file of the bundle, the SLEB corpus,
    and the base model's depth against the bundle's. Returns the base model's name (``settings.base``, else the
    bundle's)."""
    check_bundle_files(bundle)
    if settings.corpus is not None and not Path(settings.corpus).is_file():
        raise OptionError(f"option corpus: {settings.corpus} is not a file")
    base, _ = check_bundle(bundle, settings.base, settings.cache_dir)
    return base


def prepare_bundle(
    bundle: str,
    tasks: Sequence[str],
    options: DataOptions,
    settings: BundleSettings | None = None,
    budget: float | str | None = None,
    log: Callable[[str], None] = print_line,
) -> BundleRun:
    """All the LLM and router work of a bundle's evaluation, once: outcomes of the dense model, every candidate and
    SLEB at every candidate depth (one search to the deepest) on each task's evaluation items, and the router's
    predictions for those items. Arguments as :func:`evaluate_bundle`'s."""
    from pudding.core.candidates import load_candidates
    from pudding.router.bundle import load_bundle

    settings = settings or BundleSettings()
    bundle_dir = resolve_bundle(bundle)
    meta_path = bundle_dir / "dataset_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    check_split(meta, options)
    saver = None
    if settings.outcomes_progress is not None:
        saver = outcomes_saver(settings.outcomes_dir, settings.outcomes_progress, log=log)
        saver.seed()  # a bad file fails here, before any model loads
    items_by_task = {}
    for task in tasks:
        items, note = eval_items(task, options)
        log(note)
        items_by_task[task] = items[: settings.limit] if settings.limit else items
        if not items_by_task[task]:
            raise TaskDataError(f"{task}: no evaluation items ({note})")

    cset = load_candidates(bundle_dir / "candidates.yaml")
    lm = settings.load(cset.base_model)
    router, config = load_bundle(bundle_dir, base_num_blocks=len(get_layers(lm.model)), lm=lm, budget=budget)
    scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=settings.batch_tokens)
    record = lm.dtype_choice.record()
    key = model_key(lm.name, record["dtype"], lm.device.type)
    sets = [tuple(s) for s in cset.omission_sets]
    choice_names = list(router.choices.names)
    choice_sets = list(router.choices.omission_sets)

    sleb_by_depth: dict[int, tuple[int, ...]] = {}
    if settings.sleb:
        corpus, sleb_dir = settings.corpus, Path(settings.outcomes_dir) / "sleb"
        texts = sleb_texts(tasks, options, settings.sleb_samples, corpus=corpus)
        log(f"SLEB baseline: greedy perplexity search on {len(texts)} texts ({corpus or 'pooled router text'})")

        def sleb_log(line: str) -> None:
            log(line)
            if saver is not None:
                saver.maybe_save()  # a long search's finished steps travel too

        result = sleb_search(scorer, texts, cset.num_omit, key, cache_dir=sleb_dir, log=sleb_log)
        sleb_by_depth = sleb_sets(result, cset.depths)
        if saver is not None:
            saver.save()

    outcomes = {}
    for task, items in items_by_task.items():
        wanted = [(), *sets, *sleb_by_depth.values()]

        def progress(done: int, total: int, scored: int, task: str = task) -> None:
            log(f"{task}: chunk {done}/{total} ({scored} sets scored, the rest from the cache)")
            if saver is not None:
                saver.maybe_save()

        outcomes[task] = compute_outcomes(scorer, items, wanted, key, settings.outcomes_dir, on_chunk=progress)
        if saver is not None:
            saver.save()

    preds = {task: router.predict_texts([item.router_text for item in items]) for task, items in items_by_task.items()}
    return BundleRun(
        bundle=str(bundle_dir),
        tasks=list(tasks),
        cset=cset,
        router=router,
        config=config,
        record=record,
        device=str(lm.device),
        base=lm.name,
        outcomes=outcomes,
        preds=preds,
        choice_names=choice_names,
        choice_sets=choice_sets,
        sleb=sleb_by_depth,
        batch_tokens=scorer.batch_tokens,
    )


def run_config(run: BundleRun, options: DataOptions, settings: BundleSettings, **extra) -> dict:
    """The ``config`` of a bundle evaluation's report: every option used, the dtype and why, then ``extra``."""
    return {
        "bundle": run.bundle,
        "base": run.base,
        "tasks": list(run.tasks),
        "limit": settings.limit,
        **run.record,
        "device": run.device,
        "num_blocks": run.cset.num_blocks,
        "batch_tokens": run.batch_tokens,
        "sleb": settings.sleb,
        "sleb_samples": settings.sleb_samples,
        "corpus": settings.corpus,
        "data_dir": options.data_dir,
        "router_fraction": options.router_fraction,
        "split_seed": options.split_seed,
        "average_metric": "acc",
        **extra,
    }


def evaluate_bundle(
    bundle: str,
    tasks: Sequence[str],
    options: DataOptions,
    settings: BundleSettings | None = None,
    *,
    output: str | Path = "checkpoints/eval_bundle/results",
    budget: float | str | None = None,
    log: Callable[[str], None] = print_line,
    **overrides: Any,
) -> dict:
    """Evaluate a router bundle and every baseline; write ``<output>.{json,md,csv,png}``, the per-item records
    ``<output>.items.parquet`` and the router's choices ``<output>.choices.parquet``; return the report.

    ``settings`` (:class:`BundleSettings`; None: its defaults) says how the evaluation runs; keyword arguments named
    as its fields override it (``evaluate_bundle(bundle, tasks, options, limit=8, sleb=False)``).

    The JSON has the shape of every results table (:func:`pudding.core.results.rows_report`: ``results[row][task]``,
    ``average[row]``, ``omission_sets[row]`` (None where the set varies per item), ``blocks_kept[row]``,
    ``kinds[row]``), ``config`` and ``seconds``, plus ``routing_histogram[task]`` and ``candidate_names`` (the router's
    choices), and with choices of different depths ``routing_depths[task]``. ``budget``: as
    :func:`pudding.router.bundle.load_bundle`'s (None: the bundle's default). With candidates of several depths the best
    static and SLEB rows are one per depth (``best static @d (name)``, ``SLEB @d (...)``).
    """
    started = time.perf_counter()
    settings = BundleSettings.resolve(settings, overrides)
    sleb = settings.sleb
    run = prepare_bundle(bundle, tasks, options, settings, budget=budget, log=log)
    router, cset = run.router, run.cset
    choices = run.choices()
    routed_name = "PuDDing (router)" if router.budget is None else f"PuDDing (router, budget {router.budget:g})"
    best_static: int | dict[int, int] = int(run.config["best_static"])
    sleb_rows: tuple[int, ...] | dict[int, tuple[int, ...]] | None = run.sleb.get(cset.num_omit) if sleb else None
    config_extra: dict[str, Any] = {}
    task_pick = None
    if cset.multi_depth:
        best_static, source = run.best_static_by_depth()
        sleb_rows = run.sleb if sleb else None
        config_extra["best_static_picked_on"] = source
    elif (found := run.task_pick()) is not None:
        task_pick, config_extra["task_pick_picked_on"] = found
        config_extra["task_pick"] = {task: run.names[i] for task, i in task_pick.items()}
    else:
        log("task-level pick: the bundle records none and its router data is not at hand; that row is left out")
    rows = build_rows(
        run.outcomes,
        run.names,
        run.sets,
        choices,
        best_static,
        cset.num_blocks,
        sleb=sleb_rows,
        choice_sets=run.choice_sets,
        routed_name=routed_name,
        task_pick=task_pick,
    )
    intervals = paired_intervals(rows[-1], rows, list(tasks), **BOOTSTRAP)
    config_extra["bootstrap"] = {**BOOTSTRAP, "reference": rows[-1].name, "metric": "acc", "paired": "within task"}
    histogram = routing_histogram(choices, len(run.choice_sets))
    config = run_config(run, options, settings, **config_extra)
    report = {
        **rows_report(rows),
        "intervals": intervals,
        "routing_histogram": histogram,
        "candidate_names": run.choice_names,
        "config": config,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if run.depths_differ:
        kept = [cset.num_blocks - len(s) for s in run.choice_sets]
        report["routing_depths"] = depth_histogram(choices, kept)
        report["config"] |= {"budget": router.budget, "budget_lambda": lambda_text(router.route_lambda)}
    out = Path(output)
    write_results(out, rows, list(tasks), report, histogram=histogram, names=run.choice_names, intervals=intervals)
    log(text_table(rows, list(tasks), intervals))
    if run.depths_differ:
        log(depth_lines(report["routing_depths"]))
    files = ".md, .csv, .png, .items.parquet and .choices.parquet"
    log(f"wrote {out.with_suffix('.json')}, {files} ({report['seconds']:.0f} s)")
    return report
