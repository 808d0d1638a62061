"""Shared fixtures and helpers: the real default model (loaded once per session), its tokenizer, tiny random models
and routers, tiny task files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

if TYPE_CHECKING:
    from pudding.router.data import RouterDataModule
    from pudding.router.module import RouterModule

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Real results the tests must leave alone: a test that falls back to a default output folder (checkpoints/outcomes
# and the zero-shot cache are relative to the working directory) would mix tiny-model records into them, and the next
# real `pudding compare` would pack those into the tracked progress files.
GUARDED = (REPO / "checkpoints" / "outcomes", REPO / "checkpoints" / "router" / "zeroshot_cache")


def guarded_files() -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under :data:`GUARDED` and of the tracked progress files."""
    files = [f for root in GUARDED if root.is_dir() for f in root.rglob("*") if f.is_file()]
    files += sorted((REPO / "benchmarks" / "results").glob("*.parquet"))
    return {str(f.relative_to(REPO)): (f.stat().st_size, f.stat().st_mtime_ns) for f in files}


@pytest.fixture(scope="session", autouse=True)
def results_left_alone():
    """Fails the session when a test wrote into the checkout's results (see :data:`GUARDED`). A real `pudding compare`
    or fit running beside the tests writes there too and trips it: run the tests alone."""
    before = guarded_files()
    yield
    after = guarded_files()
    touched = sorted(p for p in after.keys() | before.keys() if before.get(p) != after.get(p))
    assert not touched, (
        f"the checkout's results changed during the tests (a test without its own output folder, or a job beside "
        f"them): {touched[:5]} ({len(touched)} files)"
    )


# ------------------------------------------------------------------------ devices
NO_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the cuda variant runs where torch sees one"
)
DEVICES = ["cpu", pytest.param("cuda", marks=NO_CUDA)]


@pytest.fixture(scope="module", params=DEVICES)
def device(request) -> torch.device:
    """A test that takes it runs on the CPU and again on CUDA where a device is present (skipped, saying so,
    elsewhere; a skip costs no setup). Module-scoped, so a module's fixtures can load their models on it."""
    return torch.device(request.param)


def on_device(model, device: torch.device):
    """``model`` on ``device``: the very object on the CPU (a session fixture's model, shared), a copy elsewhere."""
    import copy

    return model if device.type == "cpu" else copy.deepcopy(model).to(device)


@pytest.fixture(scope="module")
def tiny_llama_on(tiny_llama, device):
    """:func:`tiny_llama` on :func:`device`."""
    return on_device(tiny_llama, device)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark files beside the checkout; tests that need them skip when they are absent."""
    if not (SHARED_DATA / "SOURCES.md").is_file():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (only present beside a workplace checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def default_base():
    """SmolLM2-135M-Instruct, float32 on CPU (first load de-quantises the GGUF, ~20 s; later loads use the cache)."""
    from pudding.core.models.loading import load_base

    return load_base("default", dtype="float32", device="cpu", cache_dir=REPO / "checkpoints" / "base_models")


@pytest.fixture(scope="session")
def tokenizer(default_base):
    return default_base.tokenizer


def tiny_config(family: str, vocab_size: int, num_layers: int = 6):
    """A random-init config of ``family`` small enough for logic tests (a few ms per forward pass)."""
    from transformers import AutoConfig

    common = dict(vocab_size=vocab_size, tie_word_embeddings=False)
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=32, n_layer=num_layers, n_head=4, n_positions=512, **common)
    sizes = dict(hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=4, max_position_embeddings=512)
    if family == "opt":
        extra = dict(ffn_dim=64, word_embed_proj_dim=32)
    elif family == "gpt_neox":
        extra = dict(intermediate_size=64)
    else:  # the Llama-like families, with grouped-query attention
        extra = dict(num_key_value_heads=2, intermediate_size=64)
        if family in ("gemma", "gemma2"):
            extra["head_dim"] = 8
    return AutoConfig.for_model(family, **sizes, **extra, **common)


def tiny_model(family: str, vocab_size: int, num_layers: int = 6, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, num_layers))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    """A 6-block random-init Llama sharing the default tokenizer's vocabulary."""
    return tiny_model("llama", len(tokenizer))


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, tiny_llama, tokenizer) -> Path:
    """:func:`tiny_llama` and the default tokenizer saved as a model folder (what ``--base`` takes), once a session."""
    folder = tmp_path_factory.mktemp("tiny_llm")
    tiny_llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def interrupted_after(real, calls: int):
    """``real`` wrapped to raise KeyboardInterrupt (a kill mid-job) once it has run ``calls`` times."""
    done = []

    def wrapper(*args, **kwargs):
        if len(done) == calls:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------ tiny task data
PIQA = [
    ("How do I open a jar?", "Twist the lid counter-clockwise.", "Twist the lid with a hammer.", 0),
    ("How to cool soup fast?", "Put it in the oven.", "Stir it in a bowl over ice.", 1),
    ("How to dry wet shoes?", "Stuff them with newspaper.", "Fill them with water.", 0),
    ("How to keep bread fresh?", "Leave it in the sun.", "Store it in a sealed bag.", 1),
] * 3


