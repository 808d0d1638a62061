"""Build a router dataset: a resumable, distributable Lightning ``predict`` run, then one deterministic assembly.

Flow (every rank runs it; Lightning launches the ranks inside ``trainer.predict``):

1. The build key is the sha256 of everything the numbers depend on: base model, resolved dtype, device type,
   candidate file hash, scoring batch budget, tasks, limit, router split options, chunk size and a digest of the
   items themselves. Trainer settings (devices, strategy, nodes) are not in it: they change who scores a chunk,
   never how it is scored, so a run may be resumed with a different number of processes.
2. Shards live in ``<work_dir>/<key[:16]>/shards``; chunks whose shard exists are skipped (resume).
3. ``trainer.predict`` scores the remaining chunks; :class:`ShardWriter` writes each one atomically.
4. After a barrier, rank 0 checks that every chunk has its shard, assembles rows in task order then source order,
   and saves the dataset atomically to ``output``; then the shard folder is deleted unless ``keep_shards``.

Because chunk composition is fixed (see :mod:`pudding.routerdata.units`), a DDP run, a resumed run and a single
uninterrupted run feed every item to the model in the same batch, so their numbers agree exactly, provided the
floating-point kernels themselves are deterministic on the hardware (they are on CPU in our tests).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from pathlib import Path

from datasets import Dataset
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_only

from pudding.errors import OptionError, OutputError
from pudding.io import atomic_write_json
from pudding.routerdata.headroom import headroom, headroom_table
from pudding.routerdata.module import ScoringModule
from pudding.routerdata.store import (
    DATASET_FORMAT,
    META_FILE,
    TARGET,
    RouterDataError,
    load_router_dataset,
    make_dataset,
    read_meta,
    save_dataset,
)
from pudding.routerdata.units import ScoringDataModule, items_digest
from pudding.routerdata.writer import SHARD_FORMAT, ShardWriter, shard_path
from pudding.tasks.partition import router_split


@rank_zero_only
def say(message: str) -> None:
    print(f"[dataset] {message}", flush=True)


def build_key(module: ScoringModule, data: ScoringDataModule, device_type: str) -> tuple[str, dict]:
    """The build key and the identity it hashes."""
    identity = {"format": DATASET_FORMAT, "scoring": module.identity(device_type), "data": data.identity()}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return key, identity


def default_work_dir(output: str | Path) -> Path:
    """Shards go beside the output by default: ``<output>.work``."""
    output = Path(output)
    return output.with_name(output.name + ".work")


def finished_chunks(shard_dir: Path, key: str) -> set[str]:
    """Chunk ids whose shard exists and carries this build's key (a stray foreign shard is not trusted)."""
    done = set()
    if not shard_dir.is_dir():
        return done
    for path in shard_dir.glob("*.json"):
        try:
            shard = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unreadable: score that chunk again
        if shard.get("key") == key and shard.get("format") == SHARD_FORMAT:
            done.add(path.stem)
    return done


def assemble(module: ScoringModule, data: ScoringDataModule, shard_dir: Path, key: str) -> dict[str, list]:
    """Columns of the dataset from the shards, in task order then source order, checked against the items."""
    k = len(module.omission_sets)
    by_task: dict[str, dict[int, dict]] = {task: {} for task in data.items}
    for chunk in data.chunks:
        path = shard_path(shard_dir, chunk.chunk_id)
        if not path.is_file():
            raise RouterDataError(f"shard {path} is missing; run the same command again to score it")
        shard = json.loads(path.read_text())
        if shard.get("key") != key:
            raise RouterDataError(f"shard {path} belongs to another build (key {shard.get('key')!r})")
        rows = {row["index"]: row for row in shard["rows"]}
        if sorted(rows) != list(chunk.indices):
            raise RouterDataError(f"shard {path} does not hold exactly the items of chunk {chunk.chunk_id}")
        by_task[chunk.task].update(rows)
    columns: dict[str, list] = {"task": [], "item_id": [], "router_text": [], "scores": [], "dense_score": []}
    for task, items in data.items.items():
        rows = by_task[task]
        for index, item in enumerate(items):
            row = rows[index]
            if row["item_id"] != item.item_id or len(row["scores"]) != k:
                raise RouterDataError(f"shard row {task}/{index} does not match item {item.item_id!r} or K={k}")
            columns["task"].append(task)
            columns["item_id"].append(item.item_id)
            columns["router_text"].append(item.router_text)
            columns["scores"].append([float(s) for s in row["scores"]])
            columns["dense_score"].append(float(row["dense_score"]))
    return columns


