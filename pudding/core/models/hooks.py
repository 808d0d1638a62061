"""Forward hooks that read or replace a block's hidden states: how a run starts mid-model or records what it passed.

The scoring engine, the self router's pre-fill and the bench all start later blocks from recorded hidden states
instead of recomputing the blocks below; these three hooks are the only way they touch a block's inputs or outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def input_recorder(store: list[torch.Tensor]):
    """Forward pre-hook (``with_kwargs=True``): append a copy of the block's input hidden states to ``store``."""

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        store.append(hidden.detach().clone())

    return hook


def output_recorder(store: list[torch.Tensor]):
    """Forward hook: append a copy of the block's output hidden states to ``store``."""

    def hook(module, args, output):
        store.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    return hook


def input_injector(start_hidden: Sequence[torch.Tensor], current: dict[str, int]):
    """Forward pre-hook (``with_kwargs=True``): replace the block's input with ``start_hidden[current["batch"]]``."""

    def hook(module, args, kwargs):
        hidden = start_hidden[current["batch"]]
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    return hook
