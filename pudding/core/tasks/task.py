"""The shape of a task: where its data lives and how a record becomes an :class:`Item`."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pudding.core.tasks.base import SPLITS, Item, TaskDataError
from pudding.core.tasks.readers import at, read_jsonl


class Task(ABC):
    """One benchmark: where its data lives and how a record becomes an :class:`Item`.

    Every record, from the hub or from the original files, is first put in the hub's schema (the one lm-eval's
    config reads) and then converted by :meth:`doc_to_item`, so both sources share one prompt builder.
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    eval_split: ClassVar[str]
    hf_path: ClassVar[str]
    hf_name: ClassVar[str | None]
    hub_splits: ClassVar[tuple[str, ...]] = ("train", "validation")
    """Hub splits that carry labels (unlabelled test splits are left out)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ----------------------------------------------------------------- for subclasses

    @abstractmethod
    def doc_to_item(self, doc: Mapping[str, Any], split: str, row: int, where: str) -> Item:
        """Build the item from a hub-schema record; ``where`` locates the record for error messages."""

    @abstractmethod
    def local_sources(self, root: Path) -> dict[str, tuple[tuple[Path, ...], ...]]:
        """Per labelled split, the alternative sets of original files (first complete set wins)."""

    def local_to_doc(self, record: Mapping[str, Any], where: str) -> Mapping[str, Any]:
        """Turn one record of the original files into the hub schema (identity when they agree)."""
        return record

    def read_local(self, split: str, files: tuple[Path, ...]) -> Iterator[Item]:
        """Items of one split read from original files; default: one JSONL file, one record per line."""
        (path,) = files
        for row, (line_no, record) in enumerate(read_jsonl(path)):
            where = at(path, line_no)
            yield self.doc_to_item(self.local_to_doc(record, where), split, row, where)

    # ----------------------------------------------------------------- public API

    def task_dir(self, data_dir: str | os.PathLike[str]) -> Path:
        """This task's folder inside a data directory laid out like /work/shared/data."""
        return Path(data_dir).expanduser() / self.name

    def available_splits(self, data_dir: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
        """Labelled splits that can be loaded: from the hub when ``data_dir`` is None, else from its files."""
        if data_dir is None:
            return self.hub_splits
        sources = self.local_sources(self.task_dir(data_dir))
        return tuple(split for split in SPLITS if _first_complete(sources.get(split, ())) is not None)

    def load(self, split: str, data_dir: str | os.PathLike[str] | None = None) -> list[Item]:
        """All items of ``split`` in source order, from the hub (``data_dir`` None) or the original files."""
        if data_dir is None:
            self._check_split(split, self.hub_splits, "on the hub")
            return list(self._hub_items(split))
        return list(self.read_local(split, self.source_files(split, data_dir)))

    def source_files(self, split: str, data_dir: str | os.PathLike[str]) -> tuple[Path, ...]:
        """The original files ``split`` is read from, after checking they exist."""
        root = self.task_dir(data_dir)
        sources = self.local_sources(root)
        self._check_split(split, tuple(s for s in SPLITS if s in sources), f"in the original files under {root}")
        return self._resolve(root, split, sources[split])

    # ----------------------------------------------------------------- helpers

    def _check_split(self, split: str, known: tuple[str, ...], where: str) -> None:
        if split not in known:
            raise TaskDataError(
                f"{self.name}: unknown split {split!r}; labelled splits {where}: {', '.join(known) or 'none'}"
            )

    def _hub_items(self, split: str) -> Iterator[Item]:
        import datasets  # slow to import; only the hub path needs it

        dataset = datasets.load_dataset(self.hf_path, self.hf_name, split=split)
        source = self.hf_path if self.hf_name is None else f"{self.hf_path} ({self.hf_name})"
        for row, doc in enumerate(dataset):
            yield self.doc_to_item(doc, split, row, f"{source} {split} row {row}")

    def _resolve(self, root: Path, split: str, alternatives: tuple[tuple[Path, ...], ...]) -> tuple[Path, ...]:
        files = _first_complete(alternatives)
        if files is not None:
            return files
        expected = " or ".join(" + ".join(str(p) for p in group) for group in alternatives)
        missing = sorted({str(p) for group in alternatives for p in group if not p.is_file()})
        raise TaskDataError(
            f"{self.name}: cannot load split {split!r}: expected {expected}; missing {', '.join(missing)}; "
            f"{_describe_dir(root)}"
        )


def _first_complete(alternatives: Sequence[tuple[Path, ...]]) -> tuple[Path, ...] | None:
    return next((group for group in alternatives if all(p.is_file() for p in group)), None)


def _describe_dir(root: Path, limit: int = 20) -> str:
    if not root.is_dir():
        return f"directory {root} does not exist"
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    shown = ", ".join(found[:limit]) + (f", ... ({len(found)} files)" if len(found) > limit else "")
    return f"found in {root}: {shown or 'no files'}"
