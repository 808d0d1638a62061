"""Honest timing of dense vs pruned inference: pre-fill latency, generation speed and peak memory.

What is timed is what a user waits for. Pre-fill runs the prompt through the model and computes the logits of the
last position only, as ``generate`` does before the first new token; generation produces a fixed number of new tokens
greedily with the KV cache. A routed figure includes the router's own time (its tokenizer and encoder on the prompt),
reported separately as well. Each figure is the median over ``repeats`` runs after ``warmup`` runs, with the spread
(interquartile range, min, max); on CUDA every timed region ends with a synchronisation. The configurations compared
at one prompt length run in turns (dense, pruned, router, routed, then again), so a machine whose speed drifts
during the run slows all of them alike instead of whichever happened to be measured last.

A ``self`` router (it reads the base LLM's first blocks, :mod:`pudding.router.self_features`) is timed as it runs:
the routed pre-fill runs the first blocks once, pools and applies the head, then continues with the rest of the
chosen blocks from that hidden state; its router time is the pooling and head only (the first blocks count as the
LLM's pre-fill, where they run anyway). Its routed generation is ``PuddingModel.generate``'s: that same pass fills
the KV cache (:func:`pudding.routed.self_prefill.routed_prefill`) and generation continues from it.

Peak memory, per configuration (``peak_memory_mb`` of each prompt length: dense, pruned, router and routed pre-fill,
dense and routed generation): on CUDA the allocator's peak (``torch.cuda.max_memory_allocated``) over that
configuration's timed runs, its counter reset before each run, so it includes the weights and whatever else is
allocated at the time. On a CPU these are null: the process's peak resident set (``ru_maxrss``) only grows, so it
cannot tell configurations apart; it is reported once for the whole run (the report's ``peak_memory_mb``).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pudding.core.models.adapters import body, get_layers
from pudding.core.models.omission import omit_blocks, use_blocks
from pudding.core.plots import pyplot, save_figure


@dataclass
class Timing:
    """Seconds of repeated runs of one measured thing, summarised, and its peak device memory (None off CUDA)."""

    seconds: list[float] = field(default_factory=list)
    peak_mb: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.seconds)
        if len(ordered) >= 4:
            q1, _, q3 = statistics.quantiles(ordered, n=4)
        else:
            q1, q3 = ordered[0], ordered[-1]
        return {
            "median_ms": 1000 * self.median,
            "iqr_ms": 1000 * (q3 - q1),
            "min_ms": 1000 * ordered[0],
            "max_ms": 1000 * ordered[-1],
            "runs": len(ordered),
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MemoryProbe:
    """Peak device memory of one run: on CUDA the allocator's peak since :meth:`reset`; None on other devices."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "cuda max_memory_allocated per configuration (reset before each run)"
        return "none per configuration off CUDA"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return None


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int,
    probe: MemoryProbe | None = None,
) -> dict[str, Timing]:
    """Time several things in turns: ``warmup`` untimed runs of each, then ``repeats`` rounds that run each once.

    Interleaving makes a slow drift of the machine (clock, a neighbour's load) touch every configuration alike, so
    their ratios hold even where absolute times wander; each round starts one further along the list, so no
    configuration always runs right after the same other one. Synchronised on CUDA. ``probe`` (default: the
    device's) is reset before each timed run and read after it, outside the timed region; each configuration keeps
    its largest peak.
    """
    probe = probe or MemoryProbe(device)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got repeats={repeats}, warmup={warmup}")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    _sync(device)
    timings = {name: Timing() for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(device)
            probe.reset()
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            timings[name].seconds.append(time.perf_counter() - start)
            peak = probe.peak_mb()
            if peak is not None:
                timings[name].peak_mb = max(peak, timings[name].peak_mb or 0.0)
    return timings


@torch.inference_mode()
def prefill(model: torch.nn.Module, input_ids: torch.Tensor, omit: Sequence[int] = ()) -> torch.Tensor:
    """Logits of the last position of ``input_ids`` [1, L], with ``omit`` skipped (what generation's pre-fill does)."""
    with omit_blocks(model, omit):
        return model(input_ids=input_ids, use_cache=False, logits_to_keep=1).logits


@torch.inference_mode()
def generate(
    model: torch.nn.Module, input_ids: torch.Tensor, new_tokens: int, omit: Sequence[int] = (), cache=None
) -> torch.Tensor:
    """Exactly ``new_tokens`` greedy tokens after ``input_ids``, with ``omit`` skipped for the whole generation.

    ``cache``: a KV cache already holding all but the last prompt token (a ``self`` router's pre-fill).
    """
    extra = {} if cache is None else {"cache": cache}
    with omit_blocks(model, omit):
        return model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            **extra,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            disable_compile=True,  # as PuddingModel.generate: no compiled forward, recompiled per block set
            pad_token_id=model.config.eos_token_id if model.config.pad_token_id is None else model.config.pad_token_id,
        )


