"""A compute budget per prompt: route each prompt to the choice with the best predicted score + λ × blocks omitted.

The router predicts, per prompt ``i`` and choice ``c`` (a candidate omission set, or the dense model when the router
was trained with ``data.dense_choice``), the score ``s_ic`` the LLM would get with ``c``'s blocks skipped. A budget
``b`` in (0, 1] is a target for the mean fraction of blocks kept over prompts. Choosing per prompt to

    maximise  Σ_i s_i,c(i)   subject to   (1/N) Σ_i kept(c(i)) = b · L         (L: the model's blocks)

has the Lagrangian ``Σ_i [s_i,c(i) − μ/N · kept(c(i))] + μ·b·L``, which separates over prompts: for a fixed
multiplier each prompt simply takes ``argmax_c s_ic + λ · omitted(c)`` with ``λ = μ/N`` (``kept = L − omitted``, and
the constant ``−λ·L`` changes no argmax). λ = 0 is the plain argmax; λ > 0 pays for omitted blocks (a budget below
what the argmax keeps), λ < 0 charges for them (a budget above it); λ = −∞ keeps the most blocks every choice set
allows (the dense model when it is a choice), λ = +∞ the fewest.

The mean blocks kept, ``f(λ)``, never increases with λ (raising λ can only move a prompt to a choice with more
blocks omitted), so λ for a budget is found by bisection on ``f``, over the router's predictions on rows it did not
train on (its validation rows; the training rows when there are none). A bundle stores those predictions and the
rows' raw scores (``calibration.safetensors``, a few hundred kB), so any budget is calibrated exactly at load time:
the λ returned makes ``f(λ)`` the closest the rows allow to ``b·L`` (under it on a tie). ``f`` is a step function:
one prompt changing its choice moves the mean by at most (largest − smallest blocks kept) / N, so with at least
that many rows the calibrated mean is within one block of the budget on those rows.

:meth:`Calibration.sweep` gives, per budget, λ, the mean blocks kept and the mean realised score on the calibration
rows: the curve a budget sweep starts from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pudding.core.errors import OptionError
from pudding.core.io import atomic_save_safetensors

ARGMAX = "argmax"
"""The budget value that means plain argmax (λ = 0) even where a bundle records a default budget."""

CALIBRATION = "calibration.safetensors"
SWEEP_BUDGETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
"""Budgets of the summary table a bundle's router.json holds (0.05 to 1.0)."""


