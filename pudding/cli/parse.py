"""The parser of the commands' options: a dataclass of option groups, read from flags and ``--config`` YAML.

Every ``pudding`` command's options are one dataclass built from :class:`~pudding.core.options.OptionGroup`
dataclasses by inheritance; :func:`parse_options` turns the command line and ``--config`` YAML into a checked
instance, with flat flags (``--base``, ``--tasks``) and each field's docstring in ``--help``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

Opts = TypeVar("Opts")


def options_parser(cls: type, prog: str, parser_class: type[ArgumentParser] = ArgumentParser) -> ArgumentParser:
    """A parser whose flags are the fields of the options dataclass ``cls``, flat (``--base``, not ``--opts.base``).

    ``--help`` shows each field's docstring (the ``Args:`` sections of the class and of the groups it inherits;
    a command's own section may re-document an inherited field) with its type and default; ``--config FILE.yaml``
    reads the same flat keys, and flags after it override it.
    """
    description = (cls.__doc__ or "").strip().split("\n\n")[0]
    parser = parser_class(prog=prog, description=description, exit_on_error=False, allow_abbrev=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_class_arguments(cls, nested_key=None, as_group=False)
    return parser


def build_options(cls: type[Opts], cfg: Namespace) -> Opts:
    """The options object from a parsed namespace (its ``__post_init__`` checks every value)."""
    return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.init})


def parse_options(cls: type[Opts], argv: Sequence[str], prog: str) -> Opts:
    """Parse ``argv`` (flags and ``--config``) into a checked ``cls`` instance."""
    return build_options(cls, options_parser(cls, prog).parse_args(list(argv)))
