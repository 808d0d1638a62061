"""How many tokens one forward pass of the scoring engine takes: the ``batch_tokens`` option and its ``auto`` value.

``batch_tokens`` bounds rows × padded width of a batch. ``auto`` is 1024 on a CPU (the value every tracked result
was made with) and on devices other than CUDA. On CUDA it is sized from the memory left free once the model is
loaded (``torch.cuda.mem_get_info``; the smallest over the GPUs the model sits on), for a batch of ``T`` tokens
whose rows are up to ``W = min(T, max_length)`` wide:

    activations(T) = T · e · (4·hidden + 3·intermediate) + T · 4 · hidden        (one block's live tensors)
                   + T · W · (heads · (2·e + 4) + e)                               (eager attention and the 4-D mask)
    LM head        = max(HEAD_CHUNK_ELEMENTS, vocab) · (e + 4)                     (one chunk of logits, and in float32)
    T = the largest power of two in [AUTO_MIN, AUTO_MAX] with activations(T) + LM head <= AUTO_SHARE · free

with ``e`` the bytes per element of the model's dtype. The block term holds the residual stream, the normed input,
queries/keys/values and the attention output (4 × hidden), the MLP's gate, up and product (3 × intermediate) and the
float32 copy RMSNorm makes; the attention term holds each head's scores and probabilities (softmax in float32) and
the additive mask (SDPA needs less, so the bound is safe with both). Half of the free memory is left for the
allocator's fragmentation, the hidden states a candidate search keeps between trials and the KV cache of generation.
A power of two keeps the value, and so the batches and every cache key that records it, the same from run to run
while free memory wanders by a little.
"""

from __future__ import annotations

import torch
from torch import nn

from pudding.core.errors import OptionError

AUTO = "auto"
AUTO_CPU = 1024
"""``batch_tokens: auto`` off CUDA (and the value of every tracked result)."""
AUTO_SHARE = 0.5
"""Share of the free CUDA memory ``auto`` plans activations into."""
AUTO_MIN, AUTO_MAX = 128, 65536
"""Bounds of ``auto`` on CUDA (beyond 64k tokens a batch gains nothing; below 128 the GPU is nearly full)."""
HEAD_CHUNK_ELEMENTS = 1 << 22
"""Logits per LM-head chunk (16 MB of float32): the scoring engine's head runs this many at a time."""


def check_batch_tokens(value: int | str, option: str = "batch_tokens") -> int | str:
    """``value`` if it is ``auto`` or a positive integer (text from a command line or model_args is converted)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise OptionError(f"option {option}: {value!r} is not auto or a positive integer") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"option {option}: {value!r} is not auto or a positive integer")
    return value


def batch_tokens_key(value: int | str, device_type: str) -> int | str:
    """What a cache key records for ``value`` before the model is loaded: the number itself, 1024 for ``auto`` off
    CUDA (so CPU keys are the ones a plain 1024 gave), ``auto`` on CUDA (sized after loading)."""
    value = check_batch_tokens(value)
    if value == AUTO and device_type != "cuda":
        return AUTO_CPU
    return value


def _config_int(config, names: tuple[str, ...], default: int | None = None) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    if default is None:
        raise ValueError(f"model config has none of {names}")
    return default


def model_devices(model: nn.Module) -> list[torch.device]:
    """The devices the model's parameters sit on (several when it is spread over GPUs), in first-use order."""
    seen: dict[torch.device, None] = {}
    for param in model.parameters():
        seen.setdefault(param.device, None)
    return list(seen)


def activation_bytes(model: nn.Module, tokens: int, max_length: int) -> int:
    """Planned peak bytes of one scoring batch of ``tokens`` tokens (the formula in the module docstring)."""
    config = model.config
    hidden = _config_int(config, ("hidden_size", "n_embd", "d_model"))
    intermediate = _config_int(config, ("intermediate_size", "n_inner", "ffn_dim"), 4 * hidden)
    heads = _config_int(config, ("num_attention_heads", "n_head"))
    vocab = _config_int(config, ("vocab_size",))
    e = next(model.parameters()).element_size()
    width = min(tokens, max_length)
    block = tokens * e * (4 * hidden + 3 * intermediate) + tokens * 4 * hidden
    attention = tokens * width * (heads * (2 * e + 4) + e)
    head = max(HEAD_CHUNK_ELEMENTS, vocab) * (e + 4)
    return block + attention + head


def free_cuda_bytes(devices: list[torch.device]) -> int:
    """The least free memory over the CUDA ``devices`` (a spread model's batch passes through all of them)."""
    return min(torch.cuda.mem_get_info(d)[0] for d in devices)


def auto_batch_tokens(model: nn.Module, max_length: int) -> int:
    """``batch_tokens: auto`` for ``model`` where it sits (see the module docstring)."""
    devices = model_devices(model)
    if not devices or any(d.type != "cuda" for d in devices):
        return AUTO_CPU
    budget = AUTO_SHARE * free_cuda_bytes(devices)
    tokens = AUTO_MAX
    while tokens > AUTO_MIN and activation_bytes(model, tokens, max_length) > budget:
        tokens //= 2
    return tokens


def resolve_batch_tokens(value: int | str, model: nn.Module, max_length: int) -> int:
    """The number of tokens per batch: ``value`` itself, or :func:`auto_batch_tokens` for ``auto``."""
    value = check_batch_tokens(value)
    return auto_batch_tokens(model, max_length) if value == AUTO else value
