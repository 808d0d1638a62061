"""What a router could gain on a router dataset: per task, dense, the best single candidate and the per-item best.

The router's job is to beat the best *static* choice (one candidate for every prompt) and approach the *oracle* (the
best candidate of each item, known only with the gold answer). Both are read straight off the ``scores`` column, so
``pudding dataset`` prints them once a dataset is built and the router issue can log them as baselines. A dataset
with every answer choice scored also gives them in accuracy (:func:`accuracy_table`, from its ``correct`` columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasets import Dataset


@dataclass(frozen=True)
class Headroom:
    """Mean per-token gold log-likelihood (higher is better) of one group of rows under the choices a router has."""

    task: str
    rows: int
    dense: float
    best_static: float
    best_static_name: str
    oracle: float
    most_often_best: str
    most_often_share: float
    oracle_beats_dense: float


def _group(task: str, scores: np.ndarray, dense: np.ndarray, names: Sequence[str]) -> Headroom:
    static = scores.mean(axis=0)
    wins = np.bincount(scores.argmax(axis=1), minlength=scores.shape[1])
    best = scores.max(axis=1)
    return Headroom(
        task=task,
        rows=len(scores),
        dense=float(dense.mean()),
        best_static=float(static.max()),
        best_static_name=names[int(static.argmax())],
        oracle=float(best.mean()),
        most_often_best=names[int(wins.argmax())],
        most_often_share=float(wins.max() / len(scores)),
        oracle_beats_dense=float((best > dense).mean()),
    )


def headroom(dataset: Dataset, names: Sequence[str]) -> list[Headroom]:
    """One :class:`Headroom` per task in order of first appearance, then one for all rows (task ``"all"``).

    Rows with a NaN/inf candidate score are left out (as :class:`RouterDataModule` drops them), and so are rows
    whose dense score is NaN/inf, which would make the dense mean meaningless; none left gives ``[]``.
    """
    scores = np.asarray(dataset["scores"], dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(names) or len(scores) == 0:
        raise ValueError(f"scores of shape {scores.shape} do not match {len(names)} candidate names")
    dense = np.asarray(dataset["dense_score"], dtype=np.float64)
    tasks = np.asarray(dataset["task"])
    keep = np.isfinite(scores).all(axis=1) & np.isfinite(dense)
    scores, dense, tasks = scores[keep], dense[keep], tasks[keep]
    if len(scores) == 0:
        return []  # nothing finite to compare
    order = list(dict.fromkeys(tasks.tolist()))
    groups = [_group(t, scores[tasks == t], dense[tasks == t], names) for t in order]
    return [*groups, _group("all", scores, dense, names)]


def headroom_table(groups: Sequence[Headroom]) -> str:
    """A Markdown table of :func:`headroom` (scores in nats per token, shares in %)."""
    lines = [
        "| task | rows | dense | best single candidate | oracle (per-item best) | most often best | oracle > dense |",
        "|---|---:|---:|---|---:|---|---:|",
    ]
    for g in groups:
        lines.append(
            f"| {g.task} | {g.rows:,} | {g.dense:.2f} | {g.best_static:.2f} ({g.best_static_name}) | {g.oracle:.2f} "
            f"| {g.most_often_best} ({100 * g.most_often_share:.0f} %) | {100 * g.oracle_beats_dense:.0f} % |"
        )
    return "\n".join(lines)


def accuracy_table(dataset: Dataset, names: Sequence[str], column: str = "correct") -> str:
    """Per task and overall, router-data accuracy (%) of dense, the best single candidate and the per-item oracle (some
    candidate right), from an all-choice dataset's ``correct`` (``acc``) or ``correct_norm`` column; Markdown."""
    right = np.asarray(dataset[column], dtype=np.float64)
    dense = np.asarray(dataset[f"dense_{column}"], dtype=np.float64)
    tasks = np.asarray(dataset["task"])
    lines = [
        "| task | rows | dense | best single candidate | oracle (some candidate right) |",
        "|---|---:|---:|---|---:|",
    ]
    for task in [*dict.fromkeys(tasks.tolist()), "all"]:
        rows = np.ones(len(tasks), dtype=bool) if task == "all" else tasks == task
        static = right[rows].mean(axis=0)
        best = int(static.argmax())
        lines.append(
            f"| {task} | {int(rows.sum()):,} | {100 * dense[rows].mean():.2f} | {100 * static[best]:.2f} "
            f"({names[best]}) | {100 * right[rows].max(axis=1).mean():.2f} |"
        )
    return "\n".join(lines)
