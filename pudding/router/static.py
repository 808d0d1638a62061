"""The best single static candidate: the reference a per-prompt router has to beat.

It is picked on router-training rows only (never on validation or evaluation labels): the candidate with the highest
mean raw score (gold per-token log-likelihood) over those rows. Metrics (``gain_vs_static``, the static regret) and
the zero-shot callback's ``best_static`` line all use this one definition; :func:`best_static_by_depth` applies it
within each depth of a candidate file of several depths, and :func:`best_static_by_task` within each task (the
task-level pick).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def best_static_index(scores: np.ndarray) -> int:
    """Index of the column of an [N, K] raw-score matrix with the highest mean over its finite rows."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"best_static_index needs a non-empty [N, K] score matrix, got shape {scores.shape}")
    finite = np.isfinite(scores).all(axis=1)
    if not finite.any():
        raise ValueError("best_static_index: no row has finite scores for every candidate")
    return int(np.argmax(scores[finite].mean(axis=0)))


def best_static_by_depth(scores: np.ndarray, omission_sets: Sequence[Sequence[int]]) -> dict[int, int]:
    """Per depth (blocks omitted), the column of the best static candidate of that depth: :func:`best_static_index`
    over that depth's columns only, returned as an index into all columns. ``omission_sets`` names each column's set.

    With candidates of several depths the overall best is nearly always a shallow one (fewer blocks omitted score
    higher), so a compute curve needs the best static candidate at every depth.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(omission_sets):
        raise ValueError(f"best_static_by_depth: {len(omission_sets)} omission sets for scores of shape {scores.shape}")
    best = {}
    for depth in sorted({len(s) for s in omission_sets}):
        columns = [i for i, s in enumerate(omission_sets) if len(s) == depth]
        best[depth] = columns[best_static_index(scores[:, columns])]
    return best


def best_static_by_task(scores: np.ndarray, tasks: Sequence[str]) -> dict[str, int]:
    """Per task, the column with the highest mean over that task's rows (:func:`best_static_index` within each
    task): the task-level pick, the choice a perfect task classifier over the candidates would make on router data."""
    scores = np.asarray(scores, dtype=np.float64)
    tasks = np.asarray(list(tasks))
    if scores.ndim != 2 or len(tasks) != scores.shape[0]:
        raise ValueError(f"best_static_by_task: {len(tasks)} task labels for scores of shape {scores.shape}")
    return {str(task): best_static_index(scores[tasks == task]) for task in dict.fromkeys(tasks.tolist())}
