"""Router metrics as torchmetrics ``Metric`` subclasses: sum states (``dist_reduce_fx="sum"``), so DDP reduces them.

Every metric takes the same ``update(preds, targets, scores)``: ``preds`` [B, K] router outputs, ``targets`` [B, K]
the training targets (after the datamodule's target transform), ``scores`` [B, K] the raw per-candidate values of the
datamodule's ``target`` (by default the gold per-token mean log-likelihood, nats per token; or the gold posterior, or
correctness). The router's choice is ``argmax(preds)``. Selection metrics read raw scores, so they mean the same thing
whatever the target transform, and follow the target. :class:`AccuracyRegret` also takes ``correct`` [B, K] (1 where
the choice answers the item right) and is the same for every target. A router trained with the dense model
as a choice (``data.dense_choice``) has one more column, the dense model's, and these metrics treat it as any other
choice (the best static candidate stays a pruned one). They score the argmax (no budget): the budget is an
inference-time knob (:mod:`pudding.router.budget`).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def choices(preds: torch.Tensor) -> torch.Tensor:
    """The router's chosen candidate per row: the argmax of its predictions."""
    return preds.argmax(dim=-1)


def chosen_scores(preds: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    return scores.gather(-1, choices(preds).unsqueeze(-1)).squeeze(-1)


class _SumMean(Metric):
    """A mean kept as a sum and a count, both summed across processes."""

    full_state_update = False
    higher_is_better: bool | None = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, values: torch.Tensor) -> None:
        self.total += values.detach().double().sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


class RouterMSE(_SumMean):
    """Mean squared error between predictions and targets, over every (item, candidate) cell."""

    higher_is_better = False

    def update(self, preds: torch.Tensor, targets: torch.Tensor, scores: torch.Tensor) -> None:
        self._add((preds.detach().float() - targets.float()) ** 2)


class SelectionAccuracy(_SumMean):
    """Share of items where the chosen candidate has the item's best raw score (ties count as correct)."""

    higher_is_better = True

    def update(self, preds: torch.Tensor, targets: torch.Tensor, scores: torch.Tensor) -> None:
        self._add((chosen_scores(preds, scores) >= scores.max(dim=-1).values).double())


class Regret(_SumMean):
    """Mean of (best raw score of the item − raw score of the chosen candidate), nats per token; 0 is perfect."""

    higher_is_better = False

    def update(self, preds: torch.Tensor, targets: torch.Tensor, scores: torch.Tensor) -> None:
        self._add(scores.max(dim=-1).values - chosen_scores(preds, scores))


class GainVsStatic(_SumMean):
    """Mean of (raw score of the chosen candidate − raw score of the best static candidate), nats per token.

    ``best_static`` is the column picked on router-training rows (:func:`pudding.router.static.best_static_index`).
    """

    higher_is_better = True

    def __init__(self, best_static: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.best_static = int(best_static)

    def update(self, preds: torch.Tensor, targets: torch.Tensor, scores: torch.Tensor) -> None:
        self._add(chosen_scores(preds, scores) - scores[:, self.best_static])


class AccuracyRegret(_SumMean):
    """Accuracy-based regret: the share of items some choice answers right but the chosen one does not (oracle
    accuracy minus routed accuracy on the router data), whatever the training target. Without ``correct`` (data
    built without every answer choice) an update adds nothing."""

    higher_is_better = False

    def update(
        self, preds: torch.Tensor, targets: torch.Tensor, scores: torch.Tensor, correct: torch.Tensor | None = None
    ) -> None:
        if correct is not None:
            self._add(correct.max(dim=-1).values - chosen_scores(preds, correct))


class ChoiceHistogram(Metric):
    """How often each candidate is chosen: a [K] count vector."""

    full_state_update = False

    def __init__(self, num_candidates: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_candidates = int(num_candidates)
        self.add_state("counts", default=torch.zeros(self.num_candidates, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, targets: torch.Tensor, scores: torch.Tensor) -> None:
        self.counts += torch.bincount(choices(preds.detach()), minlength=self.num_candidates).to(self.counts.device)

    def compute(self) -> torch.Tensor:
        return self.counts.clone()


SCALARS = ("mse", "selection_acc", "regret", "gain_vs_static")
ACCURACY_SCALARS = ("regret_acc",)
"""Scalars that read ``correct``: logged only when the router data has it."""


def make_metrics(num_candidates: int, best_static: int) -> torch.nn.ModuleDict:
    """One set of router metrics: the four scalars, the accuracy-based regret and the choice histogram."""
    return torch.nn.ModuleDict(
        {
            "mse": RouterMSE(),
            "selection_acc": SelectionAccuracy(),
            "regret": Regret(),
            "gain_vs_static": GainVsStatic(best_static),
            "regret_acc": AccuracyRegret(),
            "choice": ChoiceHistogram(num_candidates),
        }
    )


def update_metrics(
    group: torch.nn.ModuleDict,
    preds: torch.Tensor,
    targets: torch.Tensor,
    scores: torch.Tensor,
    correct: torch.Tensor | None = None,
) -> None:
    """Update every metric of ``group``; those of :data:`ACCURACY_SCALARS` only when ``correct`` is given."""
    for name, metric in group.items():
        if name not in ACCURACY_SCALARS:
            metric.update(preds, targets, scores)
        elif correct is not None:
            metric.update(preds, targets, scores, correct)


def reference_regrets(scores: torch.Tensor, best_static: int, dense: int | None = None) -> dict[str, float]:
    """Regret of reference routers on [N, K] raw scores: always the best static candidate, a uniformly random
    choice (its expected value: item max − item mean over candidates) and, given the dense model's column
    ``dense`` (a router trained with the dense model as a choice), always the dense model."""
    scores = scores.double()
    best = scores.max(dim=-1).values
    refs = {
        "regret_best_static": float((best - scores[:, best_static]).mean()),
        "regret_random": float((best - scores.mean(dim=-1)).mean()),
    }
    if dense is not None:
        refs["regret_dense"] = float((best - scores[:, dense]).mean())
    return refs
