"""Files that carry results between machines: tagged Parquet tables, and the saver that keeps one up to date.

A long job keeps its finished pieces as keyed records in a git-ignored folder (:mod:`pudding.core.store`); a
machine that goes away takes them along. So the job can also keep them in one small Parquet file that git carries (a
*progress file*: item ids and numbers, never benchmark text), and a job given that file on another machine first
writes back the records it lacks. Two jobs do this, each with its own columns: the router-data build
(:mod:`pudding.routerdata.progress`) and the outcomes of evaluation items (:mod:`pudding.core.outcomes_progress`);
the released router scores (:mod:`pudding.routerdata.scores`) are such a table too.

Here is what they share: :class:`TaggedFormat` writes a table with its JSON metadata (a ``format`` tag first of all)
under one schema key, atomically, and reads it back checking the tag, the columns and that no value is missing, so a
file of one kind given where another is expected is refused in one line; :class:`ProgressSaver` rewrites a progress
file from the records on disk while a job runs (at most every ``every`` seconds, and when a part is done).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from pudding.core.errors import PuddingError
from pudding.core.io import atomic_write_bytes, print_line

META_KEY = b"pudding"
"""The schema-metadata key under which every such file keeps its JSON metadata."""

T = TypeVar("T")


@dataclass(frozen=True)
class TaggedFormat:
    """One kind of tagged Parquet file.

    Attributes:
        tag: The ``format`` its metadata carries (``pudding-outcomes-progress/1``).
        kind: What a person calls it in messages (``outcomes progress``).
        made_by: The command that writes it, for the message when another kind is given.
        columns: Columns every file of this kind has, none with a missing value.
        error: The error raised for a file that cannot be used.
    """

    tag: str
    kind: str
    made_by: str
    columns: tuple[str, ...]
    error: type[PuddingError] = PuddingError

    def write(self, path: str | Path, table: pa.Table, info: dict, **write_options) -> None:
        """Write ``table`` with ``info`` (plus the format tag) as its metadata to ``path``, atomically.

        ``write_options`` go to :func:`pyarrow.parquet.write_table` (compression and encodings suited to the columns).
        """
        meta = {**info, "format": self.tag}
        table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **write_options)
        atomic_write_bytes(Path(path), sink.getvalue().to_pybytes())

    def read(self, path: str | Path) -> tuple[pa.Table, dict]:
        """The table and metadata of the file at ``path``; anything else (missing, not a whole Parquet file, no or
        broken metadata, another format, a missing column or value) is a one-line error naming the file."""
        path = Path(path)
        if not path.is_file():
            raise self.error(f"{self.kind} file {path} does not exist")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise self.error(f"{self.kind} file {path}: not a whole Parquet file ({exc})") from None
        raw = (table.schema.metadata or {}).get(META_KEY)
        try:
            info = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            raise self.error(f"{self.kind} file {path}: its pudding metadata is not valid JSON ({exc})") from None
        found = info.get("format") if isinstance(info, dict) else None
        if found != self.tag:
            raise self.error(
                f"{path} is not a pudding {self.kind} file (format {found!r}, want {self.tag}; {self.made_by} "
                "writes them)"
            )
        missing = [c for c in self.columns if c not in table.column_names]
        if missing:
            raise self.error(f"{self.kind} file {path}: columns {missing} are missing")
        nulls = [c for c in self.columns if table.column(c).null_count]
        if nulls:
            raise self.error(f"{self.kind} file {path}: empty values in columns {nulls}")
        return table, info


class ProgressSaver(Generic[T]):
    """Keeps a progress file in step with a job's records while it runs.

    ``pack()`` writes the file from the records on disk and returns what it packed; ``describe`` turns that into the
    log line. :meth:`seed` writes back, before any work, the records the file holds and the folder lacks (``unpack``;
    nothing when the file does not exist yet); :meth:`maybe_save` runs after each finished piece and saves at most
    every ``every`` seconds; :meth:`save` runs when a part of the job is done. A failed save (a full disk, say) is
    reported and the job goes on: its records on disk are its own account.
    """

    def __init__(
        self,
        path: str | Path,
        pack: Callable[[], T],
        describe: Callable[[T], str],
        every: float,
        log: Callable[[str], None] = print_line,
        unpack: Callable[[], str] | None = None,
        kind: str = "progress",
    ) -> None:
        self.path = Path(path)
        self.pack = pack
        self.describe = describe
        self.every = every
        self.log = log
        self.unpack = unpack
        self.kind = kind
        self._last = time.perf_counter()

    def seed(self) -> object | None:
        """Write back the file's records the folder lacks (``unpack``'s result), or None when there is no file yet;
        a damaged or foreign file is an error."""
        if not self.path.exists():
            self.log(f"{self.kind} file {self.path}: not there yet, it is written as the work goes on")
            return None
        if self.unpack is None:
            return None
        return self.unpack()

    def maybe_save(self) -> None:
        if time.perf_counter() - self._last >= self.every:
            self.save()

    def save(self) -> T | None:
        """Pack now; returns what was packed, or None if the save failed (and says why)."""
        try:
            packed = self.pack()
        except (OSError, PuddingError) as exc:
            self.log(f"warning: could not save the {self.kind} file {self.path}: {exc}")
            return None
        finally:
            self._last = time.perf_counter()
        self.log(self.describe(packed))
        return packed
