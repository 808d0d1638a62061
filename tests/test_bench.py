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


class FakeProbe:
    """Stands in for the CUDA allocator: each configuration's run sets the peak it reached."""

    kind = "fake"

    def __init__(self) -> None:
        self.current: float | None = None
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        self.current = 0.0

    def peak_mb(self) -> float | None:
        return self.current


def test_interleaved_timing_keeps_each_configurations_own_peak_memory():
    probe = FakeProbe()
    peaks = {"a": iter([5.0, 9.0, 7.0]), "b": iter([100.0, 50.0, 60.0])}

    def run(name: str):
        def fn() -> None:
            probe.current = next(peaks[name])

        return fn

    timed = time_interleaved({"a": run("a"), "b": run("b")}, torch.device("cpu"), 3, 0, probe)
    assert (timed["a"].peak_mb, timed["b"].peak_mb) == (9.0, 100.0)  # the largest of its own runs, not the run's
    assert probe.resets == 6  # before every timed run


def test_bench_row_reports_peak_memory_per_configuration(tiny_llama, tokenizer):
    """Off CUDA every configuration's peak is null (a CPU process's peak RSS only grows; the report gives it once);
    with a probe that reads memory each configuration gets its own number."""
    configs = {"dense_prefill", "pruned_prefill", "router", "routed_prefill", "dense_generate", "routed_generate"}
    row = bench_length(tiny_llama, tokenizer, FixedRouter(0), [(1,)], 8, new_tokens=2, repeats=1, warmup=0)
    assert row["peak_memory_mb"] == dict.fromkeys(configs)
    probe = FakeProbe()
    row = bench_length(tiny_llama, tokenizer, FixedRouter(0), [(1,)], 8, new_tokens=2, repeats=1, warmup=0, probe=probe)
    assert set(row["peak_memory_mb"]) == configs and all(v == 0.0 for v in row["peak_memory_mb"].values())


def test_report_peak_memory_on_cuda_is_the_largest_configurations():
    from pudding.cli.bench import format_row
    from pudding.routed.bench import peak_memory_mb

    rows = [
        {"peak_memory_mb": {"dense_prefill": 900.0, "routed_prefill": 700.0}},
        {"peak_memory_mb": {"dense_prefill": 1200.0, "routed_prefill": None}},
    ]
    assert peak_memory_mb(torch.device("cuda"), rows) == 1200.0
    assert peak_memory_mb(torch.device("cpu"), rows) > 0  # the process's peak RSS, whatever the rows say
    row = {
        "tokens": 64,
        "dense_prefill": {"median_ms": 2.0},
        "routed_prefill": {"median_ms": 1.0},
        "router": {"median_ms": 0.1},
        "omit": [1],
        "ratio_routed_vs_dense": 0.5,
        "peak_memory_mb": {"dense_prefill": 900.0, "routed_prefill": 700.0, "router": None},
    }
    assert format_row(row).endswith("; peak MB dense_prefill 900, routed_prefill 700")


def test_bench_command_reports_each_configurations_memory(tmp_path, tiny_llm_dir):
    """``pudding bench`` end to end on a CPU: every prompt length carries the six configurations' peaks (null here,
    said so in ``peak_memory_kind``), and the run's peak RSS once."""
    import json

    from conftest import module_with_data, tiny_dataset, tiny_encoder

    from pudding.cli.bench import BenchOptions, bench
    from pudding.router.bundle import export_bundle

    module, _ = module_with_data({"encoder": tiny_encoder(tmp_path / "bert"), "dataset": tiny_dataset(tmp_path / "d")})
    bundle = export_bundle(module, tmp_path / "bundle")
    out = tmp_path / "bench.json"
    opts = BenchOptions(
        bundle=str(bundle),
        base=str(tiny_llm_dir),
        output=str(out),
        lengths="8,16",
        new_tokens=2,
        repeats=1,
        warmup=0,
        dtype="float32",
        device="cpu",
    )
    bench(opts)
    report = json.loads(out.read_text())
    configs = {"dense_prefill", "pruned_prefill", "router", "routed_prefill", "dense_generate", "routed_generate"}
    assert [row["peak_memory_mb"] for row in report["lengths"]] == [dict.fromkeys(configs)] * 2
    assert report["peak_memory_mb"] > 0 and "per configuration: null" in report["peak_memory_kind"]
