"""Routed zero-shot accuracy while the router trains: a Lightning callback that needs the LLM only once.

Routed pruning runs each evaluation item with one of the K candidate omission sets. So whether an item is answered
correctly depends only on which set the router picks for it, and every set's outcome on every item can be computed
once, before training, with the project's scoring engine (:func:`pudding.core.outcomes.compute_outcomes`, which shares
block prefixes between the sets). Each evaluated epoch then only routes the items' prompts and looks the chosen sets'
outcomes up: a few seconds of router inference instead of an LLM evaluation.

The items are the tasks' evaluation items that never served the candidate search or the router data
(:func:`pudding.core.tasks.eval_items` with the router dataset's own ``router_fraction`` and ``split_seed``), the first
``limit`` of each task. Accuracies are fractions in [0, 1], as ``pudding eval`` writes them to JSON (its printed
tables show percent); the task average is the mean of per-task accuracies (:func:`pudding.core.accuracy.average`).

Logged per evaluated epoch: ``zeroshot/<task>`` and ``zeroshot/average`` (the router's choices), and the reference
lines ``zeroshot_ref/{dense,best_static,random,oracle}`` (task averages) and ``zeroshot_ref/<ref>/<task>``. The
references are computed once; they are logged with every evaluation so TensorBoard draws them as flat lines beside
the routed curve. ``best_static`` is the module's best static candidate, picked on router-training rows (never on
these evaluation labels); ``random`` is the expected accuracy of choosing a candidate uniformly at random (the mean
of the static accuracies); ``oracle`` counts an item correct when any candidate answers it.

The outcomes are cached under ``cache_dir`` in one small JSON table whose key covers the base model, the resolved
dtype, the device type, the candidate file's sha256, the omission sets, the scoring batch budget and a digest of
every item; a later run with the same key loads it without loading the LLM. While computing, each chunk of items is
also kept as a :mod:`pudding.core.outcomes` shard, so an interrupted computation resumes where it stopped.

Under DDP the ranks share that one-time scoring (:func:`pudding.core.outcomes.spread_outcomes`): each scores its
share of the chunks into ``outcomes_dir`` and waits for the others' shards by polling the folder, not in a collective,
so a long scoring cannot run into the process group's timeout; ``outcomes_dir`` must be one folder all ranks see.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from pudding.core.accuracy import average
from pudding.core.candidates import Choices
from pudding.core.errors import OptionError, PuddingError
from pudding.core.llm import LLMOptions
from pudding.core.models.loading import load_base
from pudding.core.outcomes import (
    DEFAULT_CHUNK_ITEMS,
    DEFAULT_OUTCOMES_DIR,
    Outcomes,
    items_key,
    model_key,
    set_key,
    spread_outcomes,
)
from pudding.core.outcomes_progress import outcomes_saver
from pudding.core.results import routed_row, spread_rows, static_row
from pudding.core.scoring import Scorer
from pudding.core.spread import WHOLE, Share
from pudding.core.store import KeyedStore, digest
from pudding.core.tasks import DataOptions, Item, eval_items, parse_task_list
from pudding.router.static import best_static_index
from pudding.routerdata.dataset import read_meta

TABLE_FORMAT = 1
REFERENCES = ("dense", "best_static", "random", "oracle")
DEFAULT_ZEROSHOT_CACHE = str(Path("checkpoints") / "router" / "zeroshot_cache")


class ZeroShotError(PuddingError):
    """The callback cannot evaluate: missing dataset metadata, mismatched candidates, or leaking items."""


# ------------------------------------------------------------------------------------------------ pure parts


def reference_accuracies(
    outcomes: dict[str, Outcomes], sets: Sequence[Sequence[int]], best_static: int, num_blocks: int, metric: str = "acc"
) -> dict[str, dict[str, float]]:
    """Per reference (dense, best_static, random, oracle), per task: accuracy on the outcomes' items (a fraction),
    from the rows of the results table (:mod:`pudding.core.results`). ``sets`` are the router's choices."""
    random, oracle = spread_rows(outcomes, sets, num_blocks)
    rows = {
        "dense": static_row("dense", "dense", outcomes, (), num_blocks),
        "best_static": static_row("best static", "best_static", outcomes, sets[best_static], num_blocks),
        "random": random,
        "oracle": oracle,
    }
    return {name: {task: row.metric(task, metric) for task in outcomes} for name, row in rows.items()}


