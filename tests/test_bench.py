"""Benchmark helpers: what is timed computes what generation computes, with the routed blocks skipped."""

from __future__ import annotations

import time

import pytest
import torch

from pudding.core.models.omission import omit_blocks
from pudding.routed.bench import bench_length, generate, make_prompt, prefill, time_interleaved


class FixedRouter:
    """Stands in for a trained router: always picks ``choice``."""

    def __init__(self, choice: int) -> None:
        self.choice = choice
        self.calls = 0

    def route_texts(self, texts):
        self.calls += 1
        return [self.choice] * len(texts)


def test_prompt_has_exact_length(tokenizer):
    for n in (1, 64, 300):
        ids, text = make_prompt(tokenizer, n)
        assert ids.shape == (1, n) and len(text) > 0


def test_prefill_is_last_position_logits_of_the_pruned_model(tiny_llama_on, tokenizer, device):
    tiny_llama = tiny_llama_on
    ids = make_prompt(tokenizer, 20)[0].to(device)
    with torch.inference_mode():
        full = tiny_llama(input_ids=ids).logits[:, -1:]
        with omit_blocks(tiny_llama, (2, 3)):
            pruned = tiny_llama(input_ids=ids).logits[:, -1:]
    assert torch.allclose(prefill(tiny_llama, ids), full, atol=1e-5)
    assert torch.allclose(prefill(tiny_llama, ids, (2, 3)), pruned, atol=1e-5)
    assert not torch.allclose(full, pruned, atol=1e-3)


def test_generate_makes_exactly_the_new_tokens_and_skipping_changes_them(tiny_llama_on, tokenizer, device):
    tiny_llama = tiny_llama_on
    ids = make_prompt(tokenizer, 12)[0].to(device)
    dense = generate(tiny_llama, ids, 8)
    pruned = generate(tiny_llama, ids, 8, (1, 2, 3))
    assert dense.shape == pruned.shape == (1, 20)
    assert torch.equal(dense[:, :12], ids)
    assert not torch.equal(dense, pruned)


def test_bench_row_uses_the_routers_choice(tiny_llama_on, tokenizer):
    tiny_llama = tiny_llama_on
    router = FixedRouter(1)
    row = bench_length(tiny_llama, tokenizer, router, [(1,), (2, 3)], 16, new_tokens=4, repeats=2, warmup=0)
    assert row["choice"] == 1 and row["omit"] == [2, 3] and row["tokens"] == 16
    assert row["dense_prefill"]["runs"] == 2 and row["routed_prefill"]["median_ms"] > 0
    assert row["ratio_routed_vs_dense"] > 0 and row["routed_generate_tokens_per_s"] > 0
    assert router.calls >= 5  # routed figures include the router every time


def test_interleaved_timing_runs_each_configuration_in_turns_and_measures_each_alone():
    calls: list[str] = []

    def fn(name: str, seconds: float):
        def run() -> None:
            calls.append(name)
            time.sleep(seconds)

        return run

    timed = time_interleaved({"a": fn("a", 0.0), "b": fn("b", 0.02), "c": fn("c", 0.0)}, torch.device("cpu"), 3, 1)
    # warm-up: each once; then rounds a b c, b c a, c a b
    assert calls == ["a", "b", "c"] + ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [len(timed[k].seconds) for k in "abc"] == [3, 3, 3]
    assert timed["b"].median >= 0.02 > timed["a"].median
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved({"a": fn("a", 0.0)}, torch.device("cpu"), 0, 1)
