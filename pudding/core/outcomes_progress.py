"""The outcomes progress file: every shard of an outcomes cache in one small Parquet file, so it can travel in git.

``pudding compare`` on the full evaluation splits runs for hours, and its finished chunks are shards under the
git-ignored ``outcomes_dir`` (:mod:`pudding.core.outcomes`): a machine that goes away takes them along. This file holds
them all — every task, every cache key — one row per item and omission set: ``task``, ``key`` (the shard's full
cache key), ``chunk``, ``item_id``, ``set_key``, ``pred`` and ``pred_norm`` (the choice ``acc`` and ``acc_norm``
pick). Item ids and choice indices only: no benchmark text and no gold label (gold comes from the task files when the
outcomes are loaded, as with the shards). The SLEB search records under ``<outcomes_dir>/sleb/`` (block indices,
losses, the model key and digests) ride along in the file's metadata; a record holding anything else is left out.

:func:`pack_outcomes` writes the file (atomically); :func:`unpack_outcomes` writes back each shard the cache lacks and
adds to a shard of the same key the sets it lacks, so :func:`~pudding.core.outcomes.compute_outcomes` then scores only
what neither had. :func:`outcomes_saver` rewrites the file while an evaluation scores (``--outcomes_progress``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pudding.core.errors import PuddingError
from pudding.core.io import print_line
from pudding.core.outcomes import shard_name, shard_store
from pudding.core.progress import ProgressSaver, TaggedFormat
from pudding.core.store import KeyedStore

PACK_FORMAT = "pudding-outcomes-progress/1"
COLUMNS = ("task", "key", "chunk", "item_id", "set_key", "pred", "pred_norm")
SLEB_DIR = "sleb"
SAVE_EVERY = 300.0
"""Seconds between rewrites of the progress file while chunks finish (each task's end and SLEB always save)."""

_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = re.compile(r"chunk-(\d{5,})\.json")
_SET_KEY = re.compile(r"(\d+(,\d+)*)?")
_TASK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SLEB_NAME = re.compile(r"sleb-[0-9a-f]{16}\.json")
_SLEB_FIELDS = {"omit", "step_losses", "dense_loss", "trial_losses", "key", "config"}
_PRED_MAX = np.iinfo(np.int16).max


class OutcomesPackError(PuddingError):
    """An outcomes progress file that cannot be read or used, or a cache that cannot be packed."""


FORMAT = TaggedFormat(
    PACK_FORMAT, "outcomes progress", "`pudding compare --outcomes_progress`", COLUMNS, OutcomesPackError
)


@dataclass(frozen=True)
class PackCounts:
    """What :func:`pack_outcomes` put in the file (``sleb_left_out``: SLEB files that were not plain records)."""

    shards: int
    rows: int
    sleb: int
    sleb_left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnpackCounts:
    """What :func:`unpack_outcomes` did: shards written new, shards given sets they lacked, shards already complete,
    and SLEB records written."""

    written: int
    merged: int
    unchanged: int
    sleb: int


# ------------------------------------------------------------------------------------------------ shards on disk


def _load_shard(path: Path) -> dict | None:
    """A shard's ``{key, item_ids, sets}`` when it is whole and consistent, else None (a resumed run re-scores it)."""
    try:
        shard = json.loads(path.read_text())
        key, ids, sets = shard["key"], shard["item_ids"], shard["sets"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if not (isinstance(key, str) and _HEX.fullmatch(key) and isinstance(ids, list) and isinstance(sets, dict)):
        return None
    if not all(isinstance(i, str) for i in ids):
        return None
    for name, preds in sets.items():
        if not _SET_KEY.fullmatch(name) or not isinstance(preds, list) or len(preds) != len(ids):
            return None
        if not all(isinstance(p, list) and len(p) == 2 and all(type(v) is int for v in p) for p in preds):
            return None
    return shard


def _plain_sleb(record: object, name: str) -> bool:
    """Whether ``record`` is the SLEB search record ``name`` and holds only block indices, losses, its key and its
    config (numbers, the model key and a digest): nothing else, so no text, travels in the file."""
    if not isinstance(record, dict) or set(record) != _SLEB_FIELDS or not _SLEB_NAME.fullmatch(name):
        return False

    def number(v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    config = record["config"]
    ok = (
        isinstance(record["omit"], list)
        and all(type(b) is int for b in record["omit"])
        and isinstance(record["step_losses"], list)
        and all(map(number, record["step_losses"]))
        and number(record["dense_loss"])
        and isinstance(record["trial_losses"], list)
        and all(
            isinstance(t, dict) and all(k.isdigit() and number(v) for k, v in t.items()) for t in record["trial_losses"]
        )
        and f"sleb-{record['key']}.json" == name
        and isinstance(config, dict)
        and all(number(v) for k, v in config.items() if k not in ("model", "requests"))
        and isinstance(config.get("requests"), str)
        and bool(_HEX.fullmatch(config["requests"]))
        and isinstance(config.get("model"), str)  # pudding.core.outcomes.model_key: base model name, dtype, device type
    )
    return ok


def _sleb_record(path: Path) -> dict | None:
    """The SLEB record in ``path`` when it is a plain one (:func:`_plain_sleb`), else None (left out of the file)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if _plain_sleb(record, path.name) else None


# ------------------------------------------------------------------------------------------------ pack


def pack_outcomes(cache_dir: str | Path, path: str | Path) -> PackCounts:
    """Write every outcome shard under ``cache_dir`` (all tasks, all keys) and its SLEB records to ``path``.

    Shards that are unreadable or sit under another key's folder are left out, as a resumed run would ignore them.
    The file is replaced atomically; an empty cache gives a file with no rows.
    """
    cache_dir, path = Path(cache_dir), Path(path)
    if not cache_dir.is_dir():
        raise OutcomesPackError(f"outcomes dir {cache_dir} does not exist: nothing to pack into {path}")
    cols: dict[str, list] = {name: [] for name in COLUMNS}
    preds: list[list[list[int]]] = []
    shards = 0
    for found in sorted(cache_dir.glob("*/*/chunk-*.json")):
        task, folder = found.parent.parent.name, found.parent.name
        match = _CHUNK.fullmatch(found.name)
        shard = _load_shard(found)
        if task == SLEB_DIR or not _TASK.fullmatch(task) or match is None or shard is None:
            continue
        if shard["key"][:16] != folder:
            continue
        chunk, ids = int(match.group(1)), shard["item_ids"]
        for name, values in shard["sets"].items():
            n = len(ids)
            cols["task"] += [task] * n
            cols["key"] += [shard["key"]] * n
            cols["chunk"] += [chunk] * n
            cols["item_id"] += ids
            cols["set_key"] += [name] * n
            preds.append(values)
        shards += 1
    both = np.asarray([p for values in preds for p in values], dtype=np.int64).reshape(-1, 2)
    if both.size and (both.min() < 0 or both.max() > _PRED_MAX):
        raise OutcomesPackError(f"{cache_dir}: a shard holds a choice index outside 0..{_PRED_MAX}")
    table = pa.table(
        {
            "task": pa.array(cols["task"], type=pa.string()),
            "key": pa.array(cols["key"], type=pa.string()),
            "chunk": pa.array(cols["chunk"], type=pa.int32()),
            "item_id": pa.array(cols["item_id"], type=pa.string()),
            "set_key": pa.array(cols["set_key"], type=pa.string()),
            "pred": pa.array(both[:, 0].astype(np.int16), type=pa.int16()),
            "pred_norm": pa.array(both[:, 1].astype(np.int16), type=pa.int16()),
        }
    )
    sleb, left_out = {}, []
    for sleb_path in sorted((cache_dir / SLEB_DIR).glob("*.json")):
        record = _sleb_record(sleb_path)
        if record is None:
            left_out.append(sleb_path.name)
        else:
            sleb[sleb_path.name] = record
    FORMAT.write(path, table, {"shards": shards, "sleb": sleb}, compression="zstd", compression_level=9)
    return PackCounts(shards, table.num_rows, len(sleb), tuple(left_out))


# ------------------------------------------------------------------------------------------------ unpack


def read_outcomes_pack(path: str | Path) -> tuple[pa.Table, dict]:
    """The rows and metadata of an outcomes progress file; a one-line :class:`OutcomesPackError` naming ``path``
    when it is missing, damaged or not one."""
    table, info = FORMAT.read(path)
    where = f"outcomes progress file {path}"
    for name in ("chunk", "pred", "pred_norm"):
        if not pa.types.is_integer(table.schema.field(name).type):
            raise OutcomesPackError(f"{where}: column {name} is {table.schema.field(name).type}, want integers")
    if not isinstance(info.get("sleb", {}), dict):
        raise OutcomesPackError(f"{where}: its metadata's sleb records are not a mapping")
    return table, info


def _shards_of(table: pa.Table, path: Path) -> dict[tuple[str, str, int], dict]:
    """Rows regrouped into shards ``{key, item_ids, sets}`` keyed by (task, key, chunk); damage is one error."""
    where = f"outcomes progress file {path}"
    cols = {name: table.column(name).to_pylist() for name in COLUMNS}
    shards: dict[tuple[str, str, int], dict] = {}
    runs: dict[tuple[str, str, int, str], list[int]] = {}
    for i, task in enumerate(cols["task"]):
        key, chunk, name = cols["key"][i], cols["chunk"][i], cols["set_key"][i]
        if not _TASK.fullmatch(task) or task == SLEB_DIR or not _HEX.fullmatch(key) or not _SET_KEY.fullmatch(name):
            raise OutcomesPackError(f"{where}: row {i} names no valid task, cache key or omission set (damaged file?)")
        if chunk < 0:
            raise OutcomesPackError(f"{where}: row {i} has chunk {chunk}")
        pred, norm = cols["pred"][i], cols["pred_norm"][i]
        if pred < 0 or norm < 0:
            raise OutcomesPackError(f"{where}: row {i} has a negative choice index")
        runs.setdefault((task, key, chunk, name), []).append(i)
    for (task, key, chunk, name), rows in runs.items():
        ids = [cols["item_id"][i] for i in rows]
        shard = shards.setdefault((task, key, chunk), {"key": key, "item_ids": ids, "sets": {}})
        if ids != shard["item_ids"]:
            raise OutcomesPackError(
                f"{where}: {task} chunk {chunk} (key {key[:16]}): set {name!r} lists other items than the chunk's "
                "other sets (damaged file?)"
            )
        shard["sets"][name] = [[cols["pred"][i], cols["pred_norm"][i]] for i in rows]
    return shards


def unpack_outcomes(path: str | Path, cache_dir: str | Path) -> UnpackCounts:
    """Write into ``cache_dir`` each shard of the file it lacks; to a shard it has under the same key, add the sets
    that shard lacks (its own sets win); a SLEB record it lacks, or has with fewer steps, is written too. Every write
    is atomic, and the whole file is checked before anything is written."""
    path, cache_dir = Path(path), Path(cache_dir)
    table, info = read_outcomes_pack(path)
    shards = _shards_of(table, path)
    sleb = {}
    for name, record in info.get("sleb", {}).items():
        if not _plain_sleb(record, name):
            raise OutcomesPackError(f"outcomes progress file {path}: its SLEB record {name!r} is malformed")
        sleb[name] = record
    written = merged = unchanged = 0
    for (task, key, chunk), shard in shards.items():
        store = shard_store(cache_dir, task, key)
        target = store.path(shard_name(chunk))
        present = _load_shard(target) if target.is_file() else None
        if present is not None and present["key"] == key and present["item_ids"] == shard["item_ids"]:
            lacking = {k: v for k, v in shard["sets"].items() if k not in present["sets"]}
            if not lacking:
                unchanged += 1
                continue
            shard = {"item_ids": present["item_ids"], "sets": present["sets"] | lacking}
            merged += 1
        else:  # absent, unreadable or another key's: a run would score it again
            written += 1
        store.write(shard_name(chunk), key, shard)
    sleb_written, sleb_store = 0, KeyedStore(cache_dir / SLEB_DIR)
    for name, record in sleb.items():
        target = sleb_store.path(name)
        present = _sleb_record(target) if target.is_file() else None
        if present is None or len(present["omit"]) < len(record["omit"]):
            sleb_store.write(name, record["key"], record)
            sleb_written += 1
    return UnpackCounts(written, merged, unchanged, sleb_written)


# ------------------------------------------------------------------------------------------------ while scoring


def outcomes_saver(
    cache_dir: str | Path, path: str | Path, log: Callable[[str], None] = print_line, every: float = SAVE_EVERY
) -> ProgressSaver[PackCounts]:
    """The :class:`~pudding.core.progress.ProgressSaver` of an outcomes progress file ``path`` over the cache
    ``cache_dir``: ``seed()`` unpacks the file into the cache (before any scoring), saves pack the whole cache."""
    cache_dir, path = Path(cache_dir), Path(path)

    def unpack() -> UnpackCounts:
        counts = unpack_outcomes(path, cache_dir)
        log(
            f"outcomes progress file {path}: {counts.written} shards written, {counts.merged} completed, "
            f"{counts.unchanged} already there, {counts.sleb} SLEB records, into {cache_dir}"
        )
        return counts

    return ProgressSaver(
        path,
        pack=lambda: pack_outcomes(cache_dir, path),
        describe=lambda c: f"outcomes progress file {path}: {c.shards} shards, {c.sleb} SLEB records saved",
        every=every,
        log=log,
        unpack=unpack,
        kind="outcomes progress",
    )