def routed_accuracies(
    outcomes: dict[str, Outcomes],
    sets: Sequence[Sequence[int]],
    choices: dict[str, Sequence[int]],
    num_blocks: int,
    metric: str = "acc",
) -> dict[str, float]:
    """Per task: accuracy when item ``i`` runs with ``sets[choices[task][i]]`` (the table's routed row)."""
    row = routed_row("routed", outcomes, sets, choices, num_blocks)
    return {task: row.metric(task, metric) for task in outcomes}


def task_average(per_task: dict[str, float]) -> float:
    """Mean over tasks of per-task accuracy, through the one definition :func:`pudding.core.accuracy.average`."""
    return average({task: {"acc": value} for task, value in per_task.items()})


def save_table(path: Path, key: str, identity: dict, outcomes: dict[str, Outcomes]) -> None:
    """Write every set's per-item predictions, per task, atomically (a few hundred kB for the default run)."""
    tasks = {
        task: {
            "item_ids": out.item_ids,
            "gold": out.gold.tolist(),
            "pred": {k: v.tolist() for k, v in out.pred.items()},
            "pred_norm": {k: v.tolist() for k, v in out.pred_norm.items()},
        }
        for task, out in outcomes.items()
    }
    KeyedStore(path.parent).write(path.name, key, {"format": TABLE_FORMAT, "identity": identity, "tasks": tasks})


def load_table(path: Path, key: str) -> dict[str, Outcomes] | None:
    """The outcomes stored under ``key``, or None when the file is absent, unreadable or from other settings."""
    table = KeyedStore(path.parent).read(path.name, key)
    if table is None or table.get("format") != TABLE_FORMAT:
        return None
    return {
        task: Outcomes(
            task,
            list(t["item_ids"]),
            np.asarray(t["gold"], dtype=np.int64),
            {k: np.asarray(v, dtype=np.int64) for k, v in t["pred"].items()},
            {k: np.asarray(v, dtype=np.int64) for k, v in t["pred_norm"].items()},
        )
        for task, t in table["tasks"].items()
    }


def dataset_split_options(meta: dict) -> dict[str, tuple[float, int]]:
    """Task → (router_fraction, split_seed) the router data was built with, over every dataset the module loaded.

    The datamodule's ``meta`` is its first dataset's metadata plus the list of ``datasets``; the others are read
    from their folders, so a run that combines one dataset per task evaluates each task with its own split.
    """
    metas = [meta]
    for path in meta.get("datasets", [])[1:]:
        metas.append(read_meta(path))
    out: dict[str, tuple[float, int]] = {}
    for m in metas:
        tasks = m.get("tasks") or list(m.get("rows_per_task", {}))
        for task in tasks:
            out.setdefault(task, (m.get("router_fraction"), m.get("split_seed")))
    return out


# --------------------------------------------------------------------------------------------------- callback


