"""SLEB-style greedy block removal, with an exact fast evaluator and a naive reference one.

The greedy loop is shared; only the way a trial ("the current omission set plus block b") is scored differs:

* :class:`NaiveEvaluator` scores every trial from scratch, one request per forward pass, no reuse — the
  definition, used by the tests and the benchmark.
* :class:`FastEvaluator` gives the same numbers much faster:

  - the request set is tokenised and batched once (``Scorer.prepare``), choices sharing a context in one row, and
    copied to the device once: every trial runs the same device-resident batches (``Prepared.on``);
  - removing block ``b`` changes nothing below ``b``: the input of ``b`` in the current model is the input of the
    next kept block once ``b`` is gone, so a trial runs only the kept blocks after ``b``, starting from hidden
    states recorded earlier (``Scorer.run(start_hidden=..., capture=...)``);
  - the winning trial records its blocks' inputs, which are exactly the next step's current-model inputs, so a
    step needs no separate capture pass;
  - scores are memoised by omission *set*, so runs with different losses on the same request set compute every
    evaluation they share once (the planned runs give likelihood its own, cheaper gold-only set, see
    :mod:`pudding.search.objectives`);
  - the LM head runs only on scored positions, a few dozen rows at a time (``pudding.core.scoring``).

  Each shortcut reproduces, operation for operation, what a plain run of the reduced block list on the same
  batches computes, so the scores are bit-identical to ``scorer.run(prepared, kept_blocks(...))``.

Ties are broken towards the lower block index, in both evaluators.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from pudding.core.errors import OptionError
from pudding.core.models.omission import kept_blocks
from pudding.core.scoring import Prepared, Score, Scorer
from pudding.search.objectives import LossFn, RequestSet


class SearchError(OptionError):
    """A search that cannot be run as configured (the message names the option)."""


@dataclass(frozen=True)
class SearchResult:
    """Blocks in removal order, the loss after each step, the dense model's loss, and every trial's loss."""

    omit: tuple[int, ...]
    step_losses: tuple[float, ...]
    dense_loss: float
    trial_losses: tuple[dict[int, float], ...] = ()

    def prefix(self, depth: int) -> SearchResult:
        """The search stopped after ``depth`` steps: each step depends only on the ones before, so this is exactly
        what a search of ``depth`` blocks gives (one deep search yields every shallower result for free)."""
        if not 1 <= depth <= len(self.omit):
            raise SearchError(f"depth {depth}: the search removed {len(self.omit)} blocks; search at least this deep")
        return SearchResult(self.omit[:depth], self.step_losses[:depth], self.dense_loss, self.trial_losses[:depth])


@dataclass
class StepInfo:
    """What one greedy step did, for progress lines and benchmarks."""

    step: int
    removed: int
    loss: float
    trials: int
    cached: int
    seconds: float


def removable(num_blocks: int, omit: Sequence[int], keep_first: int, keep_last: int) -> list[int]:
    """Blocks a step may try: still present and outside the first ``keep_first`` and last ``keep_last``."""
    gone = set(omit)
    return [b for b in range(keep_first, num_blocks - keep_last) if b not in gone]


def check_barriers(num_blocks: int, num_omit: int, keep_first: int, keep_last: int) -> None:
    """Fail before any compute when the options leave too few removable blocks."""
    if num_omit < 1:
        raise SearchError(f"option num_omit: must be at least 1, got {num_omit}")
    if keep_first < 0 or keep_last < 0:
        raise SearchError(f"options keep_first/keep_last must be ≥ 0, got {keep_first}/{keep_last}")
    free = num_blocks - keep_first - keep_last
    if num_omit > free or num_omit >= num_blocks:
        raise SearchError(
            f"option num_omit={num_omit}: the model has {num_blocks} blocks and keep_first={keep_first}, "
            f"keep_last={keep_last} protect {num_blocks - max(free, 0)}, leaving {max(free, 0)} removable"
        )


def _order_key(loss: float, block: int) -> tuple[float, int]:
    """Lower loss wins, then the lower block index; NaN counts as worst so it is never chosen over a number."""
    return (math.inf if math.isnan(loss) else loss, block)


def pick(losses: dict[int, float]) -> int:
    """The greedy choice: the block whose removal gives the lowest loss (ties: lowest index)."""
    return min(losses, key=lambda b: _order_key(losses[b], b))


class NaiveEvaluator:
    """Scores each trial from scratch with one request per forward pass: the reference the fast path must match."""

    def __init__(self, model: torch.nn.Module, tokenizer, rset: RequestSet, max_length: int | None = None) -> None:
        self.scorer = Scorer(model, tokenizer, batch_tokens=1, share_context=False, max_length=max_length)
        self.rset = rset
        self.num_blocks = self.scorer.num_blocks
        self.trials_computed = 0
        self.trials_cached = 0
        self.work = Work.of(self.scorer.prepare(rset.requests))
        self.token_blocks = 0
        self.head_tokens = 0

    def scores(self, omit: Sequence[int]) -> list[Score]:
        blocks = self.num_blocks - len(set(omit))
        self.token_blocks += self.work.tokens * blocks
        self.head_tokens += self.work.scored
        return self.scorer.score(self.rset.requests, omit=tuple(omit))

    def trial_losses(self, omit: Sequence[int], blocks: Sequence[int], loss_fn: LossFn) -> dict[int, float]:
        losses = {}
        for b in blocks:
            losses[b] = loss_fn(self.rset, self.scores((*omit, b)))
            self.trials_computed += 1
        return losses


@dataclass(frozen=True)
class Work:
    """Size of one pass over a prepared request set: input positions (padding included) and scored positions."""

    tokens: int
    scored: int

    @classmethod
    def of(cls, prepared: Prepared) -> Work:
        tokens = sum(batch.input_ids.numel() for batch in prepared.batches)
        return cls(tokens, sum(len(batch.targets) for batch in prepared.batches))


@dataclass
class _State:
    """Every kept block's input hidden states (one tensor per batch) for the current omission set."""

    omit: frozenset[int]
    inputs: dict[int, list[torch.Tensor]] = field(default_factory=dict)