@torch.inference_mode()
def first_blocks(model: torch.nn.Module, input_ids: torch.Tensor, keep_first: int) -> torch.Tensor:
    """Hidden states entering block ``keep_first`` [1, L, D]: the first blocks run once, no final norm or LM head."""
    from pudding.core.models.hooks import output_recorder

    store: list[torch.Tensor] = []
    hook = get_layers(model)[keep_first - 1].register_forward_hook(output_recorder(store))
    try:
        with use_blocks(model, list(range(keep_first))):
            body(model)(input_ids=input_ids, use_cache=False)
    finally:
        hook.remove()
    return store[0]


def route_hidden(router, hidden: torch.Tensor) -> int:
    """A ``self`` router's choice from first-blocks hidden states [1, L, D] (pooling and head only; under the
    router's budget, if it has one)."""
    from pudding.router.self_features import pool_rows

    return int(router.choose(router.predict_features(pool_rows(hidden, [hidden.shape[1]])))[0])


@torch.inference_mode()
def self_routed_prefill(
    model: torch.nn.Module, input_ids: torch.Tensor, router, omission_sets: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Routed pre-fill with a ``self`` router: first blocks once, route, the chosen set's other blocks from there."""
    from pudding.core.models.hooks import input_injector

    keep_first = router.encoder.keep_first
    hidden = first_blocks(model, input_ids, keep_first)
    omit = set(omission_sets[route_hidden(router, hidden)])
    rest = [b for b in range(keep_first, len(get_layers(model))) if b not in omit]
    hook = get_layers(model)[rest[0]].register_forward_pre_hook(
        input_injector([hidden], {"batch": 0}), with_kwargs=True
    )
    try:
        with use_blocks(model, rest):
            return model(input_ids=input_ids, use_cache=False, logits_to_keep=1).logits
    finally:
        hook.remove()


def peak_memory_mb(device: torch.device, rows: Sequence[dict] = ()) -> float | None:
    """The run's peak memory: on CUDA the largest per-configuration peak of ``rows``; elsewhere the process's peak
    resident set (Linux reports KiB)."""
    if device.type == "cuda":
        peaks = [mb for row in rows for mb in row.get("peak_memory_mb", {}).values() if mb is not None]
        return max(peaks, default=None)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


FILLER = (
    "The committee met on a cold morning to review the plans for the new library. Several members asked how the "
    "budget would cover the roof, the heating and the long list of books that readers had requested over the "
    "years. After a short break they agreed to ask the town for a second estimate and to meet again next month. "
)
"""Prompt text for timing (not benchmark text): repeated until a prompt has the wanted number of tokens."""


def make_prompt(tokenizer, num_tokens: int) -> tuple[torch.Tensor, str]:
    """Token ids [1, num_tokens] of a plain English prompt, and its text (what the router reads)."""
    if num_tokens < 1:
        raise ValueError(f"prompt length must be positive, got {num_tokens}")
    repeats, ids = 1, tokenizer.encode(FILLER)
    while len(ids) < num_tokens:
        repeats *= 2
        ids = tokenizer.encode(FILLER * repeats)
    ids = ids[:num_tokens]
    return torch.tensor([ids], dtype=torch.long), tokenizer.decode(ids, skip_special_tokens=True)


def bench_length(
    model: torch.nn.Module,
    tokenizer,
    router,
    omission_sets: Sequence[Sequence[int]],
    num_tokens: int,
    new_tokens: int,
    repeats: int,
    warmup: int,
    probe: MemoryProbe | None = None,
) -> dict:
    """Dense vs routed at one prompt length: pre-fill, router, routed pre-fill with the router included, generation.

    ``router`` has ``route_texts(texts) -> list[int]`` (a trained bundle's router); the routed figures use the
    candidate it picks for this prompt. A ``self`` router is timed as described in the module docstring. The row's
    ``peak_memory_mb`` holds each configuration's peak device memory (``probe``, default the device's: None off
    CUDA).
    """
    device = next(model.parameters()).device
    input_ids, text = make_prompt(tokenizer, num_tokens)
    input_ids = input_ids.to(device)
    is_self = bool(getattr(router, "is_self", False))
    if is_self:
        hidden = first_blocks(model, input_ids, router.encoder.keep_first)
        choice = route_hidden(router, hidden)

        def route_only() -> object:
            return route_hidden(router, hidden)

        def routed_prefill() -> None:
            self_routed_prefill(model, input_ids, router, omission_sets)

        def routed_generation() -> object:
            from pudding.routed.self_prefill import routed_prefill

            mask = torch.ones_like(input_ids)
            (part,) = routed_prefill(
                model, input_ids, mask, router.encoder.keep_first, omission_sets, lambda h: [route_hidden(router, h)]
            )
            return generate(model, input_ids, new_tokens, omission_sets[part.choice], cache=part.cache)

    else:
        (choice,) = router.route_texts([text])

        def route_only() -> object:
            return router.route_texts([text])

        def routed_prefill() -> None:
            (pick,) = router.route_texts([text])
            prefill(model, input_ids, omission_sets[pick])

        def routed_generation() -> object:
            (pick,) = router.route_texts([text])
            return generate(model, input_ids, new_tokens, omission_sets[pick])

    omit = list(omission_sets[choice])

    timed = time_interleaved(
        {
            "dense": lambda: prefill(model, input_ids),
            "pruned": lambda: prefill(model, input_ids, omit),
            "router": route_only,
            "routed": routed_prefill,
        },
        device,
        repeats,
        warmup,
        probe,
    )
    dense, pruned, routing, routed = timed["dense"], timed["pruned"], timed["router"], timed["routed"]
    row = {
        "tokens": num_tokens,
        "router_kind": "self" if is_self else "text",
        "choice": int(choice),
        "omit": omit,
        "dense_prefill": dense.summary(),
        "pruned_prefill": pruned.summary(),
        "router": routing.summary(),
        "routed_prefill": routed.summary(),
        "ratio_routed_vs_dense": routed.median / dense.median,
        "ratio_pruned_vs_dense": pruned.median / dense.median,
        "peak_memory_mb": {
            "dense_prefill": dense.peak_mb,
            "pruned_prefill": pruned.peak_mb,
            "router": routing.peak_mb,
            "routed_prefill": routed.peak_mb,
        },
    }
    if new_tokens > 0:
        gen_repeats = max(1, repeats // 3)
        gen = time_interleaved(
            {"dense": lambda: generate(model, input_ids, new_tokens), "routed": routed_generation},
            device,
            gen_repeats,
            1,
            probe,
        )
        dense_gen, routed_gen = gen["dense"], gen["routed"]
        row["peak_memory_mb"] |= {"dense_generate": dense_gen.peak_mb, "routed_generate": routed_gen.peak_mb}
        row["dense_generate_tokens_per_s"] = new_tokens / dense_gen.median
        row["routed_generate_tokens_per_s"] = new_tokens / routed_gen.median
        row["ratio_generate_speed"] = dense_gen.median / routed_gen.median
    return row


def plot_bench(report: dict, path: str | Path) -> Path:
    """Bar chart per prompt length: dense pre-fill vs routed (pruned LLM part and router part stacked)."""
    plt = pyplot()
    rows = report["lengths"]
    labels = [str(r["tokens"]) for r in rows]
    x = range(len(rows))
    dense = [r["dense_prefill"]["median_ms"] for r in rows]
    router = [r["router"]["median_ms"] for r in rows]
    llm = [r["routed_prefill"]["median_ms"] - r["router"]["median_ms"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([i - 0.2 for i in x], dense, width=0.4, label="dense")
    ax.bar([i + 0.2 for i in x], llm, width=0.4, label="routed: pruned LLM")
    ax.bar([i + 0.2 for i in x], router, width=0.4, bottom=llm, label="routed: router")
    for i, r in enumerate(rows):
        ax.text(
            i + 0.2, r["routed_prefill"]["median_ms"], f"{r['ratio_routed_vs_dense']:.2f}x", ha="center", va="bottom"
        )
    ax.set_xticks(list(x), labels)
    ax.set_xlabel("prompt tokens (batch 1)")
    ax.set_ylabel("pre-fill latency, median ms")
    info = report["machine"]
    where = info.get("gpu") or f"{info.get('cpu', '?')}, {'AMX' if info.get('amx_bf16') else 'no AMX'}"
    ax.set_title(f"{report['base_model']} ({report.get('dtype', '?')}) on {where}", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
