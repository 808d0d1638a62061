"""Score the same prepared requests under many kept-block sequences, sharing the work their prefixes have in common.

Every candidate omission set runs blocks ``0..f-1`` exactly as the dense model does (``f`` is its first omitted
block), and candidates often share more with each other. So the sequences are run in lexicographic order, and each
starts from hidden states an earlier run recorded where their sequences part. That is exact (the same operations on
the same inputs), not an approximation. Router data, evaluation and the routed-evaluation cache all score many sets
over the same items through :func:`run_paths`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pudding.core.scoring import Prepared, Score, Scorer


def run_paths(
    scorer: Scorer, prepared: Prepared, paths: Sequence[tuple[int, ...]], reuse_prefix: bool = True
) -> dict[tuple[int, ...], list[Score]]:
    """Scores of every prepared request under each kept-block sequence in ``paths`` (keyed by the sequence)."""
    states: dict[tuple[int, ...], list[torch.Tensor]] = {}
    results: dict[tuple[int, ...], list[Score]] = {}
    for run in plan_runs(paths, reuse_prefix):
        path, start = run.path, run.start
        hidden = states[path[:start]] if start else None
        scores, captured = scorer.run(
            prepared, blocks=path[start:], start_hidden=hidden, capture=[path[pos] for pos in run.capture]
        )
        for pos in run.capture:
            states[path[:pos]] = captured[path[pos]]
        for prefix in run.release:
            del states[prefix]
        results[path] = scores
    return results


@dataclass(frozen=True)
class Run:
    """One scoring run: ``path[start:]`` from the hidden states after ``path[:start]``; record the inputs of the
    blocks at positions ``capture``; afterwards forget the states of the prefixes in ``release``."""

    path: tuple[int, ...]
    start: int
    capture: tuple[int, ...]
    release: tuple[tuple[int, ...], ...]


def plan_runs(paths: Sequence[tuple[int, ...]], reuse_prefix: bool = True) -> list[Run]:
    """Order the distinct kept-block sequences so each run reuses the longest prefix already computed.

    Sorted lexicographically, a sequence shares its longest prefix with any earlier one with its predecessor. The
    hidden states after that prefix come from the latest earlier run that passes through (or starts at) it: that run
    records them. Every run keeps at least its last block, so a path that is a prefix of another still runs one.
    Exact: the states after a prefix are the same computation whichever run makes them.
    """
    order = sorted(set(paths))
    starts: list[int] = []
    capture: list[set[int]] = [set() for _ in order]
    needed_by: dict[tuple[int, ...], int] = {}  # prefix -> index of the last run that starts from it
    for i, path in enumerate(order):
        start = 0
        if reuse_prefix and i > 0:
            prev = order[i - 1]
            common = 0
            while common < min(len(path), len(prev)) and path[common] == prev[common]:
                common += 1
            start = min(common, len(path) - 1, len(prev) - 1)  # states are recorded as some block's input
        if start > 0:
            j = i - 1
            while starts[j] > start:  # runs in between all share more than ``start`` blocks with ``path``
                j -= 1
            if starts[j] < start:
                capture[j].add(start)
            needed_by[path[:start]] = i
        starts.append(start)
    releases: list[list[tuple[int, ...]]] = [[] for _ in order]
    for prefix, last in needed_by.items():
        releases[last].append(prefix)
    return [
        Run(path=path, start=starts[i], capture=tuple(sorted(capture[i])), release=tuple(releases[i]))
        for i, path in enumerate(order)
    ]
