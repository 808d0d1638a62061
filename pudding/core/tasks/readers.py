"""Readers and field checks shared by every task, so a bad file fails the same way everywhere.

Every error names the file and the 1-based line (or the hub row) and the field, because the data comes from
many hand-collected copies and the first question on a failure is always "which line of which file".
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pudding.core.tasks.base import TaskDataError


def at(path: Path, line_no: int) -> str:
    """Location string used in error messages."""
    return f"{path}, line {line_no}"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    # Split on "\n" only (binary lines): universal newlines would also split on a stray "\r" inside a text field.
    # Each line is decoded on its own, so a byte that is not UTF-8 is reported at its own line.
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise TaskDataError(
                    f"{at(path, line_no)}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            yield line_no, line.removesuffix("\n").removesuffix("\r")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_no, record)`` for each non-blank line, in file order."""
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TaskDataError(f"{at(path, line_no)}: invalid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(record, dict):
            raise TaskDataError(f"{at(path, line_no)}: expected a JSON object, got {type(record).__name__}")
        yield line_no, record


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """``(line_no, text)`` of every line, dropping only blank lines at the very end of the file."""
    lines = list(_lines(path))
    while lines and not lines[-1][1].strip():
        lines.pop()
    return lines


def bad_field(where: str, key: str, problem: str) -> TaskDataError:
    """The error for a field that is present but unusable."""
    return TaskDataError(f"{where}: field {key!r} {problem}")


def require(record: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``record[key]`` after checking that it exists and has the expected type (a bool never counts as int)."""
    if key not in record:
        raise TaskDataError(f"{where}: missing field {key!r}")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise bad_field(where, key, f"should be {names}, got {type(value).__name__} {value!r}")
    return value


def require_strings(record: Mapping[str, Any], key: str, where: str) -> list[str]:
    """A field holding a list of at least two strings (answer choices)."""
    value = require(record, key, where, (list, tuple))
    if len(value) < 2 or not all(isinstance(v, str) for v in value):
        raise bad_field(where, key, f"should be a list of at least 2 strings, got {value!r}")
    return list(value)


def require_index(record: Mapping[str, Any], key: str, where: str, n_choices: int) -> int:
    """A 0-based label given as an int or a digit string, checked against the number of choices."""
    value = require(record, key, where, (int, str))
    index = int(value) if isinstance(value, int) or (value.isascii() and value.isdigit()) else -1
    if not 0 <= index < n_choices:
        raise bad_field(where, key, f"should be a label in 0..{n_choices - 1}, got {value!r}")
    return index