def _fraction(value: object) -> float | None:
    """``value`` (a number, or a string holding one) as a float in (0, 1]; None when it is not one."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    return number if number is not None and math.isfinite(number) and 0.0 < number <= 1.0 else None


def parse_budget(value: object, option: str = "budget") -> float | str | None:
    """A budget option: None (the bundle's default), ``argmax`` (plain argmax), or a number in (0, 1].

    Strings are accepted as written on a command line or in lm-eval's ``model_args`` (``budget=0.85``). Anything
    else is one-line :class:`~pudding.core.errors.OptionError` naming ``option``.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == ARGMAX:
        return ARGMAX
    number = _fraction(value)
    if number is None:
        raise OptionError(
            f"option {option}: {value!r} is not a number in (0, 1] (the target mean fraction of blocks kept) "
            f"or {ARGMAX!r}"
        )
    return number


def parse_budgets(value: object, option: str = "budgets") -> list[float] | None:
    """A list of budgets (a budget sweep's): None (the sweep's default grid), a YAML list, a comma-separated string
    or a list of numbers, each in (0, 1]. Anything else (empty, out of range, not a number) is a one-line
    :class:`~pudding.core.errors.OptionError` naming ``option``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]")
        parts: list[object] = [p.strip().strip("'\"") for p in text.split(",")]
        parts = [p for p in parts if p != ""]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    if not parts:
        raise OptionError(
            f"option {option}: no budget given ({value!r}); give numbers in (0, 1], e.g. --{option} '[0.75, 0.8]'"
        )
    budgets = []
    for part in parts:
        number = _fraction(part)
        if number is None:
            raise OptionError(
                f"option {option}: {part!r} is not a number in (0, 1] (a target mean fraction of blocks kept)"
            )
        budgets.append(number)
    return budgets


def choices_left(omitted: Sequence[int], lam: float) -> list[int]:
    """The choices :func:`choose` may pick at ``lam`` whatever the predictions: every one at a finite λ; at λ = ±∞
    those with the most (``+inf``) or fewest (``-inf``) blocks omitted. A single one left needs no prediction."""
    omitted = [int(o) for o in omitted]
    if not math.isinf(lam):
        return list(range(len(omitted)))
    extreme = max(omitted) if lam > 0 else min(omitted)
    return [c for c, o in enumerate(omitted) if o == extreme]


def choose(preds: torch.Tensor | np.ndarray, omitted: Sequence[int], lam: float = 0.0) -> torch.Tensor:
    """Per row of ``preds`` [N, C], the choice maximising ``preds + lam × omitted`` (first on a tie).

    ``lam = 0`` is exactly ``preds.argmax(-1)``. ``lam = ±inf`` keeps, per row, only the choices with the most
    (``+inf``) or fewest (``-inf``) blocks omitted and takes the best predicted among them.
    """
    preds = torch.as_tensor(preds)
    if lam == 0:
        return preds.argmax(dim=-1)
    preds = preds.double()
    om = torch.as_tensor(list(omitted), dtype=torch.float64, device=preds.device)
    if om.shape[-1] != preds.shape[-1]:
        raise ValueError(f"{preds.shape[-1]} predictions per row for {om.shape[-1]} choices")
    if math.isinf(lam):
        barred = torch.ones(om.shape[-1], dtype=torch.bool, device=preds.device)
        barred[choices_left(omitted, lam)] = False
        return preds.masked_fill(barred, -math.inf).argmax(dim=-1)
    return (preds + lam * om).argmax(dim=-1)


def mean_kept(preds: torch.Tensor, omitted: Sequence[int], num_blocks: int, lam: float) -> float:
    """Mean blocks kept over the rows of ``preds`` when each row takes :func:`choose`'s pick at ``lam``."""
    kept = num_blocks - torch.as_tensor(list(omitted), dtype=torch.float64)
    return float(kept[choose(preds, omitted, lam).cpu()].mean())


def solve_lambda(
    preds: torch.Tensor | np.ndarray, omitted: Sequence[int], num_blocks: int, budget: float, iterations: int = 200
) -> tuple[float, float]:
    """(λ, mean blocks kept at λ) for ``budget`` (target mean fraction of blocks kept) on the rows of ``preds``.

    A budget at or above the most any choice keeps gives λ = −∞ (every row to its largest-kept choice: the dense
    model when it is a choice); one at or below the fewest gives λ = +∞. In between, bisection on the non-increasing
    step function :func:`mean_kept` brackets the step that crosses ``budget × num_blocks`` and returns the side
    nearer to it (the side under it on a tie).
    """
    preds = torch.as_tensor(preds).double().cpu()
    omitted = [int(o) for o in omitted]
    kept = [num_blocks - o for o in omitted]
    target = float(budget) * num_blocks
    if target >= max(kept) - 1e-9:
        return -math.inf, float(max(kept))
    if target <= min(kept) + 1e-9:
        return math.inf, float(min(kept))
    if preds.ndim != 2 or preds.shape[0] == 0:
        raise ValueError("solve_lambda needs at least one row of predictions")
    # Beyond ±(spread of the predictions + 1) every row already sits at an extreme: blocks omitted differ by ≥ 1.
    span = float(preds.max() - preds.min()) + 1.0
    lo, hi = -span, span  # f(lo) = max kept ≥ target > min kept = f(hi)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        value = mean_kept(preds, omitted, num_blocks, mid)
        if value == target:
            return mid, value
        if value > target:
            lo = mid
        else:
            hi = mid
    above, below = mean_kept(preds, omitted, num_blocks, lo), mean_kept(preds, omitted, num_blocks, hi)
    if above - target < target - below:
        return lo, above
    return hi, below


def lambda_text(lam: float) -> float | str:
    """λ for JSON: a float, or ``"inf"`` / ``"-inf"`` (JSON has no infinity)."""
    return lam if math.isfinite(lam) else ("inf" if lam > 0 else "-inf")


@dataclass
class Calibration:
    """The router's predictions and the raw scores on rows it did not train on, per choice, for budget → λ.

    Attributes:
        preds: [N, C] predicted scores (float32).
        scores: [N, C] raw scores (gold per-token log-likelihood with each choice), for the realised-score curve.
        omitted: Blocks omitted by each of the C choices.
        num_blocks: The base model's blocks (L).
        split: Which rows: ``val`` (the router's validation rows) or ``train`` (when there were none).
    """

    preds: torch.Tensor
    scores: torch.Tensor
    omitted: list[int]
    num_blocks: int
    split: str = "val"

    @property
    def rows(self) -> int:
        return int(self.preds.shape[0])

    def solve(self, budget: float) -> tuple[float, float]:
        """(λ, mean blocks kept on these rows) for ``budget``: :func:`solve_lambda`."""
        return solve_lambda(self.preds, self.omitted, self.num_blocks, budget)

    def sweep(self, budgets: Iterable[float] = SWEEP_BUDGETS) -> list[dict]:
        """Per budget: λ, mean blocks kept and fraction kept, mean predicted and realised raw score, regret and the
        share of rows on each depth, on these rows."""
        best = self.scores.double().max(dim=-1).values
        kept_of = torch.tensor([self.num_blocks - o for o in self.omitted])
        table = []
        for budget in budgets:
            lam, kept = self.solve(float(budget))
            picks = choose(self.preds, self.omitted, lam)
            score = self.scores.double().gather(-1, picks.unsqueeze(-1)).squeeze(-1)
            predicted = self.preds.double().gather(-1, picks.unsqueeze(-1)).squeeze(-1)
            depths = torch.bincount(kept_of[picks], minlength=self.num_blocks + 1)
            table.append(
                {
                    "budget": float(budget),
                    "lambda": lambda_text(lam),
                    "mean_kept": kept,
                    "fraction_kept": kept / self.num_blocks,
                    "predicted": float(predicted.mean()),
                    "score": float(score.mean()),
                    "regret": float((best - score).mean()),
                    "depths": {str(d): int(n) for d, n in enumerate(depths.tolist()) if n},
                }
            )
        return table

    def summary(self) -> dict:
        """What router.json records: the file, which rows, how many, and the :meth:`sweep` table."""
        low = min(self.num_blocks - o for o in self.omitted) / self.num_blocks
        budgets = [b for b in SWEEP_BUDGETS if b >= low - 0.05 + 1e-9]
        return {"file": CALIBRATION, "split": self.split, "rows": self.rows, "table": self.sweep(budgets)}

    def save(self, path: str | Path) -> None:
        tensors = {
            "preds": self.preds.float().contiguous(),
            "scores": self.scores.float().contiguous(),
            "omitted": torch.tensor(self.omitted, dtype=torch.int64),
        }
        atomic_save_safetensors(Path(path), tensors, {"num_blocks": str(self.num_blocks), "split": self.split})

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
        return cls(
            preds=tensors["preds"],
            scores=tensors["scores"],
            omitted=[int(o) for o in tensors["omitted"].tolist()],
            num_blocks=int(meta["num_blocks"]),
            split=meta.get("split", "val"),
        )


@torch.no_grad()
def calibrate(router, datamodule) -> Calibration:
    """Run ``router`` (a :class:`~pudding.router.model.Router`) over the datamodule's validation rows (its training
    rows when it has none) in eval mode and keep its predictions and the rows' raw scores."""
    from torch.utils.data import DataLoader

    split, loader = "val", datamodule.predict_dataloader()
    if not datamodule.val_set:
        split = "train"
        loader = DataLoader(datamodule.train_set, batch_size=datamodule.batch_size, collate_fn=datamodule._collator())
    was_training = router.training
    router.eval()
    preds, scores = [], []
    try:
        device = next(router.parameters()).device
        for batch in loader:
            moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            preds.append(router.predict_batch(moved).float().cpu())
            scores.append(batch["scores"].float().cpu())
    finally:
        router.train(was_training)
    return Calibration(
        preds=torch.cat(preds),
        scores=torch.cat(scores),
        omitted=router.omitted,
        num_blocks=router.num_blocks,
        split=split,
    )
