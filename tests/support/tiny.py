"""Tiny random-init models, saved like real ones: what tests, benchmarks and smoke runs use instead of downloads.

They share the vocabulary of the real defaults (the default base model's tokenizer, the default router's tokenizer),
so every code path — tokenisation, packing, omission, bundles — runs as it does for the real models, in
milliseconds per forward pass.
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_llm(folder: str | Path, tokenizer, num_layers: int = 12, hidden: int = 64, seed: int = 0) -> Path:
    """A random Llama (``num_layers`` blocks, ``hidden`` wide) with ``tokenizer``, saved to ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def save_tiny_encoder(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide random BERT with the default router's tokenizer (its vocabulary), saved to ``folder``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pudding.router.data import resolve_router

    tokenizer = AutoTokenizer.from_pretrained(resolve_router("default"))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
