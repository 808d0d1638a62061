"""Router items cut into fixed work units, served by a predict DataModule.

A work unit (``chunk``) is a fixed group of up to ``items_per_batch`` items of one task; its composition depends
only on the items and ``items_per_batch``, never on how many processes run or on what an earlier, killed run
finished. So every item is scored in the same batch whatever the world size or restart history, which is what makes
a DDP run, a resumed run and a single uninterrupted run write exactly the same numbers. Within a task, items are
ordered by prompt length before cutting, so a chunk holds items of similar length and pads little.

The DataModule serves one chunk per predict batch (``batch_size=1`` over chunks); Lightning's distributed sampler
then deals whole chunks to ranks with no code of ours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from pudding.core.errors import OptionError
from pudding.core.tasks import (
    DEFAULT_TASKS,
    DataOptions,
    Item,
    TaskDataError,
    get_task,
    parse_task_list,
    router_items,
)


@dataclass(frozen=True)
class Chunk:
    """One work unit: ``indices`` are positions in its task's router-item list (source order)."""

    chunk_id: str
    task: str
    indices: tuple[int, ...]


def gold_request(item: Item) -> tuple[str, str]:
    """The (context, continuation) pair of the gold answer: the only request the router target needs."""
    return item.requests[item.gold]


def make_chunks(items_by_task: dict[str, Sequence[Item]], items_per_batch: int) -> list[Chunk]:
    """Cut each task's items into chunks of similar prompt length, in a fixed, world-size-independent way."""
    if items_per_batch < 1:
        raise OptionError(f"option items_per_batch must be positive, got {items_per_batch}")
    chunks = []
    for task, items in items_by_task.items():
        by_length = sorted(range(len(items)), key=lambda i: sum(map(len, gold_request(items[i]))))
        for n, lo in enumerate(range(0, len(by_length), items_per_batch)):
            indices = tuple(sorted(by_length[lo : lo + items_per_batch]))
            chunks.append(Chunk(chunk_id=f"{task}-{n:05d}", task=task, indices=indices))
    return chunks


