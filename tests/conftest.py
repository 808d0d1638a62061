"""Shared fixtures: the real default model (loaded once per session), its tokenizer, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark files beside the checkout; tests that need them skip when they are absent."""
    if not (SHARED_DATA / "SOURCES.md").is_file():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (only present beside a workplace checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def default_base():
    """SmolLM2-135M-Instruct, float32 on CPU (first load de-quantises the GGUF, ~20 s; later loads use the cache)."""
    from pudding.models.loading import load_base

    return load_base("default", dtype="float32", device="cpu", cache_dir=REPO / "checkpoints" / "base_models")


@pytest.fixture(scope="session")
def tokenizer(default_base):
    return default_base.tokenizer


def tiny_config(family: str, vocab_size: int, num_layers: int = 6):
    """A random-init config of ``family`` small enough for logic tests (a few ms per forward pass)."""
    from transformers import AutoConfig

    common = dict(vocab_size=vocab_size, tie_word_embeddings=False)
    if family == "opt":
        return AutoConfig.for_model(
            "opt",
            hidden_size=32,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            ffn_dim=64,
            word_embed_proj_dim=32,
            max_position_embeddings=512,
            **common,
        )
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=32, n_layer=num_layers, n_head=4, n_positions=512, **common)
    if family == "gpt_neox":
        return AutoConfig.for_model(
            "gpt_neox",
            hidden_size=32,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=512,
            **common,
        )
    extra = {"head_dim": 8} if family in ("gemma", "gemma2") else {}
    return AutoConfig.for_model(
        family,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **extra,
        **common,
    )


def tiny_model(family: str, vocab_size: int, num_layers: int = 6, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, num_layers))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    """A 6-block random-init Llama sharing the default tokenizer's vocabulary."""
    return tiny_model("llama", len(tokenizer))
