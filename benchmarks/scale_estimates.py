"""What each stage would cost for Llama-3.1-8B on one GPU and on eight: ESTIMATES from counted work, not timings.

    python benchmarks/scale_estimates.py --data_dir ../shared/data --output benchmarks/results/scale_estimates.json

Counted (on the benchmark files, with the defaults of configs/*.yaml): the items each stage reads and the positions
the engine runs, tokenised by the default model's tokenizer (SmolLM2's; the target model's own tokenizer changes
them by its efficiency on English text) and packed as the engine packs them (``Scorer.prepare`` at ``batch_tokens``
1024: padded positions, and scored positions where the LM head runs), chunked as each stage chunks its items.

Estimated from those counts, for a target model shape (default: Llama-3.1-8B, 32 blocks, d 4096, FFN 14336, 8 KV
heads, 128,256 tokens, untied head): position × block evaluations per stage under the engine's own rules (the search's
trial shortcut along random greedy paths, prefix sharing over random candidate sets), FLOPs (2 × block parameters per
position and block, 2 × d × vocabulary per scored position; attention scores, ~1 % at these lengths, are left out),
device memory, and wall time at an *assumed* sustained throughput, for one GPU and for eight (how each stage splits
over GPUs is in docs/scale.md). The search's counting is checked against the measured default search on SmolLM2.
docs/scale.md reads the JSON this writes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

TASKS = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "piqa", "winogrande")
LOSSES = ("likelihood", "margin")
NUM_OMIT, NUM_SAMPLES, KEEP_FIRST, KEEP_LAST = 7, 64, 1, 1  # configs/candidates.yaml
ITEMS_PER_BATCH = 64  # configs/dataset.yaml
CHUNK_ITEMS = 128  # pudding.core.outcomes.DEFAULT_CHUNK_ITEMS
SLEB_SAMPLES = 16  # pudding compare's default
ZEROSHOT_LIMIT = 200  # configs/router.yaml's zero-shot callback
EPOCHS, VAL_FRACTION = 3, 0.1  # configs/router.yaml
BENCH = {"lengths": (64, 128, 512), "repeats": 10, "warmup": 2, "new_tokens": 64}  # pudding bench's defaults
SMOLLM2_SEARCH_MEASURED = 131.4e6
"""Position × block evaluations of the default search on SmolLM2, counted by the search itself (docs/search.md)."""


@dataclass(frozen=True)
class Shape:
    """A decoder's shape: enough for parameters, FLOPs and memory."""

    name: str
    blocks: int
    d: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False

    @property
    def block_params(self) -> int:
        head_dim = self.d // self.heads
        attention = 2 * self.d * self.d + 2 * self.d * self.kv_heads * head_dim
        return attention + 3 * self.d * self.ffn + 2 * self.d

    @property
    def params(self) -> int:
        return self.blocks * self.block_params + self.vocab * self.d * (1 if self.tied else 2) + self.d


LLAMA_31_8B = Shape("Llama-3.1-8B", blocks=32, d=4096, ffn=14336, heads=32, kv_heads=8, vocab=128256)
MINILM_L6 = {"params": 22.7e6, "non_embedding_params": 10.6e6}


@dataclass(frozen=True)
class GPU:
    """The assumed hardware: sustained bf16 matrix throughput and memory bandwidth."""

    name: str
    tflops: float
    bandwidth_tb_s: float
    memory_gb: float


RATES = (
    GPU("H100/H200 at 300 TFLOP/s (30 % of the 989 bf16 dense peak)", 300.0, 3.35, 80),
    GPU("H100/H200 at 100 TFLOP/s (10 %: small batches, eager PyTorch)", 100.0, 3.35, 80),
)
"""Assumed sustained bf16 throughputs: the same compute on both GPUs; decoding (bench only) at H100's bandwidth."""


