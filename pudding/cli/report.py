"""One-line reports of bad input: the wrapper every entry point runs its command through.

:func:`run_command` turns a :class:`~pudding.core.errors.PuddingError`, and an ``OSError`` that names a path, into
one line on stderr::

    pudding eval: error: option omit: block indices [99] are outside 0..29 (base model 'default' has 30 blocks)

and exit code 2. ``--debug`` (anywhere on the command line) or ``PUDDING_DEBUG=1`` shows the traceback instead.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from pudding.core.errors import PuddingError

T = TypeVar("T")

EXIT_USAGE = 2
"""Exit code of a bad input (the same code argparse uses for a bad option)."""

DEBUG_FLAG = "--debug"
DEBUG_ENV = "PUDDING_DEBUG"


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
    except argparse.ArgumentError as exc:  # the parser's own: an unknown option, a value of the wrong type
        if debug:
            raise
        message = f"{exc} (see {command} --help)"
    except OSError as exc:
        if debug or exc.filename is None:
            raise
        message = describe_os_error(exc)
    print(f"{command}: error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)
