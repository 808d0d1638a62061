"""Per-item records of a results table: which omission set ran each item, what it predicted, whether it was right.

Every row of a results table (:mod:`pudding.core.results`) is made of per-item outcomes, and its rows keep, per task
and metric, the records behind each item (:class:`ItemPicks`). :func:`write_results` writes them beside the JSON:

* ``<stem>.items.parquet`` — one record per row, task and item (``row``, ``kind``, ``task``, ``item_id``, ``metric``,
  ``omit``: the omission set that ran the item, a sorted list of blocks; ``pred``: the choice it picked under
  ``metric``; ``correct``; ``weight``). ``metric`` is the table's average metric where the task reports it, else
  ``acc`` (as :meth:`Row.metric` reads it). Rows that are an expectation over sets (random routing, uniform or in the
  router's proportions per task) have one record per item and set, weighted by that set's chance; every other record
  weighs 1. A task's weighted mean of ``correct`` is the row's accuracy there, and their mean over tasks the row's
  average. Item ids and choice indices only, no benchmark text; but ``pred`` with ``correct`` gives the gold label,
  so this file stays with the git-ignored outputs (``*.items.parquet`` is ignored everywhere).
* ``<stem>.choices.parquet`` — where the table has routed rows: the router's choice per item (``row``, ``task``,
  ``item_id``, ``omit``), without predictions or correctness, so it carries no label and can be tracked beside the
  JSON. With the tracked outcomes progress file it rebuilds the routed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pudding.core.errors import PuddingError
from pudding.core.outcomes import Outcomes
from pudding.core.progress import TaggedFormat

if TYPE_CHECKING:
    from pudding.core.results import Row

ITEMS_SUFFIX = ".items.parquet"
CHOICES_SUFFIX = ".choices.parquet"
ITEM_COLUMNS = ("row", "kind", "task", "item_id", "metric", "omit", "pred", "correct", "weight")
CHOICE_COLUMNS = ("row", "task", "item_id", "omit")


class ItemRecordsError(PuddingError):
    """An item-records or routed-choices file that cannot be read, or a row without per-item records."""


ITEMS_FORMAT = TaggedFormat(
    "pudding-item-records/1", "item records", "`pudding eval` and `pudding compare`", ITEM_COLUMNS, ItemRecordsError
)
CHOICES_FORMAT = TaggedFormat(
    "pudding-routed-choices/1", "routed choices", "`pudding compare`", CHOICE_COLUMNS, ItemRecordsError
)


@dataclass(frozen=True)
class ItemPicks:
    """One task's records under one metric: record ``r`` is item ``item_ids[r]`` run with the omission set
    ``sets[r]`` (a :func:`~pudding.core.outcomes.set_key`), which picked ``pred[r]``, right or not (``correct[r]``),
    weighing ``weight[r]`` (1, or the set's chance where the row is an expectation over sets). An item's value in the
    row is the weighted sum of its records."""

    item_ids: np.ndarray
    sets: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    weight: np.ndarray


def item_picks(
    out: Outcomes, metric: str, sets: Sequence[str] | np.ndarray, index: np.ndarray | None = None, weight=None
) -> ItemPicks:
    """Records of ``out``'s items under ``metric``: record ``r`` is item ``index[r]`` (default: every item once, in
    order) with set key ``sets[r]``, weighing ``weight[r]`` (default 1)."""
    index = np.arange(len(out.item_ids)) if index is None else np.asarray(index, dtype=np.int64)
    sets = np.asarray(sets, dtype=object)
    table = out.pred_norm if metric == "acc_norm" else out.pred
    pred = np.zeros(len(index), dtype=np.int64)
    for key in dict.fromkeys(sets.tolist()):
        mask = sets == key
        pred[mask] = table[key][index[mask]]
    weights = np.ones(len(index)) if weight is None else np.asarray(weight, dtype=np.float64)
    ids = np.asarray(out.item_ids, dtype=object)[index]
    return ItemPicks(ids, sets, pred, pred == out.gold[index], weights)


def spread_picks(out: Outcomes, metric: str, keys: Sequence[str], shares: np.ndarray) -> ItemPicks:
    """Each item once with every set of ``keys`` whose share is positive, weighted by its share (random routing)."""
    used = np.flatnonzero(np.asarray(shares) > 0)
    n = len(out.item_ids)
    index = np.repeat(np.arange(n), len(used))
    sets = np.tile(np.asarray(keys, dtype=object)[used], n)
    return item_picks(out, metric, sets, index, np.tile(np.asarray(shares, dtype=np.float64)[used], n))


def task_metric(row: Row, task: str, metric: str) -> str:
    """The metric a task's records are under: ``metric`` where the task reports it, else ``acc`` (as the table)."""
    found = row.picks.get(task)
    if not found:
        raise ItemRecordsError(f"row {row.name!r} has no per-item records for task {task!r}")
    return metric if metric in found else "acc"


