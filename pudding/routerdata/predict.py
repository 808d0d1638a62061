"""The scoring LightningModule of ``pudding dataset``: one predict step scores one work unit under K+1 block sets.

The router's target for an item is, per candidate omission set, the per-token mean log-likelihood of the item's
gold continuation (and the dense model's value beside it). By default only the gold request is scored. With
``all_choices`` every other answer choice is scored too, in a second pass over the same K+1 sets, and each row also
carries, per set, the gold answer's log-probability among the choices and whether the set answers the item right,
both as ``acc`` judges them (summed log-likelihoods) and as ``acc_norm`` does (divided by the choice's length in
characters, for tasks that report it; the ``acc`` values otherwise): see :func:`choice_columns`. The gold pass is
exactly the gold-only build's, so the gold scores of both builds are equal bit for bit. A unit's requests are
tokenised and batched once and reused for all K+1 runs. Runs share work: the K+1 kept-block sequences form a tree
of common prefixes (every candidate shares blocks ``0..f-1`` with the dense model, where ``f`` is its first omitted
block, and candidates often share more with each other), so each run starts from hidden states an earlier run
recorded where their sequences part. That is exact (the same operations on the same inputs), not an
approximation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from lightning.pytorch import LightningModule

from pudding.core.accuracy import gold_posterior, length_normalised
from pudding.core.candidates import CandidateFileError, CandidateSet, file_hash, load_candidates
from pudding.core.errors import OptionError
from pudding.core.llm import LLMOptions
from pudding.core.models.dtype import DtypeChoice
from pudding.core.models.omission import kept_blocks
from pudding.core.prefix import run_paths
from pudding.core.scoring import Score, Scorer
from pudding.routerdata.dataset import CHOICE_METRICS


def run_sets(
    scorer: Scorer,
    requests: Sequence[tuple[str, str]],
    omission_sets: Sequence[Sequence[int]],
    reuse_prefix: bool = True,
) -> tuple[list[Score], list[list[Score]]]:
    """The engine's :class:`~pudding.core.scoring.Score` of every request, dense and under each omission set.

    Returns ``(dense, per_set)`` with ``dense[i]`` for request ``i`` and ``per_set[k][i]`` for omission set ``k``.
    The requests are prepared once; with ``reuse_prefix`` runs share their common block prefixes
    (:mod:`pudding.core.prefix`).
    """
    if not requests:
        return [], [[] for _ in omission_sets]
    n = scorer.num_blocks
    dense_path = tuple(range(n))
    paths = [tuple(kept_blocks(omit, n)) for omit in omission_sets]
    prepared = scorer.prepare(requests)
    results = run_paths(scorer, prepared, [dense_path, *paths], reuse_prefix)
    return results[dense_path], [results[path] for path in paths]


def score_candidates(
    scorer: Scorer,
    requests: Sequence[tuple[str, str]],
    omission_sets: Sequence[Sequence[int]],
    reuse_prefix: bool = True,
) -> tuple[list[float], list[list[float]]]:
    """Per-token mean log-likelihood of every request, dense and under each omission set.

    Returns ``(dense, scores)`` with ``dense[i]`` for request ``i`` and ``scores[i][k]`` for omission set ``k``
    (:func:`run_sets`' scores, per token).
    """
    dense, per_set = run_sets(scorer, requests, omission_sets, reuse_prefix)
    rows = [[scores[i].mean_logprob for scores in per_set] for i in range(len(dense))]
    return [s.mean_logprob for s in dense], rows


def choice_columns(
    unit: dict, gold: Sequence[Sequence[Score]], others: Sequence[Sequence[Score]]
) -> list[dict[str, list | float | bool]]:
    """Per item of ``unit``, the all-choice columns of its row (:data:`~pudding.routerdata.dataset.CHOICE_COLUMNS`, in
    that order).

    ``gold[s][i]`` is item ``i``'s gold score under set ``s`` (0: dense, then the K candidates), ``others[s][j]`` the
    score of the ``j``-th non-gold request of the unit, in item order then choice order (:func:`other_requests`).
    ``posterior`` is the gold choice's log-probability among the item's choices (a log-softmax over their summed
    log-likelihoods) and ``correct`` whether ``acc`` picks the gold choice; the ``_norm`` pair does the same over
    length-normalised log-likelihoods where the task reports ``acc_norm`` (lm-eval's metric), and equals the ``acc``
    pair elsewhere.
    """
    values: list[dict[str, list]] = [{name: [] for name in CHOICE_METRICS} for _ in unit["gold"]]
    for s in range(len(gold)):
        at = 0
        for i, (choices, g) in enumerate(zip(unit["choices"], unit["gold"], strict=True)):
            lls = []
            for c in range(len(choices)):
                if c == g:
                    lls.append(gold[s][i].logprob)
                else:
                    lls.append(others[s][at].logprob)
                    at += 1
            post, right = gold_posterior(lls, g)
            normed = length_normalised(lls, choices) if unit["acc_norm"] else None
            post_norm, right_norm = gold_posterior(normed, g) if normed is not None else (post, right)
            for name, value in zip(CHOICE_METRICS, (post, post_norm, right, right_norm), strict=True):
                values[i][name].append(value)
    rows = []
    for item in values:
        row: dict[str, list | float | bool] = {}
        for name in CHOICE_METRICS:
            dense, *sets = item[name]
            row[name], row[f"dense_{name}"] = sets, dense
        rows.append(row)
    return rows


def other_requests(unit: dict) -> list[tuple[str, str]]:
    """The unit's non-gold requests, in item order then choice order (what :func:`choice_columns` reads)."""
    return [
        tuple(request)
        for requests, g in zip(unit["requests"], unit["gold"], strict=True)
        for c, request in enumerate(requests)
        if c != g
    ]


class ScoringModule(LightningModule):
    """Scores router items under every candidate omission set; ``predict_step`` takes one work unit.

    The base model is loaded in :meth:`setup`, i.e. in each process after Lightning has launched it, straight onto
    that process's device, so nothing large is pickled or copied between processes.

    Args:
        candidates: Candidate file from ``pudding candidates`` (its sha256 is part of the build key).
        llm: The base LLM (:class:`~pudding.core.llm.LLMOptions`; ``base`` null: the candidate file's). It runs on
            each process's trainer device, so ``device`` must be auto.
        reuse_prefix: Start each run from recorded hidden states where it parts from an earlier one (exact).
        all_choices: Also score every other answer choice and add the all-choice columns (posterior and
            correctness per set, :func:`choice_columns`); part of the build key only when true, so a gold-only
            build keeps its key.
    """

    def __init__(
        self, candidates: str, llm: LLMOptions | None = None, reuse_prefix: bool = True, all_choices: bool = False
    ) -> None:
        super().__init__()
        self.llm = llm or LLMOptions()
        if self.llm.device != "auto":
            raise OptionError(
                f"option device: {self.llm.device!r}; pudding dataset runs where its --trainer.accelerator and "
                "--trainer.devices place it, so leave device auto"
            )
        if self.llm.device_map is not None:
            raise OptionError(
                f"option device_map: {self.llm.device_map!r}; pudding dataset loads the model on each process's "
                "trainer device, so leave device_map null"
            )
        self.candidates_path = Path(candidates).expanduser().resolve()
        self.cset: CandidateSet = load_candidates(self.candidates_path)
        self.candidates_sha256 = file_hash(self.candidates_path)
        self.base_name = self.llm.base_or(self.cset.base_model)
        self.reuse_prefix = reuse_prefix
        self.all_choices = bool(all_choices)
        self.lm: torch.nn.Module | None = None
        self.scorer: Scorer | None = None

    @property
    def batch_tokens(self) -> int | str:
        return self.llm.batch_tokens

    @property
    def dtype_name(self) -> str:
        """The ``dtype`` option as given (``auto`` resolves per device)."""
        return self.llm.dtype

    @property
    def omission_sets(self) -> list[tuple[int, ...]]:
        return self.cset.omission_sets

    def dtype_choice(self, device_type: str) -> DtypeChoice:
        """The dtype the model runs in on ``device_type`` and why (``auto`` resolves per machine)."""
        return self.llm.dtype_choice(device_type)

    def torch_dtype(self, device_type: str) -> torch.dtype:
        return self.dtype_choice(device_type).dtype

    def identity(self, device_type: str) -> dict:
        """What the scored numbers depend on from the model side (``all_choices`` only when set: a gold-only build
        keeps the key it always had)."""
        identity = {
            "base": self.base_name,
            "dtype": str(self.torch_dtype(device_type)).removeprefix("torch."),
            "device_type": device_type,
            "candidates_sha256": self.candidates_sha256,
            "batch_tokens": self.llm.batch_tokens_key(device_type),
            "reuse_prefix": self.reuse_prefix,
        }
        if self.all_choices:
            identity["all_choices"] = True
        return identity

    def setup(self, stage: str) -> None:
        if self.lm is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else torch.device("cpu")
        dtype = str(self.torch_dtype(device.type)).removeprefix("torch.")
        base = replace(self.llm, dtype=dtype).load(self.base_name, device)
        scorer = Scorer(base.model, base.tokenizer, batch_tokens=self.batch_tokens)
        if scorer.num_blocks != self.cset.num_blocks:
            raise CandidateFileError(
                f"{self.candidates_path}: candidates were made for a model with {self.cset.num_blocks} blocks, "
                f"but base model {self.base_name!r} has {scorer.num_blocks}"
            )
        self.lm = base.model
        self.scorer = scorer

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        if self.scorer is None:
            raise RuntimeError("ScoringModule.setup() has not loaded the base model")
        requests = list(zip(batch["context"], batch["continuation"], strict=True))
        dense, per_set = run_sets(self.scorer, requests, self.omission_sets, self.reuse_prefix)
        rows = [
            {
                "index": index,
                "item_id": item_id,
                "scores": [scores[i].mean_logprob for scores in per_set],
                "dense_score": dense[i].mean_logprob,
            }
            for i, (index, item_id) in enumerate(zip(batch["index"], batch["item_id"], strict=True))
        ]
        if self.all_choices:
            others = other_requests(batch)
            other_dense, other_sets = run_sets(self.scorer, others, self.omission_sets, self.reuse_prefix)
            extra = choice_columns(batch, [dense, *per_set], [other_dense, *other_sets])
            for row, columns in zip(rows, extra, strict=True):
                row.update(columns)
        return {"chunk_id": batch["chunk_id"], "task": batch["task"], "rows": rows}