class ZeroShotEvalCallback(Callback):
    """Logs the zero-shot accuracy of routed pruning on held-out evaluation items at the end of validation epochs.

    Needs a module whose ``router`` has ``omission_sets``, ``best_static`` and ``route_texts(texts) -> list[int]``
    (:class:`~pudding.router.model.Router`), and a datamodule with the router dataset's ``meta`` (and ``train_set`` rows
    with raw ``scores``, used only when the router has no ``best_static``). After each evaluation, ``last_results``
    holds the routed accuracies just logged (``zeroshot/<task>``, ``zeroshot/average``), ``references`` the reference
    lines, and ``history`` one entry per evaluated epoch. With a ``self`` router the LLM loaded for the outcomes also
    computes the items' router features (:meth:`share_llm`), so the router's encoder never loads a second copy for them.

    Args:
        tasks: Tasks to evaluate (YAML list or comma-separated); None: every task of the router dataset.
        limit: Evaluate the first ``limit`` evaluation items of each task (None: all of them).
        every_n_epochs: Evaluate after every n-th validation epoch (1: every epoch). Sanity checking never counts.
        data_dir: Folder of the original benchmark files (layout of ``../shared/data``); None: the folder the router
            dataset was built from (its metadata; the hub if it was built from the hub).
        llm: The base LLM the outcomes are computed with (:class:`~pudding.core.llm.LLMOptions`; ``base`` null: the
            router dataset's ``base_model``; ``device`` auto: the device the router trains on).
        cache_dir: Where the outcome table is kept (a later run with the same key loads it without the LLM).
        outcomes_dir: Where the resumable per-chunk outcome shards are kept; shared with ``pudding compare``, which
            reuses them for the same items.
        outcomes_progress: An outcomes progress file (as ``pudding compare --outcomes_progress``; item ids and predicted
            choices only): when the outcomes are computed it seeds ``outcomes_dir`` if it exists, and it is rewritten
            from ``outcomes_dir`` as chunks finish and after each task. None: no such file.
        router_fraction: Share of each validation split reserved for router data; None: the router dataset's value.
            Only change it if the dataset's metadata lacks it: another value would evaluate on router data.
        split_seed: Seed of that reservation; None: the router dataset's value (same caveat).
        metric: acc or acc_norm (tasks without acc_norm, e.g. BoolQ, use acc), as in ``pudding eval``.
        chunk_items: Items scored together per shard when computing the outcomes.
    """

    def __init__(
        self,
        tasks: list[str] | str | None = None,
        limit: int | None = 200,
        every_n_epochs: int = 1,
        data_dir: str | None = None,
        llm: LLMOptions = LLMOptions(),
        cache_dir: str = DEFAULT_ZEROSHOT_CACHE,
        outcomes_dir: str = DEFAULT_OUTCOMES_DIR,
        outcomes_progress: str | None = None,
        router_fraction: float | None = None,
        split_seed: int | None = None,
        metric: Literal["acc", "acc_norm"] = "acc",
        chunk_items: int = DEFAULT_CHUNK_ITEMS,
    ) -> None:
        super().__init__()
        if limit is not None and limit < 1:
            raise OptionError(f"ZeroShotEvalCallback option limit: must be a positive number of items, got {limit}")
        if every_n_epochs < 1:
            raise OptionError(f"ZeroShotEvalCallback option every_n_epochs: must be at least 1, got {every_n_epochs}")
        if metric not in ("acc", "acc_norm"):
            raise OptionError(f"ZeroShotEvalCallback option metric: {metric!r} is not acc or acc_norm")
        self.tasks = None if tasks is None else parse_task_list(tasks)
        self.limit = limit
        self.every_n_epochs = every_n_epochs
        self.data_dir = data_dir
        self.llm = llm or LLMOptions()
        self.cache_dir = Path(cache_dir)
        self.outcomes_dir = Path(outcomes_dir)
        self.outcomes_progress = None if outcomes_progress is None else Path(outcomes_progress)
        self.router_fraction = router_fraction
        self.split_seed = split_seed
        self.metric = metric
        self.chunk_items = chunk_items
        self.items: dict[str, list[Item]] = {}
        self.outcomes: dict[str, Outcomes] | None = None
        self.sets: list[tuple[int, ...]] = []
        self.set_keys: list[str] = []
        self.num_blocks = 0
        self.references: dict[str, float] = {}
        self.last_results: dict[str, float] = {}
        self.last_choices: dict[str, list[int]] = {}
        self.history: list[dict[str, float]] = []
        self.table_path: Path | None = None
        self._key = ""
        self._identity: dict = {}
        self._base, self._dtype, self._device = "", "", torch.device("cpu")

    # ---------------------------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:  # a smoke test of the training loop: no LLM evaluation
            return
        self.prepare(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.prepare(trainer, pl_module)
        self.evaluate(trainer, pl_module)

    # ---------------------------------------------------------------------------------------- once per run
    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Load the items and every candidate's outcomes on them. Under DDP the ranks share the scoring: each scores
        its own chunks into ``outcomes_dir`` and waits for the others' by polling it (no collective while anyone
        scores, so no process-group timeout), then every rank reads the same outcomes from the shards."""
        if self.outcomes is not None:
            return
        data = trainer.datamodule
        meta = getattr(data, "meta", None)
        if not meta:
            raise ZeroShotError(
                "ZeroShotEvalCallback needs a datamodule whose `meta` holds the router dataset's metadata "
                "(RouterDataModule after setup)"
            )
        router = pl_module.router
        device = self.llm.run_device(pl_module.device)
        rows = [*getattr(data, "train_set", []), *getattr(data, "val_set", [])]
        sets = self.plan(meta, rows, router.omission_sets, device)
        share = Share(trainer.global_rank, trainer.world_size)
        barrier = (lambda: trainer.strategy.barrier("pudding-zeroshot-seeded")) if share.spread else None
        outcomes = self.load_or_compute(sets, router, share, barrier)
        best = self._best_static(router, data)
        refs = reference_accuracies(outcomes, self.sets, best, self.num_blocks, self.metric)
        self.references = {}
        for name, per_task in refs.items():
            self.references[f"zeroshot_ref/{name}"] = task_average(per_task)
            self.references |= {f"zeroshot_ref/{name}/{task}": value for task, value in per_task.items()}
        self.outcomes = outcomes
        self.chart_layout(trainer)
        shown = ", ".join(f"{name} {100 * self.references[f'zeroshot_ref/{name}']:.2f}" for name in REFERENCES)
        rank_zero_info(f"[zeroshot] {sum(map(len, self.items.values()))} items; references (acc %): {shown}")

    def chart_layout(self, trainer: Trainer) -> dict:
        """TensorBoard's custom-scalars layout: one chart per task (and one for the average) drawing the routed
        accuracy over its reference lines, instead of five separate cards. Written to every TensorBoard logger."""
        from lightning.pytorch.loggers import TensorBoardLogger

        charts = {"average": ["Multiline", ["zeroshot/average", *(f"zeroshot_ref/{r}" for r in REFERENCES)]]}
        for task in self.items:
            charts[task] = ["Multiline", [f"zeroshot/{task}", *(f"zeroshot_ref/{r}/{task}" for r in REFERENCES)]]
        layout = {"routed zero-shot accuracy and its references": charts}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
                logger.experiment.add_custom_scalars(layout)
        return layout

    def plan(self, meta: dict, rows: Sequence[dict], omission_sets: Sequence[Sequence[int]], device: torch.device):
        """Load the items, check them and the sets against the router dataset, and fix the table's key and path.

        ``rows`` are the router dataset's rows (``task``, ``item_id``): no evaluation item may be one of them.
        Returns the omission sets as tuples.
        """
        sets = [tuple(int(b) for b in s) for s in omission_sets]
        meta_sets = list(Choices.from_meta(meta).omission_sets) if "omission_sets" in meta else sets
        if sets != meta_sets:
            raise ZeroShotError(
                f"ZeroShotEvalCallback: the module's {len(sets)} omission sets differ from the router dataset's "
                f"{len(meta_sets)} ({meta.get('candidates_file', 'candidate file unknown')})"
            )
        self.sets, self.set_keys = sets, [set_key(s) for s in sets]
        self.num_blocks = int(meta.get("num_blocks") or 0)
        self.items = self._load_items(meta, rows)
        self._base = self.llm.base_or(meta["base_model"])
        self._device = device
        self._dtype = self.llm.dtype_choice(device).name
        self._identity = {
            "format": TABLE_FORMAT,
            "base": self._base,
            "dtype": self._dtype,
            "device_type": device.type,
            "candidates_sha256": meta.get("candidates_sha256"),
            "omission_sets": [list(s) for s in sets],
            "batch_tokens": self.llm.batch_tokens_key(device),
            "chunk_items": self.chunk_items,
            "items": {task: items_key(items) for task, items in self.items.items()},
        }
        self._key = digest(self._identity)
        self.table_path = self.cache_dir / f"table-{self._key[:16]}.json"
        return sets

    def load_or_compute(
        self,
        sets: list[tuple[int, ...]],
        router: Any = None,
        share: Share = WHOLE,
        barrier: Callable[[], None] | None = None,
    ) -> dict[str, Outcomes]:
        """The outcome table of :meth:`plan`'s key: read from ``cache_dir``, or computed with the LLM and saved.

        When the LLM is loaded here and ``router`` is a ``self`` router, the items' router features are computed
        from that same copy (:meth:`share_llm`). With ``share`` one of several ranks (DDP), every rank calls this:
        rank 0 first unpacks ``outcomes_progress`` (seconds), ``barrier`` (every rank, cache hit or not) makes the
        others start after it, then the ranks score their shares (:func:`pudding.core.outcomes.spread_outcomes`)
        and rank 0 alone writes the table.
        """
        outcomes = load_table(self.table_path, self._key)
        saver = None
        if outcomes is None and self.outcomes_progress is not None and share.lead:
            saver = outcomes_saver(
                self.outcomes_dir, self.outcomes_progress, log=lambda s: rank_zero_info(f"[zeroshot] {s}")
            )
            saver.seed()
        if barrier is not None:
            barrier()
        if outcomes is not None:
            rank_zero_info(f"[zeroshot] outcomes loaded from {self.table_path}")
            return outcomes
        outcomes = self._compute(self._base, self._dtype, self._device, sets, router, share, saver)
        if share.lead:
            save_table(self.table_path, self._key, self._identity, outcomes)
        return outcomes

    def _load_items(self, meta: dict, rows: Sequence[dict]) -> dict[str, list[Item]]:
        splits = dataset_split_options(meta)
        tasks = self.tasks or tuple(splits)
        if not tasks:
            raise ZeroShotError("ZeroShotEvalCallback: the router dataset's metadata names no tasks; set `tasks`")
        items: dict[str, list[Item]] = {}
        for task in tasks:
            fraction, seed = splits.get(task, (None, None))
            fraction = self.router_fraction if self.router_fraction is not None else fraction
            seed = self.split_seed if self.split_seed is not None else seed
            if fraction is None or seed is None:
                raise ZeroShotError(
                    f"ZeroShotEvalCallback: the router dataset's metadata has no router_fraction/split_seed for "
                    f"task {task!r}; set the callback's router_fraction and split_seed to the values it was built with"
                )
            data_dir = self.data_dir if self.data_dir is not None else meta.get("data_dir")
            task_items, _ = eval_items(task, DataOptions(data_dir, float(fraction), int(seed)))
            items[task] = task_items[: self.limit] if self.limit else task_items
        used = {(row["task"], row["item_id"]) for row in rows}
        for task, task_items in items.items():
            leaked = [item.item_id for item in task_items if (task, item.item_id) in used]
            if leaked:
                raise ZeroShotError(
                    f"ZeroShotEvalCallback: {len(leaked)} {task} evaluation items (e.g. {leaked[0]!r}) are rows of "
                    "the router dataset; the callback's router_fraction/split_seed/data_dir must match the dataset's"
                )
        return items

    def _compute(
        self,
        base: str,
        dtype: str,
        device: torch.device,
        sets: list[tuple[int, ...]],
        router: Any = None,
        share: Share = WHOLE,
        saver: Any = None,
    ) -> dict:
        """Score the dense model and every candidate on the items once (this rank's share of the chunks, then the
        others' read from the shards), then free the LLM."""
        spread = f" (rank {share.rank} of {share.world} scores its share)" if share.spread else ""
        rank_zero_info(f"[zeroshot] computing outcomes of {len(sets)} candidates + dense with {base} ({dtype}){spread}")
        lm = load_base(base, dtype=dtype, device=str(device), cache_dir=self.llm.cache_dir)
        try:
            scorer = Scorer(lm.model, lm.tokenizer, batch_tokens=self.llm.batch_tokens)
            for s in sets:
                if any(b >= scorer.num_blocks for b in s):
                    raise ZeroShotError(
                        f"ZeroShotEvalCallback: omission set {list(s)} names blocks beyond the {scorer.num_blocks} "
                        f"of base model {base!r}"
                    )

            chunks: list[int] = []

            def progress(task: str, done: int, total: int, scored: int) -> None:
                rank_zero_info(f"[zeroshot] {task}: chunk {done}/{total} ({scored} sets scored)")
                chunks.append(scored)
                if saver is not None:
                    saver.maybe_save()

            outcomes = spread_outcomes(
                scorer,
                self.items,
                list(dict.fromkeys([(), *sets])),  # the dense model once, also when it is a choice
                model_key(base, dtype, device.type),
                self.outcomes_dir,
                share,
                chunk_items=self.chunk_items,
                on_chunk=progress,
                log=lambda s: rank_zero_info(f"[zeroshot] {s}"),
            )
            if share.spread:  # every rank says what it did: the work was shared, not left to rank 0
                scored = sum(1 for n in chunks if n)
                print(f"[zeroshot] rank {share.rank}: {len(chunks)} chunks of its share, {scored} scored", flush=True)
            if saver is not None:
                saver.save()
            self.share_llm(router, lm)
            return outcomes
        finally:
            del lm
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def share_llm(self, router: Any, lm) -> bool:
        """A ``self`` router reads this base LLM's first blocks: compute its features of the items from ``lm``.

        Routing the items every epoch then needs no second copy of the LLM (the router's encoder would load its own
        otherwise). Only when the router's features were computed with the same base model and dtype, so the
        features are the ones it was trained on; returns whether they were computed here. When the outcome table
        is loaded from the cache no LLM is loaded here, and the encoder loads the one copy itself.
        """
        encoder = getattr(router, "encoder", None)
        if not getattr(router, "is_self", False) or not getattr(encoder, "info", None):
            return False
        info = encoder.info
        if info.get("base_model") != self._base or info.get("dtype") != self._dtype:
            rank_zero_info(
                f"[zeroshot] the self router's features come from {info.get('base_model')} ({info.get('dtype')}), "
                f"not {self._base} ({self._dtype}): its encoder loads its own copy to route the items"
            )
            return False
        texts = [item.router_text for items in self.items.values() for item in items]
        encoder.precompute(lm.model, lm.tokenizer, texts, batch_tokens=self.llm.batch_tokens)
        return True

    @staticmethod
    def _best_static(router: Any, data: Any) -> int:
        best = getattr(router, "best_static", None)
        if best is not None:
            return int(best)
        return best_static_index(np.stack([np.asarray(row["scores"]) for row in data.train_set]))

    # ---------------------------------------------------------------------------------------- every epoch
    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Route every item, look up the chosen sets' outcomes, log and return the accuracies."""
        assert self.outcomes is not None
        texts = [item.router_text for items in self.items.values() for item in items]
        flat = [int(c) for c in pl_module.router.route_texts(texts)]
        if len(flat) != len(texts) or any(not 0 <= c < len(self.set_keys) for c in flat):
            raise ZeroShotError(
                f"ZeroShotEvalCallback: route_texts returned {len(flat)} choices for {len(texts)} prompts, or an "
                f"index outside 0..{len(self.set_keys) - 1}"
            )
        choices, at = {}, 0
        for task, items in self.items.items():
            choices[task] = flat[at : at + len(items)]
            at += len(items)
        per_task = routed_accuracies(self.outcomes, self.sets, choices, self.num_blocks, self.metric)
        results = {f"zeroshot/{task}": value for task, value in per_task.items()}
        results["zeroshot/average"] = task_average(per_task)
        # every rank routes the same items with the same weights, so the values agree without a reduction
        for name, value in {**results, **self.references}.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=False)
        self.last_results = results
        self.last_choices = choices
        self.history.append({"epoch": trainer.current_epoch, **results})
        rank_zero_info(
            f"[zeroshot] epoch {trainer.current_epoch}: routed {100 * results['zeroshot/average']:.2f} % "
            f"(best static {100 * self.references['zeroshot_ref/best_static']:.2f}, "
            f"oracle {100 * self.references['zeroshot_ref/oracle']:.2f})"
        )
        return results
