"""Shared fixtures: the real default model (loaded once per session), its tokenizer, tiny random models."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

if TYPE_CHECKING:
    from pudding.router.module import RouterModule
    from pudding.routerdata import RouterDataModule

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


# ------------------------------------------------------------------------ tiny routers (router tests)
WORDS = ["the", "a", "cat", "dog", "sun", "rain", "tree", "river", "stone", "light", "quick", "slow", "red", "blue"]
SETS = [[1, 4], [2, 3], [0, 5], [3, 4]]
NAMES = ["arc_easy/ppl", "boolq/ppl", "piqa/ppl", "arc_easy/acc"]


def tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT with the default router's tokenizer (its vocabulary), saved to ``folder``."""
    from pudding.tiny import save_tiny_encoder

    return save_tiny_encoder(folder)


def tiny_dataset(path: Path, n: int = 48, sha: str = "c" * 64, sets=SETS, seed: int = 0, names=None) -> Path:
    """``n`` invented boolq/piqa prompts with noisy scores over ``sets`` (named ``names``, default :data:`NAMES`),
    saved as a router dataset at ``path``."""
    from pudding.routerdata import save_dataset
    from pudding.routerdata.store import make_dataset

    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    cols = {"task": [], "item_id": [], "router_text": [], "scores": [], "dense_score": []}
    for i in range(n):
        task = "boolq" if i % 3 else "piqa"
        words = rng.randint(2, 40) if task == "boolq" else rng.randint(2, 8)
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        base = -1.5 - 0.01 * words
        scores = [base + float(x) for x in noise.normal(0, 0.2, len(sets))]
        cols["task"].append(task)
        cols["item_id"].append(f"{task}-{i}")
        cols["router_text"].append(f"Question: {text}?\nAnswer:")
        cols["scores"].append(scores)
        cols["dense_score"].append(max(scores) + 0.1)
    meta = {
        "candidates_sha256": sha,
        "candidates_file": "/nonexistent/candidates.yaml",
        "candidates_base_model": "tiny-llm",
        "base_model": "tiny-llm",
        "num_blocks": 6,
        "num_candidates": len(sets),
        "omission_sets": sets,
        "candidate_names": list(names) if names is not None else NAMES[: len(sets)],
    }
    return save_dataset(make_dataset(cols, len(sets)), meta, path)


def module_with_data(setup: dict, **kwargs) -> tuple[RouterModule, RouterDataModule]:
    """A RouterModule set up on ``setup``'s tiny dataset as ``trainer.fit`` would (K, names, best static known)."""
    from lightning.pytorch import Trainer

    from pudding.router.module import RouterModule
    from pudding.routerdata import RouterDataModule

    module = RouterModule(encoder=str(setup["encoder"]), max_length=64, **kwargs)
    data = RouterDataModule(datasets=str(setup["dataset"]), router=str(setup["encoder"]), max_length=64, batch_size=8)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=1)
    trainer.strategy.connect(module)
    trainer.datamodule = data  # what trainer.fit does before setup
    module.trainer = trainer
    data.trainer = trainer
    module.setup("fit")
    return module, data
