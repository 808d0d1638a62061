"""Keyed records on disk: the one mechanism behind every cache and every resumable job.

A long job (a candidate search, the router data, outcomes on evaluation items, SLEB, the zero-shot table, the self
router's features) keeps its finished pieces as records in a folder. Each record carries a key, the sha256 of a JSON
identity of everything its numbers depend on (:func:`digest`), and is written atomically (a temporary file, then a
rename: whole or absent). Reading a record that is missing, unreadable or made under another key gives None, and the
job computes that piece again. So a killed job resumes where it stopped, and a changed setting never reuses a stale
record.

Records are JSON objects with a ``key`` field (:meth:`KeyedStore.read`, :meth:`KeyedStore.write`) or safetensors
files with the key in their metadata (:meth:`KeyedStore.read_tensors`, :meth:`KeyedStore.write_tensors`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from pudding.core.io import atomic_save_safetensors, atomic_write_json

KEY = "key"
"""The field (JSON) or metadata entry (safetensors) holding a record's key."""


def digest(identity: Mapping) -> str:
    """sha256 (hex) of ``identity`` as canonical JSON (sorted keys): the key of what it describes."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class KeyedStore:
    """A folder of keyed records, each a file named by the caller."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str, key: str) -> dict | None:
        """The JSON record ``name`` when it is readable and carries ``key``; else None (compute it again)."""
        try:
            record = json.loads(self.path(name).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) and record.get(KEY) == key else None

    def write(self, name: str, key: str, record: Mapping) -> Path:
        """Write ``record`` under ``key`` as the JSON record ``name``, atomically (``key`` first in the file)."""
        path = self.path(name)
        atomic_write_json(path, {KEY: key, **{k: v for k, v in record.items() if k != KEY}})
        return path

    def keyed(self, pattern: str, key: str) -> dict[str, dict]:
        """Every JSON record whose file name matches ``pattern`` (a glob) and that carries ``key``, by file name."""
        if not self.folder.is_dir():
            return {}
        found = {path.name: self.read(path.name, key) for path in sorted(self.folder.glob(pattern))}
        return {name: record for name, record in found.items() if record is not None}

    def read_tensors(self, name: str, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """The tensors and metadata of the safetensors record ``name`` when it carries ``key``; else None."""
        from safetensors import SafetensorError, safe_open

        path = self.path(name)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get(KEY) != key:
                    return None
                return {k: handle.get_tensor(k) for k in handle.keys()}, meta  # noqa: SIM118 (not a dict)
        except (OSError, SafetensorError):
            return None

    def write_tensors(
        self, name: str, key: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
    ) -> Path:
        """Write ``tensors`` under ``key`` as the safetensors record ``name``, atomically."""
        path = self.path(name)
        atomic_save_safetensors(path, dict(tensors), {**(metadata or {}), KEY: key})
        return path
