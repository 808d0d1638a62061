"""The Parquet files pudding writes to carry results between machines: a table plus JSON metadata in its schema.

The released router scores (:mod:`pudding.routerdata.scores`), a router-data build's progress file
(:mod:`pudding.routerdata.progress`) and an evaluation's outcomes progress file (:mod:`pudding.outcomes_pack`) all
keep their metadata — a ``format`` tag first of all — as JSON under one schema key, and are written atomically. This
module is that shared part, so a file of one kind given where another is expected is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pudding.errors import PuddingError
from pudding.io import atomic_write_bytes

META_KEY = b"pudding"
"""The schema-metadata key under which every such file keeps its JSON metadata."""


def write_tagged_parquet(path: str | Path, table: pa.Table, info: dict, **write_options) -> None:
    """Write ``table`` with ``info`` (JSON, with its ``format`` tag) as its metadata to ``path``, atomically.

    ``write_options`` go to :func:`pyarrow.parquet.write_table` (compression and encodings suited to the columns).
    """
    table = table.replace_schema_metadata({META_KEY: json.dumps(info, sort_keys=True).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_options)
    atomic_write_bytes(Path(path), sink.getvalue().to_pybytes())


def read_tagged_parquet(
    path: str | Path, kind: str, fmt: str, made_by: str, error: type[PuddingError] = PuddingError
) -> tuple[pa.Table, dict]:
    """The table and metadata of the file at ``path``, whose metadata must have format ``fmt``.

    Anything else (missing, not a whole Parquet file, no or broken metadata, another format) is a one-line ``error``
    naming the ``kind`` of file, ``path`` and, for another format, the command that writes the right one
    (``made_by``).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{kind} file {path} does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise error(f"{kind} file {path}: not a whole Parquet file ({exc})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        info = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise error(f"{kind} file {path}: its pudding metadata is not valid JSON ({exc})") from None
    found = info.get("format") if isinstance(info, dict) else None
    if found != fmt:
        raise error(f"{path} is not a pudding {kind} file (format {found!r}, want {fmt}; {made_by} writes them)")
    return table, info
