"""Zero-shot accuracy from engine scores, computed the way lm-eval computes it.

``acc`` is right when the gold choice has the highest summed log-likelihood; ``acc_norm`` divides each choice's
log-likelihood by its length in characters first (lm-eval's definition). Ties go to the lowest index, as with
``numpy.argmax``. Evaluating items under many omission sets at once (sharing work, cached on disk) is
:mod:`pudding.outcomes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pudding.scoring import Prepared, Score, Scorer
from pudding.tasks import Item

METRICS = ("acc", "acc_norm")


@dataclass(frozen=True)
class ItemResult:
    """Per-item outcome: which choice each metric picked, and whether it was the gold one."""

    item_id: str
    pred: int
    pred_norm: int
    gold: int


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def prepare_items(scorer: Scorer, items: Sequence[Item]) -> Prepared:
    """Tokenise and pack every request of ``items`` once (choices of an item share their context)."""
    return scorer.prepare([req for item in items for req in item.requests])


def split_scores(items: Sequence[Item], scores: Sequence[Score]) -> list[list[Score]]:
    """Regroup a flat score list (one per request) into one list per item."""
    out, at = [], 0
    for item in items:
        out.append(list(scores[at : at + len(item.requests)]))
        at += len(item.requests)
    return out


def judge(items: Sequence[Item], scores: Sequence[Sequence[Score]]) -> list[ItemResult]:
    """Turn per-choice scores into lm-eval's acc / acc_norm predictions."""
    results = []
    for item, item_scores in zip(items, scores, strict=True):
        lls = [s.logprob for s in item_scores]
        normed = [ll / max(len(choice), 1) for ll, choice in zip(lls, item.choices, strict=True)]
        results.append(ItemResult(item.item_id, _argmax(lls), _argmax(normed), item.gold))
    return results


def summarize(results: Sequence[ItemResult], metrics: Sequence[str]) -> dict[str, float | int]:
    """Mean of each metric over items, plus ``n``."""
    n = len(results)
    if n == 0:
        return {"n": 0, **{m: float("nan") for m in metrics}}
    summary: dict[str, float | int] = {}
    if "acc" in metrics:
        summary["acc"] = sum(r.pred == r.gold for r in results) / n
    if "acc_norm" in metrics:
        summary["acc_norm"] = sum(r.pred_norm == r.gold for r in results) / n
    summary["n"] = n
    return summary


def average(results: dict[str, dict[str, float | int]], metric: str = "acc") -> float:
    """Mean over tasks of ``metric`` (tasks without it, e.g. acc_norm for BoolQ, contribute their ``acc``)."""
    values = [float(r.get(metric, r["acc"])) for r in results.values()]
    return sum(values) / len(values) if values else float("nan")
