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


def save_tiny_encoder(folder: str | Path, seed: int = 0, tokenizer=None) -> Path:
    """A 2-layer, 32-wide random BERT with ``tokenizer`` (None: the default router's, its vocabulary), saved to
    ``folder``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pudding.router.data import resolve_router

    if tokenizer is None:
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


# ------------------------------------------------------------------------ self-made tokenizers (no model package)
def save_tiny_tokenizer(folder: str | Path, texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (GPT-2 style: no BOS added, ``<|endoftext|>`` as BOS/EOS) trained on ``texts``,
    saved to ``folder`` and returned: a base model's tokenizer without the default model's package, and a vocabulary
    small enough that a tiny model's embeddings stay a few hundred kB."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    end = "<|endoftext|>"
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # every byte: any text encodes, nothing is unknown
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[end], initial_alphabet=alphabet, show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=end, eos_token=end, unk_token=end, model_max_length=2048
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def save_tiny_bert_tokenizer(folder: str | Path, texts: list[str], vocab_size: int = 512):
    """A lower-casing WordPiece tokenizer (BERT's special tokens, ``[CLS] … [SEP]``) trained on ``texts``, saved to
    ``folder`` and returned: a router encoder's tokenizer without the default router's package."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    )
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


# ------------------------------------------------------------------------ tiny task files
WORDS = ["the", "a", "cat", "dog", "sun", "rain", "tree", "river", "stone", "light", "quick", "slow", "red", "blue"]


def sentence(rng, lo: int, hi: int) -> str:
    """``lo`` to ``hi`` words of :data:`WORDS`, drawn with ``rng`` (a ``random.Random``)."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_tiny_tasks(root: str | Path, n: int = 24, seed: int = 0, tasks=("arc_easy", "boolq")) -> Path:
    """Invented benchmark files in the ``../shared/data`` layout, read by the real task readers: ARC-Easy with train
    and test files (``n`` each; router data = train), BoolQ with validation only (``2n``; split by hash) and, when
    ``tasks`` names it, PIQA's validation files (``2n``; what lm-eval's own ``piqa`` task reads through
    :mod:`support.lmeval_bridge`; drawn with its own seed, so the other tasks' files do not change with it).
    Seeded."""
    import json
    import random

    root = Path(root)
    rng = random.Random(seed)
    if "arc_easy" in tasks:
        (root / "arc_easy").mkdir(parents=True)
        for part in ("Train", "Test"):
            with open(root / "arc_easy" / f"ARC-Easy-{part}.jsonl", "w") as fh:
                for i in range(n):
                    choices = [{"text": sentence(rng, 1, 5), "label": label} for label in "ABCD"]
                    question = {"stem": sentence(rng, 3, 20) + "?", "choices": choices}
                    record = {"id": f"{part}{i}", "question": question, "answerKey": rng.choice("ABCD")}
                    fh.write(json.dumps(record) + "\n")
    if "boolq" in tasks:
        (root / "boolq").mkdir(parents=True)
        with open(root / "boolq" / "dev.jsonl", "w") as fh:
            for _ in range(2 * n):
                record = {"question": sentence(rng, 4, 8), "title": sentence(rng, 1, 3), "answer": rng.random() < 0.5}
                fh.write(json.dumps({**record, "passage": sentence(rng, 5, 30)}) + "\n")
    if "piqa" in tasks:
        rng = random.Random(seed + 2)
        (root / "piqa").mkdir(parents=True)
        goals = [
            {"goal": f"How to {sentence(rng, 2, 8)}?", "sol1": sentence(rng, 2, 9), "sol2": sentence(rng, 2, 9)}
            for _ in range(2 * n)
        ]
        (root / "piqa" / "valid.jsonl").write_text("".join(json.dumps(g) + "\n" for g in goals))
        (root / "piqa" / "valid-labels.lst").write_text("".join(f"{rng.randint(0, 1)}\n" for _ in goals))
    return root