# ---------------------------------------------------------------------------------------------- counting
def make_scorer(tokenizer, batch_tokens: int = 1024):
    """A Scorer whose model only sizes things (packing reads the tokenizer, never the weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from pudding.core.scoring import Scorer

    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=16,
        max_position_embeddings=8192,
    )
    torch.manual_seed(0)
    return Scorer(AutoModelForCausalLM.from_config(config), tokenizer, batch_tokens=batch_tokens)


def work(scorer, requests: Sequence[tuple[str, str]]) -> tuple[int, int]:
    """(padded positions, scored positions) of one pass over ``requests``, packed as the engine packs them."""
    from pudding.search.greedy import Work

    if not requests:
        return 0, 0
    w = Work.of(scorer.prepare(list(requests)))
    return w.tokens, w.scored


def summed(parts: Sequence[tuple[int, int]]) -> dict[str, int]:
    """Positions and scored positions of several passes, added up."""
    return {"positions": sum(p for p, _ in parts), "scored": sum(s for _, s in parts)}


def count(data_dir: str, tokenizer) -> dict:
    """Items and packed positions per task and stage, with the default configs."""
    from pudding.core.tasks import DataOptions, eval_items, router_items
    from pudding.router.self_features import PROBE
    from pudding.routerdata.units import gold_request, make_chunks
    from pudding.search.objectives import gold_texts, requests_for, sample_indices

    scorer = make_scorer(tokenizer)
    options = DataOptions(data_dir=data_dir)
    out: dict = {}
    for task in TASKS:
        router, _ = router_items(task, options)
        evaluation, _ = eval_items(task, options)
        picked = [router[i] for i in sample_indices(len(router), NUM_SAMPLES, 0, task)]
        search = {loss: work(scorer, requests_for(loss, task, picked).requests) for loss in LOSSES}
        chunks = make_chunks({task: router}, ITEMS_PER_BATCH)
        data = [work(scorer, [gold_request(router[i]) for i in c.indices]) for c in chunks]

        def eval_chunks(items):
            return [
                work(scorer, [r for item in items[lo : lo + CHUNK_ITEMS] for r in item.requests])
                for lo in range(0, len(items), CHUNK_ITEMS)
            ]

        sleb = [router[i] for i in sample_indices(len(router), SLEB_SAMPLES, 0, f"sleb:{task}")]
        out[task] = {
            "router_items": len(router),
            "eval_items": len(evaluation),
            "search": {loss: {"positions": p, "scored": s} for loss, (p, s) in search.items()},
            "router_data": summed(data),
            "eval": summed(eval_chunks(evaluation)),
            "eval_200": summed(eval_chunks(evaluation[:ZEROSHOT_LIMIT])),
            "sleb_texts": [("", t) for t in gold_texts(sleb)],
            "self_features_positions": work(scorer, [(item.router_text, PROBE) for item in router])[0],
            "router_text_chars": sum(len(item.router_text) for item in router),
        }
    texts = [r for task in TASKS for r in out[task].pop("sleb_texts")]
    sleb_positions, sleb_scored = work(scorer, texts)
    out["sleb"] = {"texts": len(texts), "positions": sleb_positions, "scored": sleb_scored}
    return out


def router_tokens(data_dir: str) -> int:
    """Router-encoder tokens of every router text (the MiniLM tokenizer, cut at max_length 256)."""
    from transformers import AutoTokenizer

    from pudding.core.tasks import DataOptions, router_items
    from pudding.router.data import resolve_router

    tokenizer = AutoTokenizer.from_pretrained(resolve_router("default"))
    options = DataOptions(data_dir=data_dir)
    texts = [item.router_text for task in TASKS for item in router_items(task, options)[0]]
    return sum(min(256, len(ids)) for ids in tokenizer(texts)["input_ids"])


# ---------------------------------------------------------------------------------------------- cost models
def search_run_blocks(positions: int, order: Sequence[int], blocks: int) -> int:
    """Position × block evaluations of one greedy run along ``order``, by the search's own accounting
    (``FastEvaluator``): one dense pass recording every block's input, then each trial "remove b" runs only the kept
    blocks above b from b's recorded input (the last kept block: the reduced list from the embeddings)."""
    removable = set(range(KEEP_FIRST, blocks - KEEP_LAST))
    total, omit = positions * blocks, set()
    for block in order:
        kept = [k for k in range(blocks) if k not in omit]
        for b in sorted(removable - omit):
            above = [k for k in kept if k > b]
            total += positions * (len(above) if above else len(kept) - 1)
        omit.add(block)
    return total


