"""Candidate search (PuDDing stage 1): greedy block removal per (task, loss), merged into a candidate file.

Public API: :func:`run_search` and :class:`SearchOptions` (the whole resumable search), :func:`greedy_search` with
:class:`FastEvaluator` (exact and fast) or :class:`NaiveEvaluator` (the reference), the losses
(:data:`LOSSES`, :func:`get_loss`) and request sets (:func:`choice_requests`, :func:`text_requests`).
"""

from __future__ import annotations

from pudding.search.greedy import (
    FastEvaluator,
    NaiveEvaluator,
    SearchError,
    SearchResult,
    StepInfo,
    check_barriers,
    greedy_search,
    pick,
    removable,
)
from pudding.search.objectives import (
    LOSSES,
    RequestSet,
    choice_requests,
    get_loss,
    gold_requests,
    likelihood_loss,
    margin_loss,
    perplexity_loss,
    text_requests,
)
from pudding.search.runs import RunRecord, RunSpec, SearchOptions, plan_runs, run_key, run_search

__all__ = [
    "LOSSES",
    "FastEvaluator",
    "NaiveEvaluator",
    "RequestSet",
    "RunRecord",
    "RunSpec",
    "SearchError",
    "SearchOptions",
    "SearchResult",
    "StepInfo",
    "check_barriers",
    "choice_requests",
    "gold_requests",
    "get_loss",
    "greedy_search",
    "likelihood_loss",
    "margin_loss",
    "perplexity_loss",
    "pick",
    "plan_runs",
    "removable",
    "run_key",
    "run_search",
    "text_requests",
]
