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

With ``progress`` (a file path), rank 0 first turns that file's chunks into shards, rewrites it from the shards on
disk while scoring and once more after the barrier, and leaves it in place (see :mod:`pudding.routerdata.progress`):
a build whose work dir is lost resumes from the file. It is not part of the build key.

Because chunk composition is fixed (see :mod:`pudding.routerdata.units`), a DDP run, a resumed run and a single
uninterrupted run feed every item to the model in the same batch, so their numbers agree exactly, provided the
floating-point kernels themselves are deterministic on the hardware (they are on CPU in our tests).
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

from datasets import Dataset
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_only

from pudding.core.errors import OptionError, OutputError
from pudding.core.io import atomic_write_json
from pudding.core.store import digest
from pudding.core.tasks import get_task
from pudding.core.tasks.partition import router_split
from pudding.routerdata.dataset import (
    BASE_COLUMNS,
    CHOICE_COLUMNS,
    CHOICE_TARGETS,
    DATASET_FORMAT,
    META_FILE,
    TARGET,
    RouterDataError,
    has_choice_columns,
    load_router_dataset,
    make_dataset,
    read_meta,
    save_dataset,
)
from pudding.routerdata.headroom import accuracy_table, headroom, headroom_table
from pudding.routerdata.predict import ScoringModule
from pudding.routerdata.progress import Expected, build_saver, pack_progress, unpack_progress
from pudding.routerdata.units import ScoringDataModule, choices_digest, items_digest
from pudding.routerdata.writer import BUILD_FILE, SHARDS, ShardWriter, finished_chunks, read_shard, shard_name


@rank_zero_only
def say(message: str) -> None:
    print(f"[dataset] {message}", flush=True)


def build_key(module: ScoringModule, data: ScoringDataModule, device_type: str) -> tuple[str, dict]:
    """The build key and the identity it hashes (an all-choice build adds the digest of every choice it scores)."""
    identity = {"format": DATASET_FORMAT, "scoring": module.identity(device_type), "data": data.identity()}
    if module.all_choices:
        identity["data"]["choices_sha256"] = choices_digest(data.items)
    key = digest(identity)
    return key, identity


def default_work_dir(output: str | Path) -> Path:
    """Shards go beside the output by default: ``<output>.work``."""
    output = Path(output)
    return output.with_name(output.name + ".work")


def run_dir_of(work: Path, key: str) -> Path:
    """A build's own folder in the work dir: ``build.json`` and ``shards/``."""
    return work / key[:16]


def expected_rows(data: ScoringDataModule) -> Expected:
    """Per chunk: its task and its rows' ``(index, item_id)`` in shard order, to check a progress file against."""
    return {c.chunk_id: (c.task, [(i, data.items[c.task][i].item_id) for i in c.indices]) for c in data.chunks}


def pack_build(
    trainer: Trainer,
    module: ScoringModule,
    data: ScoringDataModule,
    output: str | Path,
    path: str | Path,
    work_dir: str | Path | None = None,
) -> tuple[Path, int]:
    """``--pack_progress``: pack the finished shards of the build these settings name; no model is loaded.

    Returns the build's run dir and the number of chunks packed.
    """
    work = Path(work_dir) if work_dir is not None else default_work_dir(output)
    data.load()
    key, _ = build_key(module, data, trainer.strategy.root_device.type)
    run_dir = run_dir_of(work, key)
    if not (run_dir / BUILD_FILE).is_file():
        others = sorted(p.parent.name for p in work.glob(f"*/{BUILD_FILE}"))
        held = f"it holds builds {others} of other settings" if others else "it holds no build"
        raise RouterDataError(f"no build of these settings (key {key[:16]}) in work dir {work}: {held}")
    return run_dir, pack_progress(run_dir, path)


def assemble(module: ScoringModule, data: ScoringDataModule, shard_dir: Path, key: str) -> dict[str, list]:
    """Columns of the dataset from the shards, in task order then source order, checked against the items."""
    k = len(module.omission_sets)
    by_task: dict[str, dict[int, dict]] = {task: {} for task in data.items}
    for chunk in data.chunks:
        path = shard_dir / shard_name(chunk.chunk_id)
        if not path.is_file():
            raise RouterDataError(f"shard {path} is missing; run the same command again to score it")
        shard = read_shard(shard_dir, chunk.chunk_id, key)
        if shard is None:
            raise RouterDataError(f"shard {path} is unreadable or belongs to another build; run the command again")
        rows = {row["index"]: row for row in shard["rows"]}
        if sorted(rows) != list(chunk.indices):
            raise RouterDataError(f"shard {path} does not hold exactly the items of chunk {chunk.chunk_id}")
        by_task[chunk.task].update(rows)
    extra = CHOICE_COLUMNS if module.all_choices else ()
    columns: dict[str, list] = {name: [] for name in (*BASE_COLUMNS, *extra)}
    for task, items in data.items.items():
        rows = by_task[task]
        for index, item in enumerate(items):
            row = rows[index]
            if row["item_id"] != item.item_id or len(row["scores"]) != k:
                raise RouterDataError(f"shard row {task}/{index} does not match item {item.item_id!r} or K={k}")
            if any(name not in row or (not name.startswith("dense_") and len(row[name]) != k) for name in extra):
                raise RouterDataError(f"shard row {task}/{index} lacks the all-choice columns; run the command again")
            columns["task"].append(task)
            columns["item_id"].append(item.item_id)
            columns["router_text"].append(item.router_text)
            columns["scores"].append([float(s) for s in row["scores"]])
            columns["dense_score"].append(float(row["dense_score"]))
            for name in extra:
                columns[name].append(row[name])
    return columns