def make_meta(module: ScoringModule, data: ScoringDataModule, key: str, identity: dict, num_rows: int) -> dict:
    """The sidecar metadata: what a reader of the dataset needs to know without re-running anything."""
    cset = module.cset
    scoring = identity["scoring"]
    counts = {task: len(items) for task, items in data.items.items()}
    return {
        "format": DATASET_FORMAT,
        "build_key": key,
        "target": TARGET,
        "base_model": module.base_name,
        "dtype": scoring["dtype"],
        "dtype_requested": module.dtype_name,
        "dtype_reason": module.dtype_choice(scoring["device_type"]).reason,
        "device_type": scoring["device_type"],
        "candidates_file": str(module.candidates_path),
        "candidates_sha256": module.candidates_sha256,
        "candidates_base_model": cset.base_model,
        "num_blocks": cset.num_blocks,
        "num_candidates": len(cset),
        "omission_sets": [list(s) for s in cset.omission_sets],
        "candidate_names": [c.name for c in cset.candidates],
        "batch_tokens": module.batch_tokens,
        "reuse_prefix": module.reuse_prefix,
        "num_rows": num_rows,
        "rows_per_task": counts,
        "items_sha256": {task: items_digest({task: items}) for task, items in data.items.items()},
        "router_splits": {task: router_split(task, data.options) for task in data.items},
        **data.describe(),
    }


def build_dataset(
    trainer: Trainer,
    module: ScoringModule,
    data: ScoringDataModule,
    output: str | Path,
    work_dir: str | Path | None = None,
    overwrite: bool = False,
    keep_shards: bool = False,
    progress_every: float = 30.0,
) -> Path | None:
    """Score every pending chunk with ``trainer.predict`` and assemble the dataset; returns its path on rank 0.

    Other ranks return None once their share is written. An ``output`` built with the same key is left as is.
    """
    started = time.perf_counter()
    if str(trainer.precision) not in ("32-true", "32"):
        raise OptionError(
            f"trainer.precision={trainer.precision!r}: leave it at 32-true and choose the model's dtype with --dtype "
            "(the dtype is part of the build key; a precision plugin would change it behind the key's back)"
        )
    output = Path(output)
    work = Path(work_dir) if work_dir is not None else default_work_dir(output)
    device_type = trainer.strategy.root_device.type
    data.load()
    key, identity = build_key(module, data, device_type)
    run_dir = work / key[:16]
    shard_dir = run_dir / "shards"

    if output.exists():
        try:
            existing = read_meta(output).get("build_key")
        except RouterDataError:
            existing = None
        if existing == key:
            if not trainer.is_global_zero:
                return None
            say(f"{output} is up to date (build key {key[:16]}); nothing to do")
            print_headroom(*load_router_dataset(output))
            return output
        if not overwrite:
            raise OutputError(
                f"{output} exists and was built from other settings; choose another output or pass --overwrite true"
            )

    for note in data.notes.values():
        say(note)
    done = finished_chunks(shard_dir, key)
    pending = [c for c in data.chunks if c.chunk_id not in done]
    todo_items = sum(len(c.indices) for c in pending)
    say(
        f"{data.num_items} items in {len(data.chunks)} chunks × {len(module.omission_sets)} candidates + dense; "
        f"{len(data.chunks) - len(pending)} chunks already scored in {run_dir}, {todo_items} items to score"
    )
    if trainer.is_global_zero:
        atomic_write_json(run_dir / "build.json", {"key": key, "identity": identity})

    if pending:
        data.pending = [c.chunk_id for c in pending]
        trainer.callbacks.append(ShardWriter(shard_dir, key, todo_items, progress_every))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            trainer.predict(module, datamodule=data, return_predictions=False)
        trainer.strategy.barrier("pudding-dataset-assemble")
    if not trainer.is_global_zero:
        return None

    columns = assemble(module, data, shard_dir, key)
    dataset = make_dataset(columns, len(module.omission_sets))
    meta = make_meta(module, data, key, identity, len(dataset))
    save_dataset(dataset, meta, output, overwrite=True)
    if not keep_shards:
        shutil.rmtree(run_dir, ignore_errors=True)
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    say(f"wrote {output} ({len(dataset)} rows, K={meta['num_candidates']}; metadata in {output / META_FILE})")
    say(f"done in {time.perf_counter() - started:.1f} s")
    print_headroom(dataset, meta)
    return output


def print_headroom(dataset: Dataset, meta: dict) -> None:
    """Print what a router could gain on a router dataset (see :mod:`pudding.routerdata.headroom`)."""
    names = meta.get("candidate_names") or [f"#{i}" for i in range(meta["num_candidates"])]
    say("mean per-token gold log-likelihood (nats, higher is better) by task; oracle = best candidate per item:")
    print(headroom_table(headroom(dataset, names)), flush=True)
