"""Zero-shot tasks, written exactly as lm-eval 0.4.13 prompts them, and the router/evaluation split of their data.

Public API: :class:`Item`, :class:`Task`, :data:`TASKS`, :func:`get_task`, :data:`DEFAULT_TASKS`,
:func:`parse_task_list`, :class:`DataOptions`, :func:`router_items`, :func:`eval_items`, :class:`TaskDataError`.
"""

from __future__ import annotations

from pudding.tasks.arc import ArcChallenge, ArcEasy
from pudding.tasks.base import SPLITS, Item, TaskDataError
from pudding.tasks.boolq import BoolQ
from pudding.tasks.hellaswag import HellaSwag
from pudding.tasks.partition import DataOptions, clear_cache, eval_items, is_router_item, load_split, router_items
from pudding.tasks.piqa import Piqa
from pudding.tasks.registry import DEFAULT_TASKS, TASKS, get_task, parse_task_list
from pudding.tasks.task import Task
from pudding.tasks.winogrande import WinoGrande

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
    "WinoGrande",
    "clear_cache",
    "eval_items",
    "get_task",
    "is_router_item",
    "load_split",
    "parse_task_list",
    "router_items",
]
