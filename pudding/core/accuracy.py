"""Zero-shot accuracy from engine scores, computed the way lm-eval computes it.

``acc`` is right when the gold choice has the highest summed log-likelihood; ``acc_norm`` divides each choice's
log-likelihood by its length in characters first (lm-eval's definition). Ties go to the lowest index, as with
``numpy.argmax``. Evaluating items under many omission sets at once (sharing work, cached on disk) is
:mod:`pudding.core.outcomes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pudding.core.scoring import Score
from pudding.core.tasks import Item

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


def split_scores(items: Sequence[Item], scores: Sequence[Score]) -> list[list[Score]]:
    """Regroup a flat score list (one per request) into one list per item."""
    out, at = [], 0
    for item in items:
        out.append(list(scores[at : at + len(item.requests)]))
        at += len(item.requests)
    return out


def length_normalised(lls: Sequence[float], choices: Sequence[str]) -> list[float]:
    """What ``acc_norm`` compares: each choice's summed log-likelihood over its length in characters."""
    return [ll / max(len(choice), 1) for ll, choice in zip(lls, choices, strict=True)]


def judge(items: Sequence[Item], scores: Sequence[Sequence[Score]]) -> list[ItemResult]:
    """Turn per-choice scores into lm-eval's acc / acc_norm predictions."""
    results = []
    for item, item_scores in zip(items, scores, strict=True):
        lls = [s.logprob for s in item_scores]
        normed = length_normalised(lls, item.choices)
        results.append(ItemResult(item.item_id, _argmax(lls), _argmax(normed), item.gold))
    return results


def gold_posterior(values: Sequence[float], gold: int) -> tuple[float, bool]:
    """The gold choice's log-probability among the choices, ``log softmax(values)[gold]``, and whether the metric
    that compares ``values`` (summed log-likelihoods for ``acc``, :func:`length_normalised` ones for ``acc_norm``)
    picks it (ties to the lowest index, as :func:`judge`)."""
    top = max(values)
    log_norm = top + math.log(sum(math.exp(v - top) for v in values))
    return values[gold] - log_norm, _argmax(values) == gold


def average(results: dict[str, dict[str, float | int]], metric: str = "acc") -> float:
    """Mean over tasks of ``metric`` (tasks without it, e.g. acc_norm for BoolQ, contribute their ``acc``)."""
    values = [float(r.get(metric, r["acc"])) for r in results.values()]
    return sum(values) / len(values) if values else float("nan")
