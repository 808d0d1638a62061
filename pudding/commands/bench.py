"""``pudding bench``: how much faster routed pruning is than the dense model, router included, on this machine.

    pudding bench --bundle checkpoints/router/bundle --lengths 64,128,512 --repeats 10

prints a table (pre-fill latency at batch 1, dense vs routed, router time on its own and included; generation
tokens/s; peak memory) and writes JSON plus a PNG plot. What is timed and how: :mod:`pudding.bench`.
"""

from __future__ import annotations

import torch
from jsonargparse import CLI

from pudding.bench import bench_length, machine, peak_memory_mb, plot_bench, reset_peak_memory
from pudding.checks import check_bundle, check_output
from pudding.errors import OptionError, run_command
from pudding.io import atomic_write_json
from pudding.models.dtype import DTYPE_NAMES
from pudding.options import as_int_list


def bench(
    bundle: str = "checkpoints/router/bundle",
    base: str | None = None,
    lengths: list[int] | str = "64,128,512",
    new_tokens: int = 64,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
    output: str = "checkpoints/bench/bench.json",
    plot: str | None = None,
    overwrite: bool = False,
    cache_dir: str = "checkpoints/base_models",
) -> dict:
    """Time dense vs routed inference of a router bundle's base model.

    Args:
        bundle: Router bundle folder (written at the end of ``pudding-train fit``).
        base: Base model; None: the one the bundle was trained for.
        lengths: Prompt lengths in tokens (batch 1), YAML list or comma-separated.
        new_tokens: Tokens to generate for the generation-speed figure (0 skips it).
        repeats: Timed runs per figure (median and spread are reported).
        warmup: Untimed runs before each figure.
        device: auto, cpu, cuda or cuda:N.
        dtype: auto (the fast one here), float32, bfloat16 or float16.
        threads: torch CPU threads (None: torch's default); recorded in the report.
        output: JSON report, written atomically.
        plot: PNG plot; None: the output path with ``.png``.
        overwrite: Replace existing ``output`` / ``plot`` files (without it they are an error, found up front).
        cache_dir: Where de-quantised GGUF weights are cached.
    """
    from pudding.routed.model import PuddingModel
    from pudding.router.bundle import check_bundle_files

    # ---- every check that needs no model: options, bundle files, outputs, bundle vs base model depth
    sizes = as_int_list(lengths, "lengths")
    if not sizes or min(sizes) < 1:
        raise OptionError(f"option lengths: give positive prompt lengths, got {lengths!r}")
    if repeats < 1 or warmup < 0 or new_tokens < 0:
        raise OptionError(
            f"options repeats ({repeats}) ≥ 1, warmup ({warmup}) ≥ 0, new_tokens ({new_tokens}) ≥ 0 do not hold"
        )
    if dtype not in DTYPE_NAMES:
        raise OptionError(f"option dtype: {dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
    check_bundle_files(bundle)
    out = check_output(output, overwrite)
    picture = check_output(plot or out.with_suffix(".png"), overwrite, option="plot")
    base, _ = check_bundle(bundle, base, cache_dir)
    if threads is not None:
        torch.set_num_threads(threads)
    routed = PuddingModel.from_pretrained(bundle, base=base, device=device, dtype=dtype, cache_dir=cache_dir)
    lm = routed.lm
    reset_peak_memory(lm.device)
    rows = []
    for n in sizes:
        rows.append(
            bench_length(lm.model, lm.tokenizer, routed.router, routed.omission_sets, n, new_tokens, repeats, warmup)
        )
        print(format_row(rows[-1]), flush=True)
    report = {
        "bundle": bundle,
        "base_model": lm.name,
        "device": str(lm.device),
        **lm.dtype_choice.record(),
        "machine": machine(),
        "repeats": repeats,
        "warmup": warmup,
        "new_tokens": new_tokens,
        "peak_memory_mb": peak_memory_mb(lm.device),
        "peak_memory_kind": "cuda max_memory_allocated" if lm.device.type == "cuda" else "process peak RSS",
        "lengths": rows,
    }
    atomic_write_json(out, report)
    picture = plot_bench(report, picture)
    print(f"wrote {out} and {picture}")
    return report


def format_row(row: dict) -> str:
    """One line per prompt length: medians in ms and the routed / dense ratio."""
    text = (
        f"{row['tokens']:>5} tokens: dense {row['dense_prefill']['median_ms']:.1f} ms, "
        f"routed {row['routed_prefill']['median_ms']:.1f} ms (router {row['router']['median_ms']:.1f} ms, "
        f"{len(row['omit'])} blocks skipped) = {row['ratio_routed_vs_dense']:.3f}x"
    )
    if "ratio_generate_speed" in row:
        text += (
            f"; generation {row['dense_generate_tokens_per_s']:.1f} → {row['routed_generate_tokens_per_s']:.1f} "
            "tokens/s"
        )
    return text


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding bench``: input errors are one line on stderr and exit code 2 (``--debug``:
    traceback)."""
    run_command("pudding bench", lambda args: CLI(bench, args=args), argv)
