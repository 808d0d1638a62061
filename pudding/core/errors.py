"""The one base class for every error a person can fix.

Anything wrong with an input (an option value, a task name, a data file, a candidate file, a dataset, a release
folder, an output path) raises a :class:`PuddingError` subclass whose message says what is wrong, where (file, line,
field or option) and what to do. The command layer (:mod:`pudding.cli.report`) prints such an error as one line and
exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PuddingError(ValueError):
    """A bad input, named: the message says what is wrong, where, and what to do. Subclasses say which kind."""


class OptionError(PuddingError):
    """An option value that cannot work (range, combination, unknown name)."""


class OutputError(PuddingError):
    """An output path that cannot be written, or exists and may not be replaced without ``--overwrite``."""
