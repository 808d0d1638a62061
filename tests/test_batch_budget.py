"""``batch_tokens: auto``: 1024 on a CPU, sized from free GPU memory on CUDA (the formula in core.batch_budget)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pudding.core import batch_budget
from pudding.core.batch_budget import activation_bytes, auto_batch_tokens, batch_tokens_key, check_batch_tokens
from pudding.core.errors import OptionError
from pudding.core.llm import LLMOptions
from pudding.core.scoring import Scorer

GiB = 2**30


class Shaped(nn.Module):
    """A stand-in with a real model's config and dtype (no weights to speak of): what the formula reads."""

    def __init__(self, dtype: torch.dtype, **config) -> None:
        super().__init__()
        self.config = SimpleNamespace(**config)
        self.weight = nn.Parameter(torch.zeros(1, dtype=dtype))


LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, vocab_size=128256)


def on_gpus(monkeypatch, free: list[int]) -> None:
    """Make the model look placed on len(free) GPUs with those free bytes."""
    devices = [torch.device("cuda", i) for i in range(len(free))]
    monkeypatch.setattr(batch_budget, "model_devices", lambda model: devices)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (free[torch.device(d).index], 80 * GiB))


def test_auto_is_1024_on_a_cpu_and_the_option_default(tiny_llama, tokenizer):
    assert LLMOptions().batch_tokens == "auto"
    assert Scorer(tiny_llama, tokenizer, batch_tokens="auto").batch_tokens == 1024
    assert auto_batch_tokens(tiny_llama, 2048) == 1024
    assert Scorer(tiny_llama, tokenizer, batch_tokens=300).batch_tokens == 300


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (" AUTO ", "auto"), ("2048", 2048), (512, 512)])
def test_batch_tokens_accepts_auto_and_positive_integers(value, expected):
    assert check_batch_tokens(value) == expected
    assert LLMOptions(batch_tokens=value).batch_tokens == expected


@pytest.mark.parametrize("value", [0, -5, "lots", "1.5", True])
def test_batch_tokens_refuses_anything_else_in_one_line(value):
    with pytest.raises(OptionError, match=r"^option batch_tokens: .* is not auto or a positive integer$"):
        LLMOptions(batch_tokens=value)


def test_cache_keys_record_1024_for_auto_off_cuda():
    """Keys made before the model loads: a CPU run with auto has the key a plain 1024 had (tracked results resume)."""
    assert batch_tokens_key("auto", "cpu") == batch_tokens_key(1024, "cpu") == 1024
    assert batch_tokens_key("auto", "cuda") == "auto"
    assert batch_tokens_key(512, "cuda") == 512
    assert LLMOptions().batch_tokens_key("cpu") == 1024


def test_auto_on_cuda_follows_the_formula(monkeypatch):
    """An 8B Llama in bfloat16 (max_length 8192): the largest power of two whose planned bytes fit half the free
    memory. By hand: 16384 tokens plan 36.8 GB, 8192 plan 18.4 GB; 4096 plan 4.9 GB, 2048 plan 1.4 GB."""
    model = Shaped(torch.bfloat16, **LLAMA3_8B)
    assert activation_bytes(model, 8192, 8192) == pytest.approx(18.4e9, rel=0.01)
    assert activation_bytes(model, 16384, 8192) == pytest.approx(36.8e9, rel=0.01)
    on_gpus(monkeypatch, [63 * GiB])  # an 80 GB GPU with the model loaded
    assert auto_batch_tokens(model, 8192) == 8192
    on_gpus(monkeypatch, [7 * GiB])  # a 24 GB GPU with the model loaded
    assert auto_batch_tokens(model, 8192) == 2048
    on_gpus(monkeypatch, [0])  # nothing free: the floor
    assert auto_batch_tokens(model, 8192) == batch_budget.AUTO_MIN
    # a small model on a large GPU: the ceiling
    small = Shaped(torch.bfloat16, hidden_size=576, intermediate_size=1536, num_attention_heads=9, vocab_size=49152)
    on_gpus(monkeypatch, [120 * GiB])
    assert auto_batch_tokens(small, 2048) == batch_budget.AUTO_MAX


def test_auto_on_cuda_takes_float32_and_the_tightest_gpu_into_account(monkeypatch):
    bf16, fp32 = Shaped(torch.bfloat16, **LLAMA3_8B), Shaped(torch.float32, **LLAMA3_8B)
    on_gpus(monkeypatch, [40 * GiB])
    assert auto_batch_tokens(fp32, 8192) < auto_batch_tokens(bf16, 8192)
    on_gpus(monkeypatch, [63 * GiB, 7 * GiB])  # spread over two GPUs: every batch passes the fuller one
    assert auto_batch_tokens(bf16, 8192) == 2048


def test_scorer_sizes_auto_where_the_model_sits(tiny_llama, tokenizer, monkeypatch):
    """The engine resolves auto itself (every stage gets it), from its own max_length."""
    on_gpus(monkeypatch, [1 * GiB])
    scorer = Scorer(tiny_llama, tokenizer, batch_tokens="auto", max_length=512)
    budget = batch_budget.AUTO_SHARE * GiB
    expected = max(t for t in (2**k for k in range(7, 17)) if activation_bytes(tiny_llama, t, 512) <= budget)
    assert scorer.batch_tokens == expected and expected > 1024
