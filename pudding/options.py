"""Options: the base class and parser of the commands' typed option groups, and list-valued option parsing.

Every ``pudding`` command's options are one dataclass built from :class:`OptionGroup` dataclasses by inheritance
(the groups are in :mod:`pudding.option_groups`); :func:`parse_options` turns the command line and ``--config``
YAML into a checked instance, with flat flags (``--base``, ``--tasks``) and each field's docstring in ``--help``.

``--tasks '[piqa, arc_easy]'`` and ``--tasks piqa,arc_easy`` both reach the code as ``["piqa", "arc_easy"]``, and
``--omit ''`` is the empty omission set (the dense model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from typing import TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from pudding.errors import OptionError

T = TypeVar("T")
Opts = TypeVar("Opts")


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
    :class:`~pudding.errors.OptionError` as ``option <name>: ...``. A command's options are one flat dataclass
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


def options_parser(cls: type, prog: str, parser_class: type[ArgumentParser] = ArgumentParser) -> ArgumentParser:
    """A parser whose flags are the fields of the options dataclass ``cls``, flat (``--base``, not ``--opts.base``).

    ``--help`` shows each field's docstring (the ``Args:`` sections of the class and of the groups it inherits;
    a command's own section may re-document an inherited field) with its type and default; ``--config FILE.yaml``
    reads the same flat keys, and flags after it override it.
    """
    description = (cls.__doc__ or "").strip().split("\n\n")[0]
    parser = parser_class(prog=prog, description=description)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_class_arguments(cls, nested_key=None, as_group=False)
    return parser


def build_options(cls: type[Opts], cfg: Namespace) -> Opts:
    """The options object from a parsed namespace (its ``__post_init__`` checks every value)."""
    return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.init})


def parse_options(cls: type[Opts], argv: Sequence[str], prog: str) -> Opts:
    """Parse ``argv`` (flags and ``--config``) into a checked ``cls`` instance."""
    return build_options(cls, options_parser(cls, prog).parse_args(list(argv)))
