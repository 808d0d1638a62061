"""Parsing of list-valued options: a YAML list or a comma-separated string mean the same thing.

``--tasks '[piqa, arc_easy]'`` and ``--tasks piqa,arc_easy`` both reach the code as ``["piqa", "arc_easy"]``, and
``--omit ''`` is the empty omission set (the dense model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from pudding.errors import OptionError

T = TypeVar("T")


def _as_list(value: str | int | Iterable | None, cast: Callable[[str], T], option: str) -> list[T]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return [cast(str(value))]
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]")
        parts = [p.strip().strip("'\"") for p in text.split(",")]
        value = [p for p in parts if p]
    out = []
    for part in value:
        try:
            out.append(cast(str(part).strip()))
        except ValueError as exc:
            raise OptionError(f"option {option}: {part!r} is not valid ({exc})") from exc
    return out


def as_int_list(value: str | int | Iterable | None, option: str = "value") -> list[int]:
    """``"5,9,13"``, ``[5, 9, 13]``, ``5`` → ``[5, 9, 13]`` / ``[5]``; ``""`` or None → ``[]``."""
    return _as_list(value, int, option)


def as_str_list(value: str | Iterable | None, option: str = "value") -> list[str]:
    """``"piqa,arc_easy"`` or ``["piqa", "arc_easy"]`` → ``["piqa", "arc_easy"]``."""
    return _as_list(value, str, option)
