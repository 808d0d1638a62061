"""Option groups: small dataclasses that check their own fields, and list-valued option parsing.

Every configurable part of pudding takes its settings as one of these groups, declared and documented once where
the thing it configures lives (:class:`pudding.core.llm.LLMOptions`, :class:`pudding.core.tasks.TaskOptions`,
:class:`pudding.core.io.OutputOptions`, ...). A command's options are one flat dataclass inheriting the groups it
needs (:mod:`pudding.cli.parse` reads it from flags and YAML); a DataModule or callback takes a group as one nested
argument.

``--tasks '[piqa, arc_easy]'`` and ``--tasks piqa,arc_easy`` both reach the code as ``["piqa", "arc_easy"]``, and
``--omit ''`` is the empty omission set (the dense model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from pudding.core.errors import OptionError

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


class OptionGroup:
    """Base of the option groups: dataclasses that check their own fields when constructed (cf. litgpt's TrainArgs).

    A group declares a few fields and a ``check`` method that validates (and normalises) only those, raising
    :class:`~pudding.core.errors.OptionError` as ``option <name>: ...``. A command's options are one flat dataclass
    that inherits the groups it needs; ``__post_init__`` runs every class's ``check`` along the MRO, base groups
    first, so constructing the command's options checks all of them, before any file or model is read.
    """

    def __post_init__(self) -> None:
        for cls in reversed(type(self).__mro__):
            check = cls.__dict__.get("check")
            if check is not None:
                check(self)


def check_positive(value: int | float | None, option: str, minimum: int = 1) -> None:
    """``option <name>: must be at least <minimum>, got <value>`` unless value is None or ≥ minimum."""
    if value is not None and value < minimum:
        raise OptionError(f"option {option}: must be at least {minimum}, got {value}")
