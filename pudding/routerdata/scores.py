"""A router dataset without its text: the scores file, and the rebuild that joins it with the task files again.

Scoring the router data takes hours on a CPU; its result is small. A scores file holds, per item, ``task``,
``item_id``, the K candidate scores and the dense score — no benchmark text, so it can be shipped — plus the dataset's
metadata (candidate-file hash, base model, dtype, per-task digests of the items) in the Parquet schema. A dataset
built with every answer choice scored also ships its all-choice columns (the gold answer's posterior and whether
the set answers right, per candidate and dense: model numbers, no choice text and no gold label); a scores file
without them rebuilds a dataset without them. Rebuilding
reads ``router_text`` from the original task files in ``data_dir`` and writes the same Arrow dataset the full build
wrote: same rows in the same order, same columns and values, same metadata (only ``data_dir`` and
``candidates_file``, which say where things are on this machine, follow the rebuild's arguments).

Everything a rebuild relies on is checked first, and a mismatch is a one-line :class:`RouterDataError` naming it: the
candidate file's sha256, every task's files, every item id, and each task's digest of what was scored (router text
and gold request), so a changed task file is refused rather than silently paired with old scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pudding.core.candidates import file_hash
from pudding.core.errors import OutputError
from pudding.core.progress import TaggedFormat
from pudding.core.tasks import DataOptions, TaskDataError, get_task, router_items
from pudding.routerdata.dataset import (
    CHOICE_COLUMNS,
    RouterDataError,
    has_choice_columns,
    load_router_dataset,
    make_dataset,
    save_dataset,
)
from pudding.routerdata.units import choices_digest, items_digest

SCORES_FORMAT = "pudding-router-scores/1"
FORMAT = TaggedFormat(
    SCORES_FORMAT, "scores", "`pudding release`", ("task", "item_id", "scores", "dense_score"), RouterDataError
)


def export_scores(dataset_dir: str | Path, output: str | Path) -> Path:
    """Write the scores file of a built router dataset (Parquet, zstd; atomically)."""
    dataset, meta = load_router_dataset(dataset_dir)
    if "items_sha256" not in meta:
        raise RouterDataError(
            f"{dataset_dir}: its metadata has no items_sha256 (made by an older pudding); rebuild it with "
            "`pudding dataset` before exporting its scores"
        )
    k = meta["num_candidates"]
    table = dataset.with_format("arrow")[:]
    columns = {
        "task": pa.array(table.column("task").to_pylist()).dictionary_encode(),
        "item_id": pa.array(table.column("item_id").to_pylist(), type=pa.string()),
    }
    extra = CHOICE_COLUMNS if has_choice_columns(table.column_names) else ()
    for name in ("scores", "dense_score", *extra):
        per_row = name.startswith("dense_")  # one value per row; the others hold K per row
        flag = "correct" in name
        column = table.column(name).combine_chunks()
        values = np.asarray(column if per_row else column.flatten(), dtype=bool if flag else np.float32)
        flat = pa.array(values, type=pa.bool_() if flag else pa.float32())
        columns[name] = flat if per_row else pa.FixedSizeListArray.from_arrays(flat, k)
    split = ["dense_score", *(n for n in extra if n.startswith("dense_posterior"))]
    output = Path(output)
    FORMAT.write(
        output,
        pa.table(columns),
        {"dataset_meta": meta},
        compression="zstd",
        compression_level=19,
        use_byte_stream_split=split,
    )
    return output


def read_scores(path: str | Path) -> tuple[pa.Table, dict]:
    """The scores table and the dataset metadata it carries; a clear error when ``path`` is not a scores file."""
    table, info = FORMAT.read(path)
    return table, info["dataset_meta"]


def _task_files(task: str, split: str, opts: DataOptions) -> str:
    """The files a task's router items are read from (checked to exist: a missing one is named), for messages."""
    if opts.data_dir is None:
        return f"the hub's {task} {split} split"
    return ", ".join(str(p) for p in get_task(task).source_files(split, opts.data_dir))


def rebuild_dataset(
    scores_file: str | Path,
    candidates: str | Path,
    data_dir: str | None,
    output: str | Path,
    overwrite: bool = False,
) -> Path:
    """Join a scores file with ``router_text`` read from the task files and save the router dataset at ``output``."""
    scores_file = Path(scores_file)
    table, meta = read_scores(scores_file)
    candidates = Path(candidates).expanduser()
    if not candidates.is_file():
        raise RouterDataError(f"candidate file {candidates} does not exist (the scores in {scores_file} need it)")
    sha = file_hash(candidates)
    if sha != meta["candidates_sha256"]:
        raise RouterDataError(
            f"candidate-hash mismatch: {candidates} has sha256 {sha[:12]}…, but {scores_file} was scored with "
            f"{meta.get('candidates_file')} (sha256 {meta['candidates_sha256'][:12]}…)"
        )
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; choose another output or pass --overwrite true")

    opts = DataOptions(data_dir=data_dir, router_fraction=meta["router_fraction"], split_seed=meta["split_seed"])
    task_col = table.column("task").to_pylist()
    id_col = table.column("item_id").to_pylist()
    texts: dict[str, dict[str, str]] = {}
    for task in meta["tasks"]:
        try:
            files = _task_files(task, meta["router_splits"][task], opts)
            items, _ = router_items(task, opts)
        except TaskDataError as exc:
            raise RouterDataError(f"cannot rebuild from {scores_file}: {exc}") from exc
        if meta.get("limit") is not None:
            items = items[: meta["limit"]]
        texts[task] = {item.item_id: item.router_text for item in items}
        wanted = [i for t, i in zip(task_col, id_col, strict=True) if t == task]
        lost = next((i for i in wanted if i not in texts[task]), None)
        if lost is not None:
            raise RouterDataError(f"{scores_file}: item_id {lost!r} of task {task} no longer exists in {files}")
        choices = meta.get("choices_sha256")
        if items_digest({task: items}) != meta["items_sha256"].get(task) or (
            choices is not None and choices_digest({task: items}) != choices.get(task)
        ):
            raise RouterDataError(
                f"{task}: the router items in {files} differ from those {scores_file} was scored "
                "on (changed task file); rebuild the scores with `pudding dataset` instead"
            )
    unknown = sorted(set(task_col) - set(texts))
    if unknown:
        raise RouterDataError(f"{scores_file}: rows of tasks {unknown} that its metadata does not list")

    k = meta["num_candidates"]
    columns = {
        "task": task_col,
        "item_id": id_col,
        "router_text": [texts[t][i] for t, i in zip(task_col, id_col, strict=True)],
        "scores": table.column("scores").to_pylist(),
        "dense_score": table.column("dense_score").to_pylist(),
    }
    if has_choice_columns(table.column_names):
        columns.update({name: table.column(name).to_pylist() for name in CHOICE_COLUMNS})
    try:
        dataset = make_dataset(columns, k)
    except RouterDataError as exc:
        raise RouterDataError(f"{scores_file}: {exc}; rebuild the scores with `pudding dataset`") from None
    resolved = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    new_meta = {**meta, "data_dir": resolved, "candidates_file": str(candidates.resolve())}
    return save_dataset(dataset, new_meta, output, overwrite=overwrite)