def _omit_lists(sets: np.ndarray) -> pa.ListArray:
    """The set keys as lists of block indices (int16), built once per distinct key."""
    unique, inverse = np.unique(sets.astype(str), return_inverse=True)
    blocks = [np.array([int(b) for b in key.split(",") if b], dtype=np.int16) for key in unique]
    lengths = np.array([len(b) for b in blocks], dtype=np.int64)[inverse]
    width = max((len(b) for b in blocks), default=0)
    padded = np.zeros((len(blocks), width), dtype=np.int16)
    for i, b in enumerate(blocks):
        padded[i, : len(b)] = b
    values = padded[inverse][np.arange(width) < lengths[:, None]]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int16()))


def _records(rows: Sequence[Row], tasks: Sequence[str], metric: str) -> dict[str, list]:
    parts: dict[str, list] = {c: [] for c in ITEM_COLUMNS}
    for row in rows:
        for task in tasks:
            used = task_metric(row, task, metric)
            found = row.picks[task][used]
            n = len(found.item_ids)
            parts["row"].append(np.full(n, row.name, dtype=object))
            parts["kind"].append(np.full(n, row.kind, dtype=object))
            parts["task"].append(np.full(n, task, dtype=object))
            parts["item_id"].append(found.item_ids)
            parts["metric"].append(np.full(n, used, dtype=object))
            parts["omit"].append(found.sets)
            parts["pred"].append(found.pred)
            parts["correct"].append(found.correct)
            parts["weight"].append(found.weight)
    return parts


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _text(parts: list[np.ndarray]) -> pa.Array:
    return pa.array(_cat(parts, object).tolist(), type=pa.string())


def items_table(rows: Sequence[Row], tasks: Sequence[str], metric: str = "acc") -> pa.Table:
    """Every row's records on ``tasks`` under the table's ``metric`` (see the module docstring)."""
    parts = _records(rows, tasks, metric)
    return pa.table(
        {
            "row": _text(parts["row"]),
            "kind": _text(parts["kind"]),
            "task": _text(parts["task"]),
            "item_id": _text(parts["item_id"]),
            "metric": _text(parts["metric"]),
            "omit": _omit_lists(_cat(parts["omit"], object)),
            "pred": pa.array(_cat(parts["pred"], np.int16), type=pa.int16()),
            "correct": pa.array(_cat(parts["correct"], bool), type=pa.bool_()),
            "weight": pa.array(_cat(parts["weight"], np.float64), type=pa.float64()),
        }
    )


def choices_table(rows: Sequence[Row], tasks: Sequence[str]) -> pa.Table:
    """The routed rows' choice per item (``row``, ``task``, ``item_id``, ``omit``): no prediction, no label."""
    routed = [row for row in rows if row.kind == "routed"]
    full = items_table(routed, tasks, "acc")
    return full.select(list(CHOICE_COLUMNS))


def write_item_files(stem: Path, rows: Sequence[Row], tasks: Sequence[str], metric: str = "acc") -> list[Path]:
    """Write ``<stem>.items.parquet`` and, where a row is routed, ``<stem>.choices.parquet``, each atomically."""
    info = {"metric": metric, "rows": [row.name for row in rows], "tasks": list(tasks)}
    paths = [Path(f"{stem}{ITEMS_SUFFIX}")]
    ITEMS_FORMAT.write(paths[0], items_table(rows, tasks, metric), info, compression="zstd")
    if any(row.kind == "routed" for row in rows):
        paths.append(Path(f"{stem}{CHOICES_SUFFIX}"))
        routed = [row.name for row in rows if row.kind == "routed"]
        CHOICES_FORMAT.write(paths[1], choices_table(rows, tasks), {"rows": routed, "tasks": list(tasks)})
    return paths


def read_item_records(path: str | Path) -> tuple[pa.Table, dict]:
    """An item-records file's table and metadata (``metric``, ``rows``, ``tasks``); a wrong file is one line."""
    return ITEMS_FORMAT.read(path)


def read_routed_choices(path: str | Path) -> tuple[pa.Table, dict]:
    """A routed-choices file's table and metadata (``rows``, ``tasks``); a wrong file is one line."""
    return CHOICES_FORMAT.read(path)
