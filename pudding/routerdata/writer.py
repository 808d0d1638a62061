"""Writes each finished work unit as its own small shard file, atomically, from whichever rank scored it.

A shard exists completely or not at all (temporary file + rename), so a run killed at any moment leaves only whole
shards, and a restart simply skips the chunks whose shard exists. The writer also prints progress on rank 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from pudding.core.store import KeyedStore

SHARD_FORMAT = 1
BUILD_FILE = "build.json"
"""In a build's run dir (``<work_dir>/<key[:16]>``): the full build key and the identity it hashes."""
SHARDS = "shards"
"""In a build's run dir: the folder of its shards."""


def shard_name(chunk_id: str) -> str:
    return f"{chunk_id}.json"


def write_shard(shard_dir: Path, key: str, chunk_id: str, task: str, rows: list[dict]) -> None:
    """Write one chunk's shard atomically: its rows, tagged with the build key (whole or not at all)."""
    record = {"format": SHARD_FORMAT, "chunk_id": chunk_id, "task": task, "rows": rows}
    KeyedStore(shard_dir).write(shard_name(chunk_id), key, record)


def read_shard(shard_dir: Path, chunk_id: str, key: str) -> dict | None:
    """The shard of ``chunk_id`` if it is whole and carries this build's key, else None (a stray one is not
    trusted)."""
    shard = KeyedStore(shard_dir).read(shard_name(chunk_id), key)
    return shard if shard is not None and shard.get("format") == SHARD_FORMAT else None


def finished_shards(shard_dir: Path, key: str) -> dict[str, dict]:
    """The shards that carry this build's key, by chunk id (in file-name order)."""
    found = KeyedStore(shard_dir).keyed("*.json", key)
    return {Path(name).stem: s for name, s in found.items() if s.get("format") == SHARD_FORMAT}


def finished_chunks(shard_dir: Path, key: str) -> set[str]:
    """Chunk ids whose shard exists and carries this build's key."""
    return set(finished_shards(shard_dir, key))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ShardWriter(BasePredictionWriter):
    """Prediction writer: one JSON shard per work unit, named after the chunk, tagged with the build key.

    ``total_items`` is the number of items this run must score (all ranks together); rank 0 estimates the time left
    from its own speed, assuming the other ranks go as fast. ``after_write``, if given, is called on rank 0 after
    each of its shards is written (the progress file's saver: see :mod:`pudding.routerdata.progress`).
    """

    def __init__(
        self,
        shard_dir: str | Path,
        key: str,
        total_items: int,
        progress_every: float = 30.0,
        after_write: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.shard_dir = Path(shard_dir)
        self.key = key
        self.total_items = total_items
        self.progress_every = progress_every
        self.after_write = after_write
        self.done_items = 0
        self.done_chunks = 0
        self._start = 0.0
        self._last = 0.0

    def on_predict_start(self, trainer, pl_module) -> None:
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._start = self._last = time.perf_counter()

    def write_on_batch_end(
        self,
        trainer,
        pl_module,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        write_shard(self.shard_dir, self.key, prediction["chunk_id"], prediction["task"], prediction["rows"])
        self.done_items += len(prediction["rows"])
        self.done_chunks += 1
        if not trainer.is_global_zero:
            return
        now = time.perf_counter()
        if self.progress_every >= 0 and now - self._last >= self.progress_every:
            self._last = now
            self._report(trainer, now)
        if self.after_write is not None:
            self.after_write()

    def on_predict_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._report(trainer, time.perf_counter(), final=True)

    def _report(self, trainer, now: float, final: bool = False) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done_items / elapsed
        world = trainer.world_size
        done_all = min(self.total_items, self.done_items * world)  # estimate: every rank as fast as rank 0
        if final:
            print(
                f"[dataset] rank 0 scored {self.done_items} items in {self.done_chunks} chunks in {_clock(elapsed)} "
                f"({rate:.2f} items/s per process, {world} process{'es' if world > 1 else ''})",
                flush=True,
            )
            return
        left = (self.total_items - done_all) / max(rate * world, 1e-9)
        share = 100 * done_all / max(self.total_items, 1)
        print(
            f"[dataset] ~{done_all}/{self.total_items} items ({share:.1f}%), {rate:.2f} items/s per process, "
            f"elapsed {_clock(elapsed)}, about {_clock(left)} left",
            flush=True,
        )