def make_meta(module: ScoringModule, data: ScoringDataModule, key: str, identity: dict, num_rows: int) -> dict:
    """The sidecar metadata: what a reader of the dataset needs to know without re-running anything."""
    cset = module.cset
    scoring = identity["scoring"]
    counts = {task: len(items) for task, items in data.items.items()}
    choices = {}
    if module.all_choices:
        choices = {
            "all_choices": True,
            "choice_targets": dict(CHOICE_TARGETS),
            "acc_norm_tasks": [task for task in data.items if "acc_norm" in get_task(task).metrics],
            "choices_sha256": {task: choices_digest({task: items}) for task, items in data.items.items()},
        }
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
        "batch_tokens": scoring["batch_tokens"],
        "reuse_prefix": module.reuse_prefix,
        "num_rows": num_rows,
        "rows_per_task": counts,
        "items_sha256": {task: items_digest({task: items}) for task, items in data.items.items()},
        "router_splits": {task: router_split(task, data.options) for task in data.items},
        **choices,
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
    progress: str | Path | None = None,
    progress_save_every: float = 600.0,
) -> Path | None:
    """Score every pending chunk with ``trainer.predict`` and assemble the dataset; returns its path on rank 0.

    Other ranks return None once their share is written. An ``output`` built with the same key is left as is.
    ``progress``: a progress file to seed shards from and to keep up to date (every ``progress_save_every`` s).
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
    run_dir = run_dir_of(work, key)
    shard_dir = run_dir / SHARDS

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
    progress = Path(progress) if progress is not None else None
    if progress is not None and trainer.is_global_zero:  # the other ranks start later, or follow rank 0's list
        if progress.exists():
            given = unpack_progress(progress, shard_dir, key, identity=identity, expected=expected_rows(data))
            say(f"progress file {progress} gave {given} chunks not yet in {shard_dir}")
        else:
            say(f"progress file {progress} does not exist yet; it is written while scoring")
    done = finished_chunks(shard_dir, key)
    pending = [c for c in data.chunks if c.chunk_id not in done]
    todo_items = sum(len(c.indices) for c in pending)
    say(
        f"{data.num_items} items in {len(data.chunks)} chunks × {len(module.omission_sets)} candidates + dense"
        f"{', every answer choice' if module.all_choices else ''}; "
        f"{len(data.chunks) - len(pending)} chunks already scored in {run_dir}, {todo_items} items to score"
    )
    if trainer.is_global_zero:
        atomic_write_json(run_dir / BUILD_FILE, {"key": key, "identity": identity})

    saver = None
    if progress is not None and trainer.is_global_zero:
        saver = build_saver(run_dir, progress, progress_save_every)
    if pending:
        data.pending = [c.chunk_id for c in pending]
        after_write = saver.maybe_save if saver is not None else None
        trainer.callbacks.append(ShardWriter(shard_dir, key, todo_items, progress_every, after_write=after_write))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            trainer.predict(module, datamodule=data, return_predictions=False)
        trainer.strategy.barrier("pudding-dataset-assemble")
    if not trainer.is_global_zero:
        return None

    saved = saver.save() if saver is not None else None  # every chunk, unless the save failed (it said so)
    columns = assemble(module, data, shard_dir, key)
    dataset = make_dataset(columns, len(module.omission_sets))
    meta = make_meta(module, data, key, identity, len(dataset))
    save_dataset(dataset, meta, output, overwrite=True)
    if not keep_shards:
        shutil.rmtree(run_dir, ignore_errors=True)
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    say(f"wrote {output} ({len(dataset)} rows, K={meta['num_candidates']}; metadata in {output / META_FILE})")
    if saved is not None:
        say(f"progress file {progress} is left in place with all {saved} chunks: a build given it scores nothing")
    say(f"done in {time.perf_counter() - started:.1f} s")
    print_headroom(dataset, meta)
    return output


def print_headroom(dataset: Dataset, meta: dict) -> None:
    """Print what a router could gain on a router dataset (see :mod:`pudding.routerdata.headroom`)."""
    names = meta.get("candidate_names") or [f"#{i}" for i in range(meta["num_candidates"])]
    say("mean per-token gold log-likelihood (nats, higher is better) by task; oracle = best candidate per item:")
    print(headroom_table(headroom(dataset, names)), flush=True)
    if has_choice_columns(dataset.column_names):
        say("accuracy on the router data (%, acc) by task; oracle = some candidate answers right:")
        print(accuracy_table(dataset, names), flush=True)
