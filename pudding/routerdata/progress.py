"""The progress file: a router-data build's finished work in one small Parquet file, so it can travel in git.

A build keeps its finished chunks as shard files in a git-ignored work dir; a machine that goes away mid-build takes
them along. ``pudding dataset --progress FILE`` therefore keeps one file beside them: every finished shard's rows
(``chunk_id``, ``task``, ``index``, ``item_id``, the K ``scores`` and ``dense_score``, and for an all-choice build
its :data:`~pudding.routerdata.dataset.CHOICE_COLUMNS` — item ids and numbers, no benchmark text), with the full
build key and the identity it hashes in the Parquet schema. Scores stay float64, as in
the shards, so a build resumed from the file ends bit for bit equal to an uninterrupted one.

:func:`pack_progress` writes the file from a build's run dir (atomically); :func:`unpack_progress` turns it back into
the shards that are missing, byte for byte what :class:`~pudding.routerdata.writer.ShardWriter` wrote, and refuses a
file of another build in one line that says which settings differ. :class:`ProgressSaver` rewrites the file while a
build scores. A build already running without the option is packed by ``pudding dataset <same options>
--pack_progress FILE`` (no model is loaded), or from Python with ``pack_progress(run_dir, FILE)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from pudding.core.progress import ProgressSaver, TaggedFormat
from pudding.routerdata.dataset import CHOICE_COLUMNS, RouterDataError
from pudding.routerdata.writer import BUILD_FILE, SHARDS, finished_chunks, finished_shards, shard_name, write_shard

PROGRESS_FORMAT = "pudding-router-progress/1"
COLUMNS = ("chunk_id", "task", "index", "item_id", "scores", "dense_score")
FORMAT = TaggedFormat(PROGRESS_FORMAT, "progress", "`pudding dataset --progress`", COLUMNS, RouterDataError)

Expected = Mapping[str, tuple[str, Sequence[tuple[int, str]]]]
"""Per chunk id: its task and its rows' ``(index, item_id)``, in shard order (what the current settings make)."""


def read_build(run_dir: Path) -> tuple[str, dict]:
    """The full build key and identity that ``build.json`` in a build's run dir records."""
    path = Path(run_dir) / BUILD_FILE
    if not path.is_file():
        raise RouterDataError(f"{path} is missing: {run_dir} is not the run dir of a `pudding dataset` build")
    try:
        info = json.loads(path.read_text())
        return str(info["key"]), dict(info["identity"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RouterDataError(f"{path}: not a build record ({type(exc).__name__}: {exc})") from None


def pack_progress(run_dir: str | Path, path: str | Path) -> int:
    """Write every finished shard of the build in ``run_dir`` to the progress file ``path``; returns the chunk count.

    ``run_dir`` is ``<work_dir>/<key[:16]>`` (``build.json`` and ``shards/``). Shards of another key and unreadable
    ones are left out, as a resumed build would ignore them. The file is replaced atomically.
    """
    run_dir, path = Path(run_dir), Path(path)
    key, identity = read_build(run_dir)
    shard_dir = run_dir / SHARDS
    shards = list(finished_shards(shard_dir, key).values())
    if not shards:
        raise RouterDataError(f"{shard_dir}: no finished shard of build {key[:16]} to pack into {path}")
    k = len(shards[0]["rows"][0]["scores"])
    extra = CHOICE_COLUMNS if all(name in shards[0]["rows"][0] for name in CHOICE_COLUMNS) else ()
    cols: dict[str, list] = {name: [] for name in (*COLUMNS, *extra)}
    for shard in shards:
        for row in shard["rows"]:
            if len(row["scores"]) != k or any(name not in row for name in extra):
                where = shard_dir / shard_name(shard["chunk_id"])
                raise RouterDataError(f"{where}: a row holds {len(row['scores'])} scores or other columns than row 0")
            cols["chunk_id"].append(shard["chunk_id"])
            cols["task"].append(shard["task"])
            for name in (*COLUMNS[2:], *extra):
                cols[name].append(row[name])
    columns = {
        "chunk_id": pa.array(cols["chunk_id"], type=pa.string()).dictionary_encode(),
        "task": pa.array(cols["task"], type=pa.string()).dictionary_encode(),
        "index": pa.array(cols["index"], type=pa.int64()),
        "item_id": pa.array(cols["item_id"], type=pa.string()),
    }
    for name in ("scores", "dense_score", *extra):
        kind = pa.bool_() if "correct" in name else pa.float64()
        values = np.asarray(cols[name], dtype=bool if kind == pa.bool_() else np.float64)
        flat = pa.array(values.ravel(), type=kind)
        columns[name] = flat if values.ndim == 1 else pa.FixedSizeListArray.from_arrays(flat, k)
    info = {"build_key": key, "identity": identity, "num_candidates": k, "chunks": len(shards)}
    floats = ["scores.list.element", "dense_score"]
    floats += [n if n.startswith("dense_") else f"{n}.list.element" for n in extra if "posterior" in n]
    FORMAT.write(
        path,
        pa.table(columns),
        info,
        compression="zstd",
        compression_level=9,
        use_dictionary=["chunk_id", "task"],
        use_byte_stream_split=floats,  # float bytes compress far better split
    )
    return len(shards)


def read_progress(path: str | Path) -> tuple[pa.Table, dict]:
    """The rows of a progress file and its metadata; a one-line error naming ``path`` when it is not one."""
    table, info = FORMAT.read(path)
    if not isinstance(info.get("build_key"), str) or not isinstance(info.get("num_candidates"), int):
        raise RouterDataError(f"progress file {path}: its metadata lacks the build key or num_candidates")
    kind = table.schema.field("scores").type
    if not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)) or kind.value_type != pa.float64():
        raise RouterDataError(f"progress file {path}: scores are {kind}, want lists of float64")
    return table, info


