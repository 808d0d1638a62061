"""One base class for every error a person can fix, and the entry-point wrapper that reports it in one line.

Anything wrong with an input (an option value, a task name, a data file, a candidate file, a dataset, a release
folder, an output path) raises a :class:`PuddingError` subclass whose message says what is wrong, where (file, line,
field or option) and what to do. :func:`run_command` turns such an error, and an ``OSError`` that names a path, into
one line on stderr::

    pudding eval: error: option omit: block indices [99] are outside 0..29 (base model 'default' has 30 blocks)

and exit code 2. ``--debug`` (anywhere on the command line) or ``PUDDING_DEBUG=1`` shows the traceback instead.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

EXIT_USAGE = 2
"""Exit code of a bad input (the same code argparse uses for a bad option)."""

DEBUG_FLAG = "--debug"
DEBUG_ENV = "PUDDING_DEBUG"


class PuddingError(ValueError):
    """A bad input, named: the message says what is wrong, where, and what to do. Subclasses say which kind."""


class OptionError(PuddingError):
    """An option value that cannot work (range, combination, unknown name)."""


class OutputError(PuddingError):
    """An output path that cannot be written, or exists and may not be replaced without ``--overwrite``."""


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether ``--debug`` is on the command line or ``PUDDING_DEBUG`` is set to something other than 0/empty."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "False")


def one_line(text: str) -> str:
    """Collapse a message to one line (YAML and Arrow errors carry newlines)."""
    return " ".join(str(text).split())


def describe_os_error(exc: OSError) -> str:
    """``<path>: <what>`` for an OS error on a named path, e.g. ``out/x.json: Permission denied``."""
    where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    what = exc.strerror or str(exc)
    return f"{where}: {what}"


def run_command(command: str, fn: Callable[[list[str]], T], argv: Sequence[str] | None = None) -> T:
    """Run ``fn(argv)`` (the command's own main, ``--debug`` removed) and report input errors in one line.

    ``command`` is the name shown in messages (``pudding eval``). A :class:`PuddingError`, or an ``OSError`` with
    a file name, prints ``<command>: error: <message>`` on stderr and exits with code 2; with ``--debug`` or
    ``PUDDING_DEBUG=1`` it propagates with its traceback. Every other exception propagates unchanged.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        return fn(argv)
    except PuddingError as exc:
        if debug:
            raise
        message = str(exc)
    except OSError as exc:
        if debug or exc.filename is None:
            raise
        message = describe_os_error(exc)
    print(f"{command}: error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)
