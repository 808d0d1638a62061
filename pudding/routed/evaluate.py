"""``pudding eval --bundle``: routed pruning against every baseline on the tasks' evaluation items, in one table.

The LLM work is one :func:`pudding.outcomes.compute_outcomes` pass per task over the dense model, every candidate
and the SLEB set (block prefixes shared; shards on disk, so a killed run continues where it stopped); the SLEB set
itself comes from the same greedy search on perplexity (:mod:`pudding.search.sleb`). The router then routes each
item's prompt once, and every row of the table is a lookup (:mod:`pudding.routed.table`).

Under a compute budget (``budget``, :mod:`pudding.router.budget`) the router's predictions per item are computed
once and :meth:`~pudding.router.module.RouterModule.choose` turns them into choices; routing the same predictions
under another budget (``router.set_budget(b)`` then ``router.choose(preds)``) is a lookup as well, which is all a
budget sweep needs. When the router's choices differ in depth the report has ``routing_depths`` (per task, items
per number of blocks kept) and ``config`` records the budget and its λ.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pudding.errors import OptionError
from pudding.io import atomic_write_json, atomic_write_text
from pudding.models.adapters import get_layers
from pudding.models.loading import DEFAULT_CACHE_DIR, load_base
from pudding.outcomes import DEFAULT_OUTCOMES_DIR, compute_outcomes, model_key
from pudding.routed.table import (
    build_rows,
    csv_table,
    depth_histogram,
    depth_lines,
    markdown_table,
    plot_results,
    routing_histogram,
    text_table,
)
from pudding.router.budget import lambda_text
from pudding.scoring import Scorer
from pudding.search.runs import print_line
from pudding.search.sleb import sleb_search, sleb_texts
from pudding.tasks import DataOptions, TaskDataError, eval_items


def check_split(meta: dict, options: DataOptions) -> None:
    """Refuse evaluation items that could overlap the router's training data (other router_fraction/split_seed)."""
    for key in ("router_fraction", "split_seed"):
        trained = meta.get(key)
        if trained is not None and trained != getattr(options, key):
            raise OptionError(
                f"option {key}: the router was trained on data built with {key}={trained}, not {getattr(options, key)}"
                "; evaluating with another split would test on training items"
            )