def _flat(identity: Mapping, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in identity.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _show(value: object) -> str:
    if isinstance(value, str) and len(value) > 16 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"  # a sha256
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def identity_differences(theirs: Mapping, ours: Mapping) -> list[str]:
    """``dtype bfloat16 there, float32 here`` for each setting of the build identity that differs."""
    a, b = _flat(theirs), _flat(ours)
    names = [n for n in dict.fromkeys([*b, *a]) if a.get(n) != b.get(n)]
    return [f"{n.rsplit('.', 1)[-1]} {_show(a.get(n))} there, {_show(b.get(n))} here" for n in names]


def _chunks(table: pa.Table, path: Path, k: int) -> dict[str, tuple[str, list[dict]]]:
    """Rows grouped by chunk, in file order, as the shards hold them; a chunk split across tasks or a short score
    row is refused."""
    extra = CHOICE_COLUMNS if all(name in table.column_names for name in CHOICE_COLUMNS) else ()
    cols = {name: table.column(name).to_pylist() for name in (*COLUMNS, *extra)}
    chunks: dict[str, tuple[str, list[dict]]] = {}
    for i, chunk_id in enumerate(cols["chunk_id"]):
        task, rows = chunks.setdefault(chunk_id, (cols["task"][i], []))
        if task != cols["task"][i] or len(cols["scores"][i]) != k:
            raise RouterDataError(f"progress file {path}: row {i} (chunk {chunk_id}) is inconsistent with its chunk")
        rows.append({name: cols[name][i] for name in (*COLUMNS[2:], *extra)})
    return chunks


def unpack_progress(
    path: str | Path,
    shard_dir: str | Path,
    key: str,
    identity: Mapping | None = None,
    expected: Expected | None = None,
) -> int:
    """Write a shard for each chunk of the progress file that has no valid shard in ``shard_dir`` yet; returns how many.

    The file must carry ``key``; otherwise the error names it and, given this build's ``identity``, the settings that
    differ. With ``expected`` (chunk id → task and ``(index, item_id)`` rows, as the current settings cut them) every
    chunk of the file is checked against it first, so a damaged file writes nothing.
    """
    path, shard_dir = Path(path), Path(shard_dir)
    table, info = read_progress(path)
    theirs = info["build_key"]
    if theirs != key:
        diff = identity_differences(info.get("identity") or {}, identity) if identity is not None else []
        what = "; ".join(diff) if diff else "other settings"
        raise RouterDataError(
            f"progress file {path} belongs to another build (key {theirs[:16]}, this one {key[:16]}): {what}; "
            "give another --progress file, or delete it to start over"
        )
    chunks = _chunks(table, path, info["num_candidates"])
    if expected is not None:
        for chunk_id, (task, rows) in chunks.items():
            want = expected.get(chunk_id)
            if want is None or want[0] != task or list(want[1]) != [(r["index"], r["item_id"]) for r in rows]:
                raise RouterDataError(
                    f"progress file {path}: chunk {chunk_id} does not hold the items these settings put in it "
                    "(damaged file?); delete it to start over"
                )
    done = finished_chunks(shard_dir, key)
    written = 0
    for chunk_id, (task, rows) in chunks.items():
        if chunk_id in done:
            continue
        write_shard(shard_dir, key, chunk_id, task, rows)
        written += 1
    return written


def build_saver(run_dir: str | Path, path: str | Path, every: float = 600.0) -> ProgressSaver[int]:
    """The :class:`~pudding.core.progress.ProgressSaver` of a build's progress file ``path``: it packs the shards
    of ``run_dir`` on disk (every rank's: they share the disk), run on rank 0 after each shard rank 0 writes, and
    once more when scoring is over. A failed save is reported and the build goes on."""
    return ProgressSaver(
        path,
        pack=lambda: pack_progress(run_dir, path),
        describe=lambda count: f"[dataset] progress file {path}: {count} finished chunks saved",
        every=every,
        log=lambda line: print(line if line.startswith("[dataset]") else f"[dataset] {line}", flush=True),
    )
