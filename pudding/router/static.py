"""The best single static candidate: the reference a per-prompt router has to beat.

It is picked on router-training rows only (never on validation or evaluation labels): the candidate with the highest
mean raw score (gold per-token log-likelihood) over those rows. Metrics (``gain_vs_static``, the static regret) and
the zero-shot callback's ``best_static`` line all use this one definition.
"""

from __future__ import annotations

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
