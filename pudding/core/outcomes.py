"""Per-item outcomes of many omission sets on evaluation items: computed once, chunk by chunk, kept on disk.

Routed pruning runs each item with one omission set, so an item's routed result is the outcome of the set chosen for
it. Knowing every set's outcome (which choice ``acc`` and ``acc_norm`` pick) on every item turns the accuracy of any
router — a trained one each epoch, random routing, the oracle — into a lookup. The outcomes come from the one scoring
engine: the items are cut into fixed chunks, all sets of a chunk are scored together sharing their block prefixes
(:mod:`pudding.core.prefix`) and judged as lm-eval does (:mod:`pudding.core.accuracy`).

With a ``cache_dir`` every chunk is written as one shard, atomically, under a key of everything its numbers depend on
(model, dtype, device type, chunk size, batch budget and the items themselves). A killed run continues where it
stopped; asking later for another set (say a new baseline) scores only that set on each chunk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pudding.core.accuracy import METRICS, judge, split_scores
from pudding.core.errors import OptionError
from pudding.core.models.omission import kept_blocks
from pudding.core.prefix import run_paths
from pudding.core.scoring import Scorer
from pudding.core.spread import Share, deal, text_cost, wait_for
from pudding.core.store import KeyedStore, digest
from pudding.core.tasks import Item

OUTCOMES_FORMAT = 1
DEFAULT_CHUNK_ITEMS = 128
DEFAULT_OUTCOMES_DIR = "checkpoints/outcomes"
"""Shared by ``pudding compare`` and the zero-shot callback, so one reuses what the other scored."""


def model_key(base: str, dtype: str, device_type: str) -> str:
    """What outcome shards record as their model: base model name, resolved dtype, device type."""
    return json.dumps({"base": base, "dtype": dtype, "device_type": device_type}, sort_keys=True)


def set_key(omit: Sequence[int]) -> str:
    """A stable name for an omission set: its sorted blocks, comma-separated (``""`` is the dense model)."""
    return ",".join(str(b) for b in sorted(omit))


@dataclass
class Outcomes:
    """What ``acc`` and ``acc_norm`` pick on each item of one task, per omission set (keyed by :func:`set_key`)."""

    task: str
    item_ids: list[str]
    gold: np.ndarray
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    pred_norm: dict[str, np.ndarray] = field(default_factory=dict)

    def correct(self, key: str, metric: str = "acc") -> np.ndarray:
        """Boolean per item: is the set's choice the gold one under ``metric`` (``acc`` or ``acc_norm``)."""
        preds = self.pred_norm[key] if metric == "acc_norm" else self.pred[key]
        return preds == self.gold

    def routed(self, choices: Sequence[str], metric: str = "acc") -> np.ndarray:
        """Boolean per item when item ``i`` runs with the set ``choices[i]`` (a set key)."""
        if len(choices) != len(self.item_ids):
            raise ValueError(f"{self.task}: {len(choices)} routing choices for {len(self.item_ids)} items")
        table = {key: self.correct(key, metric) for key in set(choices)}
        return np.array([table[key][i] for i, key in enumerate(choices)], dtype=bool)