def random_orders(blocks: int, draws: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    pool = list(range(KEEP_FIRST, blocks - KEEP_LAST))
    return [rng.sample(pool, NUM_OMIT) for _ in range(draws)]


def paths_blocks(positions: int, sets: Sequence[Sequence[int]], blocks: int) -> tuple[int, int]:
    """Position × block evaluations of scoring ``positions`` under ``sets`` (plus dense), with and without prefix
    sharing (every chunk runs the same plan)."""
    from pudding.core.models.omission import kept_blocks
    from pudding.core.prefix import plan_runs

    paths = [tuple(kept_blocks(s, blocks)) for s in sets] + [tuple(range(blocks))]
    shared = sum(len(run.path) - run.start for run in plan_runs(paths))
    alone = sum(len(p) for p in set(paths))
    return positions * shared, positions * alone


def estimate(counts: dict, shape: Shape, gpus: Sequence[GPU], draws: int = 64) -> dict:
    """Per stage: position × block evaluations, scored positions, FLOPs, memory and time on 1 and 8 GPUs."""
    block_flops, head_flops = 2 * shape.block_params, 2 * shape.d * shape.vocab
    orders = random_orders(shape.blocks, draws)
    per_run_blocks: dict[str, float] = {}
    per_run_flops: dict[str, float] = {}
    for task in TASKS:
        for loss in LOSSES:
            c = counts[task]["search"][loss]
            mean_blocks = statistics.mean(search_run_blocks(c["positions"], o, shape.blocks) for o in orders)
            trials = 1 + sum(shape.blocks - KEEP_FIRST - KEEP_LAST - s for s in range(NUM_OMIT))
            per_run_blocks[f"{task}/{loss}"] = mean_blocks
            per_run_flops[f"{task}/{loss}"] = mean_blocks * block_flops + trials * c["scored"] * head_flops
    candidate_sets = [sorted(o) for o in random_orders(shape.blocks, 12, seed=1)]
    sleb_set = sorted(random_orders(shape.blocks, 1, seed=2)[0])

    def scoring(key: str, sets: Sequence[Sequence[int]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for task in TASKS:
            c = counts[task][key]
            shared, _ = paths_blocks(c["positions"], sets, shape.blocks)
            out[task] = shared * block_flops + (len(sets) + 1) * c["scored"] * head_flops
        return out

    def sleb_set_alone(key: str) -> float:
        """SLEB's one set scored on its own (a run after the per-task ones): its kept blocks, its LM head."""
        kept = shape.blocks - len(sleb_set)
        return sum(
            counts[t][key]["positions"] * kept * block_flops + counts[t][key]["scored"] * head_flops for t in TASKS
        )

    sleb_blocks = statistics.mean(search_run_blocks(counts["sleb"]["positions"], o, shape.blocks) for o in orders)
    sleb_trials = 1 + sum(shape.blocks - KEEP_FIRST - KEEP_LAST - s for s in range(NUM_OMIT))
    sleb = sleb_blocks * block_flops + sleb_trials * counts["sleb"]["scored"] * head_flops
    zeroshot = scoring("eval_200", candidate_sets)
    minilm = 6 * MINILM_L6["non_embedding_params"] * counts["router_tokens"] * EPOCHS
    self_features = sum(counts[t]["self_features_positions"] for t in TASKS) * KEEP_FIRST * block_flops
    data = scoring("router_data", candidate_sets)
    # each stage: the FLOPs by unit of work, and those on the longest path with eight GPUs (how it splits)
    stages: dict[str, dict] = {
        "candidates": {"units": per_run_flops, "eight": makespan(per_run_flops, 8), "split": "(task, loss) runs"},
        "router_data": {"units": data, "eight": sum(data.values()) / 8, "split": "DDP over chunks"},
        "router_fit_text": {"units": {"zero-shot scoring": sum(zeroshot.values()), "MiniLM": minilm}},
        "router_fit_self": {"units": {"zero-shot scoring": sum(zeroshot.values()), "features": self_features}},
    }
    for name, key in (("eval_full", "eval"), ("eval_200", "eval_200")):
        per_task = scoring(key, candidate_sets)
        stages[name] = {
            "units": {**scoring(key, [*candidate_sets, sleb_set]), "SLEB search": sleb},
            "eight": makespan(per_task, 8) + sleb + sleb_set_alone(key),
            "split": "one process per task without SLEB, then SLEB on one GPU",
        }
    prefill = sum(n * shape.blocks * block_flops + head_flops for n in BENCH["lengths"])
    runs = BENCH["repeats"] + BENCH["warmup"]
    bench_flops = prefill * runs * (1 + 2 * (shape.blocks - NUM_OMIT) / shape.blocks)  # dense, pruned, routed
    decode_tokens = BENCH["new_tokens"] * len(BENCH["lengths"]) * 2 * (max(1, BENCH["repeats"] // 3) + 1)
    stages["bench"] = {"units": {"pre-fill": bench_flops}, "decode_tokens": decode_tokens}

    weights_gb = shape.params * 2 / 1e9
    state_gb = max(c["search"][loss]["positions"] for c in (counts[t] for t in TASKS) for loss in LOSSES)
    state_gb = state_gb * shape.blocks * shape.d * 2 / 1e9  # every kept block's input, bf16, for one run
    report = {
        "shape": asdict(shape) | {"params": shape.params, "block_params": shape.block_params},
        "memory_gb": {"weights_bf16": round(weights_gb, 2), "search_hidden_states_max": round(state_gb, 2)},
        "gpus": [asdict(g) for g in gpus],
        "stages": {},
    }
    for name, stage in stages.items():
        units = stage["units"]
        total = sum(units.values())
        row = {
            "pflop": round(total / 1e15, 3),
            "split": stage.get("split", "one GPU"),
            "by_unit_pflop": {k: round(v / 1e15, 4) for k, v in units.items()},
        }
        for gpu in gpus:
            rate = gpu.tflops * 1e12
            decode = stage.get("decode_tokens", 0) * weights_gb / (gpu.bandwidth_tb_s * 1e3)  # bandwidth-bound
            one, eight = total / rate + decode, stage.get("eight", total) / rate + decode
            row[gpu.name] = {"one_gpu_min": round(one / 60, 2), "eight_gpus_min": round(eight / 60, 2)}
        report["stages"][name] = row
    pipeline = ("candidates", "router_data", "router_fit_text", "eval_full", "bench")
    report["pipeline_min"] = {
        gpu.name: {
            which: round(sum(report["stages"][s][gpu.name][f"{which}_min"] for s in pipeline), 1)
            for which in ("one_gpu", "eight_gpus")
        }
        for gpu in gpus
    }
    report["pipeline_stages"] = list(pipeline)
    report["search_position_blocks"] = {k: round(v) for k, v in per_run_blocks.items()}
    return report


def makespan(units: dict[str, float], bins: int) -> float:
    """Largest load when ``units`` (independent jobs) go to ``bins`` GPUs, longest first to the least loaded."""
    loads = [0.0] * bins
    for value in sorted(units.values(), reverse=True):
        loads[loads.index(min(loads))] += value
    return max(loads)


def check_against_smollm2(counts: dict) -> dict:
    """The search's counting replayed along the released runs' removal orders on SmolLM2 (30 blocks), against the
    count the search itself made on the bfloat16 run (docs/search.md; 5 of 12 runs took other paths there)."""
    import yaml

    release = yaml.safe_load((REPO / "checkpoints" / "release" / "candidates.yaml").read_text())
    total = 0
    for run in release["search"]["runs"]:
        total += search_run_blocks(counts[run["task"]]["search"][run["loss"]]["positions"], run["omit"], 30)
    return {"replayed": total, "measured": SMOLLM2_SEARCH_MEASURED, "ratio": round(total / SMOLLM2_SEARCH_MEASURED, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "scale_estimates.json"))
    parser.add_argument("--counts", default=None, help="take the counts from this earlier output (no counting)")
    opts = parser.parse_args(argv)
    from pudding.core.io import atomic_write_json

    if opts.counts:
        counts = json.loads(Path(opts.counts).read_text())["counts"]
    else:
        from transformers import AutoTokenizer

        from pudding.core.models.loading import resolve_source

        tokenizer = AutoTokenizer.from_pretrained(resolve_source("default", REPO / "checkpoints" / "base_models"))
        counts = count(opts.data_dir, tokenizer)
        counts["router_tokens"] = router_tokens(opts.data_dir)
    report = {
        "note": "ESTIMATES from counted work and assumed throughput, not measurements (see docs/scale.md)",
        "counts": counts,
        "check_smollm2_search": check_against_smollm2(counts),
        **estimate(counts, LLAMA_31_8B, RATES),
    }
    atomic_write_json(Path(opts.output), report)
    print(json.dumps({k: v for k, v in report.items() if k != "counts"}, indent=1))
    return report


if __name__ == "__main__":
    main()
