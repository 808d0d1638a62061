"""Where each model family keeps its decoder blocks.

Block omission, hidden-state capture and the scoring engine only need three facts about a model: the attribute
path of its block list, the module that turns token ids into final hidden states (the "body"), and how those
hidden states become logits. This file is the only place that knows them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FamilyAdapter:
    """How to reach the decoder blocks of one model family.

    ``layers_path`` is the dotted attribute path, from the ``*ForCausalLM`` module, to the ``nn.ModuleList`` of
    blocks. ``packing`` says whether the family accepts a custom 4-D attention mask with explicit position ids,
    which lets several continuations share one pass over their context.
    """

    name: str
    layers_path: str
    packing: bool = True


LLAMA_STYLE = FamilyAdapter("llama-style", "model.layers")
OPT_STYLE = FamilyAdapter("opt", "model.decoder.layers")
GPT2_STYLE = FamilyAdapter("gpt2", "transformer.h")
NEOX_STYLE = FamilyAdapter("gpt-neox", "gpt_neox.layers")

# model_type -> adapter; anything else is found by probing the known paths in order.
_BY_MODEL_TYPE = {
    "llama": LLAMA_STYLE,
    "mistral": LLAMA_STYLE,
    "mixtral": LLAMA_STYLE,
    "qwen2": LLAMA_STYLE,
    "qwen3": LLAMA_STYLE,
    "gemma": LLAMA_STYLE,
    "gemma2": LLAMA_STYLE,
    "phi3": LLAMA_STYLE,
    "olmo": LLAMA_STYLE,
    "olmo2": LLAMA_STYLE,
    "opt": OPT_STYLE,
    "gpt2": GPT2_STYLE,
    "gpt_neox": NEOX_STYLE,
}
_PROBE_ORDER = (LLAMA_STYLE, OPT_STYLE, GPT2_STYLE, NEOX_STYLE)


def _resolve(root: nn.Module, path: str) -> object | None:
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def adapter_for(model: nn.Module) -> FamilyAdapter:
    """Return the adapter for ``model``, or raise naming the model class when no known layout fits."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    candidates = [_BY_MODEL_TYPE[model_type]] if model_type in _BY_MODEL_TYPE else list(_PROBE_ORDER)
    for adapter in candidates:
        if isinstance(_resolve(model, adapter.layers_path), nn.ModuleList):
            return adapter
    known = ", ".join(sorted({a.layers_path for a in _PROBE_ORDER}))
    raise TypeError(
        f"{type(model).__name__} (model_type={model_type!r}) has no decoder block list at any known path ({known}); "
        "add a FamilyAdapter for it in pudding/models/adapters.py"
    )


def get_layers(model: nn.Module) -> nn.ModuleList:
    """The model's full list of decoder blocks, in order."""
    return _resolve(model, adapter_for(model).layers_path)  # type: ignore[return-value]


def set_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    """Put ``layers`` where the model's forward pass will iterate over them."""
    parent_path, _, attr = adapter_for(model).layers_path.rpartition(".")
    setattr(_resolve(model, parent_path), attr, layers)


def num_blocks(model: nn.Module) -> int:
    """Number of decoder blocks of the (unpruned) model."""
    return len(get_layers(model))


def body(model: nn.Module) -> nn.Module:
    """The module mapping token ids to final (normed) hidden states, without the LM head."""
    return model.base_model


def hidden_to_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Apply the LM head (and a family's final soft-capping, if any) to final hidden states."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