def items_key(items: Sequence[Item]) -> str:
    """sha256 of everything scoring and judging read from the items."""
    digest = hashlib.sha256()
    for item in items:
        record = [item.task, item.item_id, item.requests, item.choices, item.gold]
        digest.update(json.dumps(record, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def cache_key(scorer: Scorer, model_key: str, items: Sequence[Item], chunk_items: int) -> str:
    """The key of a task's shards: a shard is reused only when all of this matches."""
    return digest(
        {
            "format": OUTCOMES_FORMAT,
            "model": model_key,
            "num_blocks": scorer.num_blocks,
            "batch_tokens": scorer.batch_tokens,
            "max_length": scorer.max_length,
            "chunk_items": chunk_items,
            "items": items_key(items),
        }
    )


def shard_store(cache_dir: str | Path, task: str, key: str) -> KeyedStore:
    """The folder of ``task``'s shards under cache ``key`` (the progress file unpacks into it)."""
    return KeyedStore(Path(cache_dir) / task / key[:16])


def shard_name(chunk: int) -> str:
    """The file name of chunk ``chunk``'s shard."""
    return f"chunk-{chunk:05d}.json"


@dataclass
class _TaskPlan:
    """What scoring one task's chunks needs: its items, the set keys and kept blocks, the cache key and store."""

    task: str
    items: list[Item]
    keys: list[str]
    paths: dict[str, tuple[int, ...]]
    key: str
    store: KeyedStore | None
    chunk_items: int

    @property
    def starts(self) -> range:
        return range(0, len(self.items), self.chunk_items)

    def chunk(self, n: int) -> list[Item]:
        return self.items[n * self.chunk_items : (n + 1) * self.chunk_items]

    def known(self, n: int) -> dict[str, list]:
        """The sets chunk ``n``'s shard already holds (none without a cache)."""
        shard = self.store.read(shard_name(n), self.key) if self.store is not None else None
        return dict(shard["sets"]) if shard is not None and isinstance(shard.get("sets"), dict) else {}

    def complete(self, n: int) -> bool:
        """Whether chunk ``n``'s shard holds every set."""
        known = self.known(n)
        return all(k in known for k in self.keys)


def _plan(
    scorer: Scorer,
    items: Sequence[Item],
    omission_sets: Sequence[Sequence[int]],
    model_key: str,
    cache_dir: str | Path | None,
    chunk_items: int,
) -> _TaskPlan:
    if chunk_items < 1:
        raise OptionError(f"option chunk_items must be positive, got {chunk_items}")
    items = list(items)
    task = items[0].task if items else ""
    keys = list(dict.fromkeys(set_key(omit) for omit in omission_sets))
    paths = {k: tuple(kept_blocks([int(b) for b in k.split(",") if b], scorer.num_blocks)) for k in keys}
    key = cache_key(scorer, model_key, items, chunk_items) if cache_dir is not None else ""
    store = shard_store(cache_dir, task, key) if cache_dir is not None else None
    return _TaskPlan(task, items, keys, paths, key, store, chunk_items)


def _score_chunk(scorer: Scorer, plan: _TaskPlan, n: int, reuse_prefix: bool) -> tuple[dict[str, list], int]:
    """Chunk ``n``'s outcomes under every set (from its shard where it has them) and how many sets were scored; the
    shard is (re)written when any was."""
    chunk = plan.chunk(n)
    known = plan.known(n)
    missing = [k for k in plan.keys if k not in known]
    if missing:
        prepared = scorer.prepare([req for item in chunk for req in item.requests])
        scores = run_paths(scorer, prepared, [plan.paths[k] for k in missing], reuse_prefix)
        for k in missing:
            results = judge(chunk, split_scores(chunk, scores[plan.paths[k]]))
            known[k] = [[r.pred, r.pred_norm] for r in results]
        if plan.store is not None:
            plan.store.write(shard_name(n), plan.key, {"item_ids": [i.item_id for i in chunk], "sets": known})
    return known, len(missing)


def compute_outcomes(
    scorer: Scorer,
    items: Sequence[Item],
    omission_sets: Sequence[Sequence[int]],
    model_key: str = "",
    cache_dir: str | Path | None = None,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
    reuse_prefix: bool = True,
    on_chunk: Callable[[int, int, int], None] | None = None,
) -> Outcomes:
    """Outcomes of every set in ``omission_sets`` on ``items`` (one task), from shards where they exist.

    ``model_key`` names the model, dtype and device (it keys the cache); ``on_chunk(done, total, scored_sets)`` is
    called after each chunk (progress).
    """
    plan = _plan(scorer, items, omission_sets, model_key, cache_dir, chunk_items)
    items = plan.items
    pred = {k: np.zeros(len(items), dtype=np.int64) for k in plan.keys}
    pred_norm = {k: np.zeros(len(items), dtype=np.int64) for k in plan.keys}
    starts = plan.starts
    for n, lo in enumerate(starts):
        known, scored = _score_chunk(scorer, plan, n, reuse_prefix)
        size = len(plan.chunk(n))
        for k in plan.keys:
            values = np.asarray(known[k], dtype=np.int64).reshape(-1, 2)
            pred[k][lo : lo + size] = values[:, 0]
            pred_norm[k][lo : lo + size] = values[:, 1]
        if on_chunk is not None:
            on_chunk(n + 1, len(starts), scored)
    gold = np.array([item.gold for item in items], dtype=np.int64)
    return Outcomes(plan.task, [item.item_id for item in items], gold, pred, pred_norm)


def spread_outcomes(
    scorer: Scorer,
    items_by_task: Mapping[str, Sequence[Item]],
    omission_sets: Sequence[Sequence[int]],
    model_key: str,
    cache_dir: str | Path,
    share: Share,
    chunk_items: int = DEFAULT_CHUNK_ITEMS,
    reuse_prefix: bool = True,
    on_chunk: Callable[[str, int, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Outcomes]:
    """:func:`compute_outcomes` of every task, the chunks shared among ``share.world`` processes.

    The units are (task, chunk) pairs, dealt by their size (:func:`pudding.core.spread.text_cost`,
    :func:`~pudding.core.spread.deal`): this rank scores its own units into ``cache_dir`` (``on_chunk(task, done,
    total, scored_sets)`` after each), waits until every unit's shard holds every set, polling the store, and then
    reads every task's outcomes from the shards, exactly as one process reads a finished cache. Every rank returns
    the same outcomes; with ``Share()`` this is :func:`compute_outcomes` task by task.
    """
    plans = [_plan(scorer, items, omission_sets, model_key, cache_dir, chunk_items) for items in items_by_task.values()]
    units = [(t, n) for t, plan in enumerate(plans) for n in range(len(plan.starts))]
    costs = [text_cost(r for item in plans[t].chunk(n) for r in item.requests) for t, n in units]
    mine = [units[i] for i in share.mine(deal(costs, share.world))]
    for done, (t, n) in enumerate(mine, 1):
        _, scored = _score_chunk(scorer, plans[t], n, reuse_prefix)
        if on_chunk is not None:
            on_chunk(plans[t].task, done, len(mine), scored)
    if share.spread:
        wait_for(lambda: sum(not plans[t].complete(n) for t, n in units), "outcome shards", log)
    return {
        task: compute_outcomes(scorer, items, omission_sets, model_key, cache_dir, chunk_items, reuse_prefix)
        for task, items in items_by_task.items()
    }


def summarize_outcomes(outcomes: Outcomes, key: str, metrics: Sequence[str]) -> dict[str, float | int]:
    """Mean of each metric over the items for one set, plus ``n`` (lm-eval's summary shape)."""
    n = len(outcomes.item_ids)
    summary: dict[str, float | int] = {}
    for metric in ("acc", "acc_norm"):
        if metric in metrics:
            summary[metric] = float(outcomes.correct(key, metric).mean()) if n else float("nan")
    summary["n"] = n
    return summary


def evaluate_sets(
    scorer: Scorer, items: Sequence[Item], omission_sets: Sequence[Sequence[int]], metrics: Sequence[str] = METRICS
) -> list[dict[str, float | int]]:
    """Accuracy of ``items`` under each omission set (``()`` is the dense model), one summary per set (no cache)."""
    outcomes = compute_outcomes(scorer, items, omission_sets)
    return [summarize_outcomes(outcomes, set_key(omit), metrics) for omit in omission_sets]


def evaluate_items(
    scorer: Scorer, items: Sequence[Item], omit: Sequence[int] = (), metrics: Sequence[str] = METRICS
) -> dict[str, float | int]:
    """Accuracy of ``items`` with the blocks in ``omit`` skipped."""
    return evaluate_sets(scorer, items, [tuple(omit)], metrics)[0]