def write_piqa(root: Path, rows=PIQA, labels=None) -> Path:
    """PIQA validation files of ``rows`` (goal, sol1, sol2, label) under ``root`` (``labels`` replaces theirs)."""
    (root / "piqa").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"goal": f"{g} ({i})", "sol1": a, "sol2": b}) for i, (g, a, b, _) in enumerate(rows)]
    (root / "piqa" / "valid.jsonl").write_text("\n".join(lines) + "\n")
    labels = [label for *_, label in rows] if labels is None else labels
    (root / "piqa" / "valid-labels.lst").write_text("".join(f"{label}\n" for label in labels))
    return root


# ------------------------------------------------------------------------ tiny routers (router tests)
WORDS = ["the", "a", "cat", "dog", "sun", "rain", "tree", "river", "stone", "light", "quick", "slow", "red", "blue"]
SETS = [[1, 4], [2, 3], [0, 5], [3, 4]]
NAMES = ["arc_easy/ppl", "boolq/ppl", "piqa/ppl", "arc_easy/acc"]


def tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT with the default router's tokenizer (its vocabulary), saved to ``folder``."""
    from support.tiny import save_tiny_encoder

    return save_tiny_encoder(folder)


def tiny_dataset(
    path: Path, n: int = 48, sha: str = "c" * 64, sets=SETS, seed: int = 0, names=None, all_choices: bool = False
) -> Path:
    """``n`` invented boolq/piqa prompts with noisy scores over ``sets`` (named ``names``, default :data:`NAMES`),
    saved as a router dataset at ``path``; ``all_choices`` adds invented all-choice columns (posteriors of two
    choices and the correctness that goes with them)."""
    from pudding.routerdata import save_dataset
    from pudding.routerdata.dataset import make_dataset

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
        if all_choices:  # two choices: correct exactly where the gold answer is the likelier one
            for name in ("posterior", "posterior_norm"):
                values = [float(x) for x in -np.log1p(np.exp(noise.normal(0, 1, len(sets) + 1)))]
                metric = name.replace("posterior", "correct")
                for column, kept in ((name, values[:-1]), (f"dense_{name}", values[-1])):
                    cols.setdefault(column, []).append(kept)
                for column, kept in ((metric, values[:-1]), (f"dense_{metric}", [values[-1]])):
                    flags = [v > -np.log(2) for v in kept]
                    cols.setdefault(column, []).append(flags if column == metric else flags[0])
    meta = {
        "candidates_sha256": sha,
        "candidates_file": "/nonexistent/candidates.yaml",
        "candidates_base_model": "tiny-llm",
        "base_model": "tiny-llm",
        "num_blocks": 6,
        "num_candidates": len(sets),
        "omission_sets": sets,
        "candidate_names": list(names) if names is not None else NAMES[: len(sets)],
        **({"all_choices": True} if all_choices else {}),
    }
    return save_dataset(make_dataset(cols, len(sets)), meta, path)


def module_with_data(setup: dict, data: dict | None = None, **kwargs) -> tuple[RouterModule, RouterDataModule]:
    """A RouterModule set up on ``setup``'s tiny dataset as ``trainer.fit`` would (K, names, best static known);
    ``kwargs`` go to the module, ``data`` to the RouterDataModule (e.g. ``dense_choice``, ``val_fraction``)."""
    from lightning.pytorch import Trainer

    from pudding.router.data import RouterDataModule
    from pudding.router.module import RouterModule

    module = RouterModule(encoder=str(setup["encoder"]), max_length=64, **kwargs)
    datamodule = RouterDataModule(
        datasets=str(setup["dataset"]), router=str(setup["encoder"]), max_length=64, batch_size=8, **(data or {})
    )
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=1)
    trainer.strategy.connect(module)
    trainer.datamodule = datamodule  # what trainer.fit does before setup
    module.trainer = trainer
    datamodule.trainer = trainer
    module.setup("fit")
    return module, datamodule


def draw_head(module: RouterModule, seed: int, bias: list[float]) -> None:
    """Give the router's head random weights (seeded) and ``bias``: predictions that differ between prompts and
    choices, with no choice always ahead."""
    torch.manual_seed(seed)
    with torch.no_grad():
        module.router.head.weight.normal_(0.0, 3.0)
        module.router.head.bias.copy_(torch.tensor(bias))


def routed_accuracy(model, items) -> float:
    """Accuracy of a :class:`pudding.routed.model.PuddingModel` on ``items``, the reference way: route each item's
    prompt, score its requests with the chosen set, judge."""
    from pudding.core.accuracy import judge, split_scores

    choices = model.router.route_texts([item.router_text for item in items])
    right = []
    for item, choice in zip(items, choices, strict=True):
        scores = model.scorer.score(list(item.requests), omit=model.omission_sets[choice])
        result = judge([item], split_scores([item], scores))[0]
        right.append(result.pred == result.gold)
    return sum(right) / len(right)