class FastEvaluator:
    """Exact, fast trial scoring for one request set; see the module docstring for the shortcuts."""

    def __init__(self, scorer: Scorer, rset: RequestSet) -> None:
        self.scorer = scorer
        self.rset = rset
        self.num_blocks = scorer.num_blocks
        self.prepared = scorer.prepare(rset.requests)
        self.memo: dict[frozenset[int], list[Score]] = {}
        self.state: _State | None = None
        self.trials_computed = 0
        self.trials_cached = 0
        self.capture_passes = 0
        self.work = Work.of(self.prepared)
        self.token_blocks = 0  # positions × blocks run: the benchmark's machine-independent cost measure
        self.head_tokens = 0  # positions the LM head ran on

    def _run(self, blocks: Sequence[int], **kwargs) -> tuple[list[Score], dict[int, list[torch.Tensor]]]:
        self.token_blocks += self.work.tokens * len(blocks)
        self.head_tokens += self.work.scored
        return self.scorer.run(self.prepared, blocks, **kwargs)

    def _capture(self, omit: Sequence[int]) -> None:
        """Run the current model once recording every kept block's input (only when no trial left them)."""
        kept = list(kept_blocks(omit, self.num_blocks))
        scores, captured = self._run(kept, capture=kept)
        self.memo.setdefault(frozenset(omit), scores)
        self.state = _State(frozenset(omit), captured)
        self.capture_passes += 1

    def scores(self, omit: Sequence[int]) -> list[Score]:
        """Scores with ``omit`` skipped (memoised); computing them also records the inputs for the next trials."""
        key = frozenset(omit)
        if key not in self.memo:
            self._capture(omit)
        return self.memo[key]

    def trial_losses(self, omit: Sequence[int], blocks: Sequence[int], loss_fn: LossFn) -> dict[int, float]:
        """Loss of ``omit + (b,)`` for every ``b`` in ``blocks``; keeps the winner's hidden states for the next step."""
        current = frozenset(omit)
        kept = list(kept_blocks(omit, self.num_blocks))
        losses: dict[int, float] = {}
        best: tuple[tuple[float, int], _State] | None = None
        for b in sorted(blocks):
            key = current | {b}
            if key in self.memo:
                self.trials_cached += 1
                losses[b] = loss_fn(self.rset, self.memo[key])
                continue
            if self.state is None or self.state.omit != current:
                self._capture(omit)
            assert self.state is not None
            after = [k for k in kept if k > b]
            below = {k: self.state.inputs[k] for k in kept if k < b}
            if after:
                start = self.state.inputs[b]
                scores, captured = self._run(after, start_hidden=start, capture=after[1:])
                captured[after[0]] = start  # the next block's input once b is gone is b's current input
            else:  # b is the last kept block: nothing to start from, run the reduced list from the embeddings
                scores, _ = self._run([k for k in kept if k != b])
                captured = {}
            self.trials_computed += 1
            self.memo[key] = scores
            losses[b] = loss_fn(self.rset, scores)
            order = _order_key(losses[b], b)
            if best is None or order < best[0]:
                best = (order, _State(key, {**below, **captured}))
        if best is not None and best[1].omit == current | {pick(losses)}:
            self.state = best[1]
        return losses


Evaluator = NaiveEvaluator | FastEvaluator


def greedy_search(
    evaluator: Evaluator,
    loss_fn: LossFn,
    num_omit: int,
    keep_first: int = 1,
    keep_last: int = 1,
    on_step: Callable[[StepInfo, SearchResult], None] | None = None,
    resume: SearchResult | None = None,
) -> SearchResult:
    """Remove ``num_omit`` blocks one at a time, each time the one whose removal gives the lowest loss.

    ``on_step`` gets each step's summary and the result so far; passing such a partial result back as ``resume``
    continues from it (the steps are deterministic, so the outcome is the one an uninterrupted search gives).
    """
    num_blocks = evaluator.num_blocks
    check_barriers(num_blocks, num_omit, keep_first, keep_last)
    if resume is not None and len(resume.omit) > num_omit:
        raise SearchError(f"cannot resume a search of {len(resume.omit)} steps as one of num_omit={num_omit}")
    if resume is None:
        resume = SearchResult((), (), loss_fn(evaluator.rset, evaluator.scores(())), ())
    dense = resume.dense_loss
    omit = tuple(resume.omit)
    step_losses = list(resume.step_losses)
    trial_losses = list(resume.trial_losses)
    for step in range(len(omit) + 1, num_omit + 1):
        started = time.perf_counter()
        cached_before = evaluator.trials_cached
        losses = evaluator.trial_losses(omit, removable(num_blocks, omit, keep_first, keep_last), loss_fn)
        best = pick(losses)
        omit = (*omit, best)
        step_losses.append(losses[best])
        trial_losses.append(losses)
        if on_step is not None:
            cached = evaluator.trials_cached - cached_before
            info = StepInfo(step, best, losses[best], len(losses), cached, time.perf_counter() - started)
            on_step(info, SearchResult(omit, tuple(step_losses), dense, tuple(trial_losses)))
    return SearchResult(tuple(omit), tuple(step_losses), dense, tuple(trial_losses))