def choices_digest(items_by_task: dict[str, Sequence[Item]]) -> str:
    """sha256 of what an all-choice build reads beyond :func:`items_digest`: every request, choice and the gold
    index (a changed distractor changes an all-choice build's key and is refused by its rebuild)."""
    digest = hashlib.sha256()
    for task, items in items_by_task.items():
        for item in items:
            record = [task, item.item_id, item.gold, [list(r) for r in item.requests], list(item.choices)]
            digest.update(json.dumps(record, ensure_ascii=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def items_digest(items_by_task: dict[str, Sequence[Item]]) -> str:
    """sha256 of everything scoring reads from the items: a changed data file changes the build key."""
    digest = hashlib.sha256()
    for task, items in items_by_task.items():
        for item in items:
            record = [task, item.item_id, item.router_text, *gold_request(item)]
            digest.update(json.dumps(record, ensure_ascii=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


class _Units(Dataset):
    """Map-style dataset of work units, each a plain dict (Lightning's device transfer leaves its lists alone)."""

    def __init__(self, units: list[dict]) -> None:
        self.units = units

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> dict:
        return self.units[index]


def _only(batch: list[dict]) -> dict:
    """Collate for ``batch_size=1`` over work units: the unit itself (module level so workers can pickle it)."""
    (unit,) = batch
    return unit


class ScoringDataModule(LightningDataModule):
    """Predict data for ``pudding dataset``: the router items of the tasks, as fixed work units.

    ``pending`` (set by the builder before ``trainer.predict``) restricts the run to the chunks not yet written;
    rank 0's list is broadcast in :meth:`setup`, so all ranks agree on it even while shards are being written.
    """

    def __init__(
        self,
        tasks: Sequence[str] | str = DEFAULT_TASKS,
        limit: int | None = None,
        data_dir: str | None = None,
        router_fraction: float = 0.5,
        split_seed: int = 0,
        items_per_batch: int = 64,
    ) -> None:
        super().__init__()
        if limit is not None and limit < 1:
            raise OptionError(f"option limit: must be a positive number of items per task, got {limit}")
        if items_per_batch < 1:
            raise OptionError(f"option items_per_batch must be positive, got {items_per_batch}")
        self.tasks = parse_task_list(tasks)
        self.limit = limit
        self.options = DataOptions(data_dir=data_dir, router_fraction=router_fraction, split_seed=split_seed)
        self.items_per_batch = items_per_batch
        self.items: dict[str, list[Item]] = {}
        self.notes: dict[str, str] = {}
        self.chunks: list[Chunk] = []
        self.pending: list[str] | None = None
        self._units: list[dict] = []

    def load(self) -> None:
        """Read the router items of every task (idempotent; a fraction of a second for the six defaults)."""
        if self.items:
            return
        for task in self.tasks:
            items, note = router_items(task, self.options)
            if self.limit is not None and len(items) > self.limit:
                items = items[: self.limit]
                note += f"; limit={self.limit}: first {self.limit} kept"
            if not items:
                raise TaskDataError(f"{task}: no router items ({note})")
            self.items[task] = items
            self.notes[task] = note
        self.chunks = make_chunks(self.items, self.items_per_batch)

    @property
    def num_items(self) -> int:
        return sum(len(items) for items in self.items.values())

    def identity(self) -> dict:
        """What the scored numbers depend on from the data side (the data folder's path does not matter)."""
        self.load()
        return {
            "tasks": list(self.tasks),
            "limit": self.limit,
            "router_fraction": self.options.router_fraction,
            "split_seed": self.options.split_seed,
            "items_per_batch": self.items_per_batch,
            "items_sha256": items_digest(self.items),
        }

    def describe(self) -> dict:
        """Human-facing data settings for the dataset's metadata."""
        data_dir = self.options.data_dir
        return {
            "tasks": list(self.tasks),
            "limit": self.limit,
            "data_dir": None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
            "router_fraction": self.options.router_fraction,
            "split_seed": self.options.split_seed,
            "items_per_batch": self.items_per_batch,
            "notes": dict(self.notes),
        }

    def unit(self, chunk: Chunk) -> dict:
        """The predict batch for ``chunk``: parallel lists, the gold request of each item, and what an all-choice
        build reads besides (every request, the choices' strings, the gold index, whether the task reports
        ``acc_norm``)."""
        items = [self.items[chunk.task][i] for i in chunk.indices]
        return {
            "chunk_id": chunk.chunk_id,
            "task": chunk.task,
            "index": list(chunk.indices),
            "item_id": [item.item_id for item in items],
            "context": [gold_request(item)[0] for item in items],
            "continuation": [gold_request(item)[1] for item in items],
            "requests": [[list(r) for r in item.requests] for item in items],
            "choices": [list(item.choices) for item in items],
            "gold": [item.gold for item in items],
            "acc_norm": "acc_norm" in get_task(chunk.task).metrics,
        }

    def setup(self, stage: str | None = None) -> None:
        self.load()
        wanted = [c.chunk_id for c in self.chunks] if self.pending is None else list(self.pending)
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            wanted = trainer.strategy.broadcast(wanted, src=0)
            # Lightning's predict sampler needs a unit for every rank; a repeated unit rewrites the same shard
            wanted += [wanted[i % len(wanted)] for i in range(max(0, trainer.world_size - len(wanted)))]
        by_id = {c.chunk_id: c for c in self.chunks}
        unknown = [cid for cid in wanted if cid not in by_id]
        if unknown:
            raise ValueError(f"pending chunks {unknown[:3]} are not chunks of this configuration")
        self._units = [self.unit(by_id[cid]) for cid in wanted]

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_Units(self._units), batch_size=1, shuffle=False, collate_fn=_only, num_workers=0)
