"""Task names as the CLI and configs spell them, and their parsing."""

from __future__ import annotations

from collections.abc import Sequence

from pudding.core.tasks.arc import ArcChallenge, ArcEasy
from pudding.core.tasks.base import TaskDataError
from pudding.core.tasks.boolq import BoolQ
from pudding.core.tasks.hellaswag import HellaSwag
from pudding.core.tasks.piqa import Piqa
from pudding.core.tasks.task import Task
from pudding.core.tasks.winogrande import WinoGrande

TASKS: dict[str, Task] = {
    task.name: task for task in (ArcEasy(), ArcChallenge(), BoolQ(), HellaSwag(), Piqa(), WinoGrande())
}
"""Every task by name; instances are stateless, so one of each is shared."""

DEFAULT_TASKS = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "piqa", "winogrande")
"""The six zero-shot benchmarks the PuDDing paper reports."""


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (a task passes through unchanged)."""
    if isinstance(name, Task):
        return name
    try:
        return TASKS[name]
    except KeyError:
        raise TaskDataError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def parse_task_list(value: str | Sequence[str]) -> tuple[str, ...]:
    """Task names from a list or a comma-separated string, spaces stripped, repeats dropped, order kept."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = [str(part).strip() for part in parts]
    if not names or any(not name for name in names):
        raise TaskDataError(f"option tasks: empty task name in {value!r}; known tasks: {', '.join(TASKS)}")
    for name in names:
        if name not in TASKS:
            raise TaskDataError(f"option tasks: unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return tuple(dict.fromkeys(names))
