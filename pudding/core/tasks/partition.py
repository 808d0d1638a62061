"""Which items train the router and which are evaluated, so the two never overlap.

The router should learn from a task's train split. When that split is not at hand (PIQA, BoolQ and HellaSwag
lack it in /work/shared/data), a fixed share of the validation split is set aside instead, and the same share is
then left out of evaluation whenever validation is also the split we evaluate on. Membership is decided per item
by a sha256 hash of (seed, task, item id): it does not depend on file order, on Python's salted ``hash()``, or on
which other items are present, so it is reproducible across runs and machines.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from pudding.core.errors import OptionError
from pudding.core.options import OptionGroup
from pudding.core.tasks.base import Item, TaskDataError
from pudding.core.tasks.registry import DEFAULT_TASKS, get_task, parse_task_list
from pudding.core.tasks.task import Task


@dataclass
class DataOptions(OptionGroup):
    """Where benchmark data comes from and how router data is found for each task.

    Attributes:
        data_dir: Folder holding the original benchmark files, one sub-folder per task, laid out like
            /work/shared/data (see its SOURCES.md). None downloads lm-eval's hub datasets instead.
        router_fraction: Share of a task's validation split set aside for router training when the task has no
            train split at hand; those items are then excluded from evaluation. Must lie strictly between 0 and 1.
        split_seed: Seed of the hash that decides which validation items are set aside; any value gives a fixed,
            reproducible split, a different value a different one.
    """

    data_dir: str | None = None
    router_fraction: float = 0.5
    split_seed: int = 0

    def check(self) -> None:
        check_options(self)


ALL_TASKS = ",".join(DEFAULT_TASKS)


@dataclass
class TaskOptions(DataOptions):
    """Which tasks, read from where (``data_dir``, ``router_fraction`` and ``split_seed`` from
    :class:`DataOptions`).

    Args:
        tasks: Tasks, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa, winogrande.
    """

    tasks: list[str] | str = ALL_TASKS

    def check(self) -> None:
        self.tasks = parse_task_list(self.tasks)

    @property
    def data_options(self) -> DataOptions:
        """The data options alone (what :func:`eval_items` and ``router_items`` take)."""
        return DataOptions(data_dir=self.data_dir, router_fraction=self.router_fraction, split_seed=self.split_seed)


def check_options(opts: DataOptions) -> None:
    """Fail early, naming the option, on a data folder that does not exist or a router fraction that would leave one
    side empty."""
    if opts.data_dir is not None and not Path(opts.data_dir).expanduser().is_dir():
        raise OptionError(
            f"option data_dir: {opts.data_dir} is not a folder (it should hold one sub-folder per task, laid out like "
            "/work/shared/data; null reads the hub)"
        )
    fraction = opts.router_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise OptionError(f"option router_fraction: must be a number strictly between 0 and 1, got {fraction!r}")


@functools.lru_cache(maxsize=64)
def _load(task_name: str, split: str, data_dir: str | None) -> tuple[Item, ...]:
    return tuple(get_task(task_name).load(split, data_dir))


def load_split(task: Task | str, split: str, data_dir: str | None = None) -> tuple[Item, ...]:
    """``task.load`` memoised per (task, split, data_dir); items are immutable, so sharing them is safe.

    The memo does not notice files changing on disk; call :func:`clear_cache` if they do.
    """
    key = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    return _load(get_task(task).name, split, key)


def clear_cache() -> None:
    """Forget every memoised split (for tests, or after the files changed)."""
    _load.cache_clear()


def is_router_item(task_name: str, item_id: str, opts: DataOptions) -> bool:
    """Whether a validation item is set aside for the router: a stable hash below ``router_fraction``."""
    digest = hashlib.sha256(f"{opts.split_seed}\x00{task_name}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < math.floor(opts.router_fraction * 2**64)


def router_split(task: Task | str, opts: DataOptions) -> str:
    """The split router data comes from: ``train`` when available, else ``validation`` (partly)."""
    task = get_task(task)
    splits = task.available_splits(opts.data_dir)
    if "train" in splits:
        return "train"
    if "validation" in splits:
        return "validation"
    raise TaskDataError(
        f"{task.name}: neither a train nor a validation split {_where(opts)} to take router data from; "
        f"available splits: {', '.join(splits) or 'none'}"
    )


def router_items(task: Task | str, opts: DataOptions) -> tuple[list[Item], str]:
    """Items to train or calibrate the router on, in source order, and a note saying where they came from."""
    check_options(opts)
    task = get_task(task)
    split = router_split(task, opts)
    items = load_split(task, split, opts.data_dir)
    if split == "train":
        return list(items), f"{task.name}: router data = all {len(items)} train items {_source(task, split, opts)}"
    picked = [item for item in items if is_router_item(task.name, item.item_id, opts)]
    note = (
        f"{task.name}: no train split {_where(opts)}; router data = {len(picked)} of {len(items)} validation items "
        f"(router_fraction={opts.router_fraction}, split_seed={opts.split_seed})"
    )
    return picked, note


def eval_items(task: Task | str, opts: DataOptions) -> tuple[list[Item], str]:
    """Items to evaluate on (the task's lm-eval split) in source order, minus any set aside for the router."""
    check_options(opts)
    task = get_task(task)
    items = load_split(task, task.eval_split, opts.data_dir)
    if router_split(task, opts) != task.eval_split:
        source = _source(task, task.eval_split, opts)
        return list(items), f"{task.name}: evaluating on all {len(items)} {task.eval_split} items {source}"
    kept = [item for item in items if not is_router_item(task.name, item.item_id, opts)]
    note = (
        f"{task.name}: no train split {_where(opts)}; {len(items) - len(kept)} of {len(items)} {task.eval_split} "
        f"items are reserved for router training and excluded from evaluation ({len(kept)} evaluated)"
    )
    return kept, note


def _where(opts: DataOptions) -> str:
    return "on the hub" if opts.data_dir is None else f"in {opts.data_dir}"


def _source(task: Task, split: str, opts: DataOptions) -> str:
    if opts.data_dir is None:
        return f"from the hub ({task.hf_path}{'' if task.hf_name is None else ' ' + task.hf_name})"
    root = task.task_dir(opts.data_dir)
    return f"from {', '.join(str(p.relative_to(root)) for p in task.source_files(split, opts.data_dir))} in {root}"
