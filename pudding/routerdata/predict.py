"""The scoring LightningModule of ``pudding dataset``: one predict step scores one work unit under K+1 block sets.

The router's target for an item is, per candidate omission set, the per-token mean log-likelihood of the item's
gold continuation (and the dense model's value beside it). Only the gold request is scored. A unit's requests are
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

from pudding.core.candidates import CandidateFileError, CandidateSet, file_hash, load_candidates
from pudding.core.errors import OptionError
from pudding.core.llm import LLMOptions
from pudding.core.models.dtype import DtypeChoice
from pudding.core.models.omission import kept_blocks
from pudding.core.prefix import run_paths
from pudding.core.scoring import Scorer


def score_candidates(
    scorer: Scorer,
    requests: Sequence[tuple[str, str]],
    omission_sets: Sequence[Sequence[int]],
    reuse_prefix: bool = True,
) -> tuple[list[float], list[list[float]]]:
    """Per-token mean log-likelihood of every request, dense and under each omission set.

    Returns ``(dense, scores)`` with ``dense[i]`` for request ``i`` and ``scores[i][k]`` for omission set ``k``.
    The requests are prepared once; with ``reuse_prefix`` runs share their common block prefixes
    (:mod:`pudding.core.prefix`).
    """
    n = scorer.num_blocks
    dense_path = tuple(range(n))
    paths = [tuple(kept_blocks(omit, n)) for omit in omission_sets]
    prepared = scorer.prepare(requests)
    results = run_paths(scorer, prepared, [dense_path, *paths], reuse_prefix)
    rows = [[results[path][i].mean_logprob for path in paths] for i in range(len(prepared.requests))]
    return [s.mean_logprob for s in results[dense_path]], rows


class ScoringModule(LightningModule):
    """Scores router items under every candidate omission set; ``predict_step`` takes one work unit.

    The base model is loaded in :meth:`setup`, i.e. in each process after Lightning has launched it, straight onto
    that process's device, so nothing large is pickled or copied between processes.

    Args:
        candidates: Candidate file from ``pudding candidates`` (its sha256 is part of the build key).
        llm: The base LLM (:class:`~pudding.core.llm.LLMOptions`; ``base`` null: the candidate file's). It runs on
            each process's trainer device, so ``device`` must be auto.
        reuse_prefix: Start each run from recorded hidden states where it parts from an earlier one (exact).
    """

    def __init__(self, candidates: str, llm: LLMOptions | None = None, reuse_prefix: bool = True) -> None:
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
        """What the scored numbers depend on from the model side."""
        return {
            "base": self.base_name,
            "dtype": str(self.torch_dtype(device_type)).removeprefix("torch."),
            "device_type": device_type,
            "candidates_sha256": self.candidates_sha256,
            "batch_tokens": self.llm.batch_tokens_key(device_type),
            "reuse_prefix": self.reuse_prefix,
        }

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
        dense, scores = score_candidates(self.scorer, requests, self.omission_sets, self.reuse_prefix)
        rows = [
            {"index": index, "item_id": item_id, "scores": row, "dense_score": d}
            for index, item_id, row, d in zip(batch["index"], batch["item_id"], scores, dense, strict=True)
        ]
        return {"chunk_id": batch["chunk_id"], "task": batch["task"], "rows": rows}