def evaluate_bundle(
    bundle: str,
    tasks: Sequence[str],
    options: DataOptions,
    limit: int | None = None,
    base: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    batch_tokens: int = 1024,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    outcomes_dir: str | Path = DEFAULT_OUTCOMES_DIR,
    sleb: bool = True,
    sleb_samples: int = 16,
    corpus: str | None = None,
    output: str | Path = "checkpoints/eval_bundle/results",
    log: Callable[[str], None] = print_line,
    budget: float | str | None = None,
) -> dict:
    """Evaluate a router bundle and every baseline; write ``<output>.{json,md,csv,png}``; return the report.

    The JSON has the shape ``pudding eval`` writes in every mode (``results[row][task]``, ``average[row]``,
    ``omission_sets[row]`` (None where the set varies per item), ``config``, ``seconds``) plus ``blocks_kept[row]``,
    ``kinds[row]``, ``routing_histogram[task]`` and ``candidate_names`` (the router's choices), and with choices of
    different depths ``routing_depths[task]``. ``budget``: as :func:`pudding.router.bundle.load_bundle`'s (None:
    the bundle's default).
    """
    from pudding.router.bundle import load_bundle

    started = time.perf_counter()
    bundle_dir = Path(bundle)
    meta_path = bundle_dir / "dataset_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    check_split(meta, options)
    items_by_task = {}
    for task in tasks:
        items, note = eval_items(task, options)
        log(note)
        items_by_task[task] = items[:limit] if limit else items
        if not items_by_task[task]:
            raise TaskDataError(f"{task}: no evaluation items ({note})")
    from pudding.candidates import load_candidates

    cset = load_candidates(bundle_dir / "candidates.yaml")
    lm = load_base(base or cset.base_model, dtype=dtype, device=device, cache_dir=cache_dir)
    router, config = load_bundle(bundle_dir, base_num_blocks=len(get_layers(lm.model)), lm=lm, budget=budget)
    scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=batch_tokens)
    record = lm.dtype_choice.record()
    key = model_key(lm.name, record["dtype"], lm.device.type)
    names = [c.name for c in cset.candidates]
    sets = [tuple(s) for s in cset.omission_sets]
    choice_names = list(router.candidate_names) or names
    choice_sets = [tuple(sorted(s)) for s in router.omission_sets] or sets
    depths = len({len(s) for s in choice_sets}) > 1

    sleb_set = None
    if sleb:
        texts = sleb_texts(tasks, options, sleb_samples, corpus=corpus)
        log(f"SLEB baseline: greedy perplexity search on {len(texts)} texts ({corpus or 'pooled router text'})")
        result = sleb_search(scorer, texts, cset.num_omit, key, cache_dir=Path(outcomes_dir) / "sleb", log=log)
        sleb_set = tuple(sorted(result.omit))

    outcomes = {}
    for task, items in items_by_task.items():
        wanted = [(), *sets] + ([sleb_set] if sleb_set is not None else [])

        def progress(done: int, total: int, scored: int, task: str = task) -> None:
            log(f"{task}: chunk {done}/{total} ({scored} sets scored, the rest from the cache)")

        outcomes[task] = compute_outcomes(scorer, items, wanted, key, outcomes_dir, on_chunk=progress)

    preds = {task: router.predict_texts([item.router_text for item in items]) for task, items in items_by_task.items()}
    choices = {task: router.choose(p).tolist() for task, p in preds.items()}
    routed_name = "PuDDing (router)" if router.budget is None else f"PuDDing (router, budget {router.budget:g})"
    rows = build_rows(
        outcomes,
        names,
        sets,
        choices,
        int(config["best_static"]),
        cset.num_blocks,
        sleb=sleb_set,
        choice_sets=choice_sets,
        routed_name=routed_name,
    )
    histogram = routing_histogram(choices, len(choice_sets))
    report = {
        "results": {row.name: row.results for row in rows},
        "average": {row.name: row.average for row in rows},
        "omission_sets": {row.name: row.omit for row in rows},
        "blocks_kept": {row.name: row.blocks_kept for row in rows},
        "kinds": {row.name: row.kind for row in rows},
        "routing_histogram": histogram,
        "candidate_names": choice_names,
        "config": {
            "bundle": str(bundle),
            "base": lm.name,
            "tasks": list(tasks),
            "limit": limit,
            **record,
            "device": str(lm.device),
            "num_blocks": cset.num_blocks,
            "batch_tokens": batch_tokens,
            "sleb": sleb,
            "sleb_samples": sleb_samples,
            "corpus": corpus,
            "data_dir": options.data_dir,
            "router_fraction": options.router_fraction,
            "split_seed": options.split_seed,
            "average_metric": "acc",
        },
        "seconds": round(time.perf_counter() - started, 2),
    }
    if depths:
        kept = [cset.num_blocks - len(s) for s in choice_sets]
        report["routing_depths"] = depth_histogram(choices, kept)
        report["config"] |= {"budget": router.budget, "budget_lambda": lambda_text(router.route_lambda)}
    out = Path(output)
    atomic_write_json(out.with_suffix(".json"), report)
    atomic_write_text(out.with_suffix(".md"), markdown_table(rows, list(tasks)) + "\n")
    atomic_write_text(out.with_suffix(".csv"), csv_table(rows, list(tasks)))
    plot_results(rows, histogram, choice_names, out.with_suffix(".png"))
    log(text_table(rows, list(tasks)))
    if depths:
        log(depth_lines(report["routing_depths"]))
    log(f"wrote {out.with_suffix('.json')}, .md, .csv and .png ({report['seconds']:.0f} s)")
    return report
