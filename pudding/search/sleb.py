"""The SLEB baseline: one task-agnostic static omission set, found by the same greedy search on perplexity.

SLEB (Song et al., 2024) removes, one at a time, the block whose removal raises the perplexity of a generic text
corpus least. Here the corpus is a user's text file (paragraphs) or, by default, a pooled seeded sample of the six
tasks' router items written out as plain text (context followed by the gold answer): task-agnostic, and never an
evaluation item. The search itself is :func:`pudding.search.greedy.greedy_search` with the perplexity loss, kept on
disk under a key of everything it depends on and resumable step by step.

SLEB is a prefix search too: its first ``d`` removals are SLEB at ``d`` blocks, so one search to the deepest depth
gives the baseline at every depth (:func:`sleb_sets`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from pudding.core.io import print_line
from pudding.core.scoring import Scorer
from pudding.core.store import KeyedStore, digest
from pudding.core.tasks import DataOptions, router_items
from pudding.search.greedy import FastEvaluator, SearchResult, greedy_search
from pudding.search.objectives import corpus_texts, get_loss, gold_texts, sample_indices, text_requests

SLEB_VERSION = 1


def pooled_texts(tasks: Sequence[str], options: DataOptions, per_task: int, seed: int = 0) -> list[str]:
    """A seeded sample of ``per_task`` router items of each task, as plain text (context + gold answer)."""
    texts: list[str] = []
    for task in tasks:
        pool, _ = router_items(task, options)
        texts += gold_texts([pool[i] for i in sample_indices(len(pool), per_task, seed, f"sleb:{task}")])
    return texts


def sleb_texts(
    tasks: Sequence[str], options: DataOptions, per_task: int, seed: int = 0, corpus: str | None = None
) -> list[str]:
    """The corpus SLEB is searched on: ``corpus`` paragraphs when given, else the pooled router text."""
    if corpus is not None:
        if not Path(corpus).is_file():
            raise FileNotFoundError(f"option corpus: {corpus} is not a file")
        return corpus_texts(corpus, per_task * len(tasks), seed)
    return pooled_texts(tasks, options, per_task, seed)


def sleb_search(
    scorer: Scorer,
    texts: Sequence[str],
    num_omit: int,
    model_key: str,
    cache_dir: str | Path | None = None,
    keep_first: int = 1,
    keep_last: int = 1,
    log: Callable[[str], None] = print_line,
) -> SearchResult:
    """Greedy perplexity search on ``texts``; with ``cache_dir`` the result (and each step) is kept and reused.

    ``model_key`` names the model and dtype the numbers come from (part of the cache key).
    """
    rset = text_requests("sleb", texts)
    payload = {
        "version": SLEB_VERSION,
        "model": model_key,
        "num_blocks": scorer.num_blocks,
        "num_omit": num_omit,
        "keep_first": keep_first,
        "keep_last": keep_last,
        "batch_tokens": scorer.batch_tokens,
        "requests": rset.digest(),
    }
    key = digest(payload)[:16]
    store, name = (KeyedStore(cache_dir) if cache_dir is not None else None), f"sleb-{key}.json"
    saved = store.read(name, key) if store is not None else None
    resume = None
    if saved is not None:
        result = SearchResult(
            omit=tuple(saved["omit"]),
            step_losses=tuple(saved["step_losses"]),
            dense_loss=saved["dense_loss"],
            trial_losses=tuple({int(b): v for b, v in t.items()} for t in saved["trial_losses"]),
        )
        if len(result.omit) == num_omit:
            log(f"SLEB set found earlier: omit {list(result.omit)} ({store.path(name)})")
            return result
        resume = result
        log(f"SLEB search resuming after step {len(result.omit)} ({store.path(name)})")

    def save(_info, so_far: SearchResult) -> None:
        if store is not None:
            record = asdict(so_far) | {"config": payload}
            record["trial_losses"] = [{str(b): v for b, v in t.items()} for t in so_far.trial_losses]
            store.write(name, key, record)
        log(f"SLEB step {len(so_far.omit)}/{num_omit}: omit {list(so_far.omit)}, loss {so_far.step_losses[-1]:.4f}")

    evaluator = FastEvaluator(scorer, rset)
    return greedy_search(
        evaluator, get_loss("perplexity"), num_omit, keep_first, keep_last, on_step=save, resume=resume
    )


def sleb_prefix(result: SearchResult, depth: int) -> tuple[int, ...]:
    """SLEB's static omission set at ``depth`` blocks (sorted) from a search at least that deep: its first removals."""
    return tuple(sorted(result.prefix(depth).omit))


def sleb_sets(result: SearchResult, depths: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """SLEB at each of ``depths`` from one search (run :func:`sleb_search` to ``max(depths)``), keyed by depth."""
    return {depth: sleb_prefix(result, depth) for depth in sorted(depths)}
