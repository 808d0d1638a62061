"""Zero-shot tasks, written exactly as lm-eval 0.4.13 prompts them, and the router/evaluation split of their data.

Public API: :class:`Item`, :class:`Task`, :data:`TASKS`, :func:`get_task`, :data:`DEFAULT_TASKS`,
:func:`parse_task_list`, :class:`DataOptions`, :func:`router_items`, :func:`eval_items`, :class:`TaskDataError`.
"""

from __future__ import annotations

from pudding.core.tasks.arc import ArcChallenge, ArcEasy
from pudding.core.tasks.base import SPLITS, Item, TaskDataError
from pudding.core.tasks.boolq import BoolQ
from pudding.core.tasks.hellaswag import HellaSwag
from pudding.core.tasks.partition import (
    DataOptions,
    TaskOptions,
    clear_cache,
    eval_items,
    is_router_item,
    load_split,
    router_items,
)
from pudding.core.tasks.piqa import Piqa
from pudding.core.tasks.registry import DEFAULT_TASKS, TASKS, get_task, parse_task_list
from pudding.core.tasks.task import Task
from pudding.core.tasks.winogrande import WinoGrande

__all__ = [
    "DEFAULT_TASKS",
    "SPLITS",
    "TASKS",
    "ArcChallenge",
    "ArcEasy",
    "BoolQ",
    "DataOptions",
    "HellaSwag",
    "Item",
    "Piqa",
    "Task",
    "TaskDataError",
    "TaskOptions",
    "WinoGrande",
    "clear_cache",
    "eval_items",
    "get_task",
    "is_router_item",
    "load_split",
    "parse_task_list",
    "router_items",
]
