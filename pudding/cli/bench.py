"""``pudding bench``: how much faster routed pruning is than the dense model, router included, on this machine.

    pudding bench --bundle checkpoints/router/bundle --lengths 64,128,512 --repeats 10

prints a table (pre-fill latency at batch 1, dense vs routed, router time on its own and included; generation
tokens/s; on CUDA each configuration's peak memory) and writes JSON plus a PNG plot. What is timed and how:
:mod:`pudding.routed.bench`.
``--budget B`` routes under a compute budget (:mod:`pudding.router.budget`); the JSON then records the budget, its λ
and each prompt's depth (``blocks_kept``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from pudding.cli.parse import parse_options
from pudding.cli.report import run_command
from pudding.core.errors import OptionError
from pudding.core.io import OutputOptions, atomic_write_json, check_output
from pudding.core.llm import LLMOptions
from pudding.core.models.dtype import machine
from pudding.core.options import as_int_list, check_positive
from pudding.routed.bench import MemoryProbe, bench_length, peak_memory_mb, plot_bench
from pudding.router.budget import lambda_text, parse_budget
from pudding.router.bundle import check_bundle


@dataclass
class BenchOptions(OutputOptions, LLMOptions):
    """Time dense vs routed inference of a router bundle's base model.

    Args:
        base: Base model; None: the one the bundle was trained for.
        output: JSON report, written atomically.
        overwrite: Replace existing ``output`` / ``plot`` files (without it they are an error, found up front).
        bundle: Router bundle folder (written at the end of ``pudding-train fit``); ``default``: the released one
            (``checkpoints/release/bundle_self``, the default model's ``self`` router).
        lengths: Prompt lengths in tokens (batch 1), YAML list or comma-separated.
        new_tokens: Tokens to generate for the generation-speed figure (0 skips it).
        repeats: Timed runs per figure (median and spread are reported).
        warmup: Untimed runs before each figure.
        threads: torch CPU threads (None: torch's default); recorded in the report.
        plot: PNG plot; None: the output path with ``.png``.
        budget: Compute budget: target mean fraction of blocks kept, in (0, 1] (calibrated on the router's
            validation rows); None: the bundle's default (plain argmax unless it records one); ``argmax``: plain
            argmax. Needs a bundle whose choices differ in depth (``data.dense_choice``).
    """

    output: str = "checkpoints/bench/bench.json"
    bundle: str = "checkpoints/router/bundle"
    lengths: list[int] | str = "64,128,512"
    new_tokens: int = 64
    repeats: int = 10
    warmup: int = 2
    threads: int | None = None
    plot: str | None = None
    budget: float | str | None = None

    def check(self) -> None:
        self.budget = parse_budget(self.budget)
        self.lengths = as_int_list(self.lengths, "lengths")
        if not self.lengths or min(self.lengths) < 1:
            raise OptionError(f"option lengths: give positive prompt lengths, got {self.lengths!r}")
        check_positive(self.new_tokens, "new_tokens", minimum=0)
        check_positive(self.repeats, "repeats")
        check_positive(self.warmup, "warmup", minimum=0)
        check_positive(self.threads, "threads")


def bench(opts: BenchOptions) -> dict:
    """Check the bundle and outputs, then time every prompt length; write the JSON report and the plot."""
    from pudding.routed.model import PuddingModel
    from pudding.router.bundle import check_bundle_files

    # ---- every check that needs more than the options: bundle files, outputs, bundle vs base model depth
    check_bundle_files(opts.bundle)
    out = check_output(opts.output, opts.overwrite)
    picture = check_output(opts.plot or out.with_suffix(".png"), opts.overwrite, option="plot")
    base, _ = check_bundle(opts.bundle, opts.base, opts.cache_dir)
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    routed = PuddingModel.from_pretrained(opts.bundle, budget=opts.budget, **asdict(replace(opts.llm, base=base)))
    depths = len(set(routed.blocks_kept)) > 1
    lm = routed.lm
    probe = MemoryProbe(lm.device)
    rows = []
    for n in opts.lengths:
        rows.append(
            bench_length(
                lm.model,
                lm.tokenizer,
                routed.router,
                routed.omission_sets,
                n,
                opts.new_tokens,
                opts.repeats,
                opts.warmup,
                probe,
            )
        )
        if depths:
            rows[-1]["blocks_kept"] = routed.scorer.num_blocks - len(rows[-1]["omit"])
        print(format_row(rows[-1]), flush=True)
    report = {
        "bundle": opts.bundle,
        "base_model": lm.name,
        "device": str(lm.device),
        **lm.dtype_choice.record(),
        "machine": machine(),
        "repeats": opts.repeats,
        "warmup": opts.warmup,
        "new_tokens": opts.new_tokens,
        "peak_memory_mb": peak_memory_mb(lm.device, rows),
        "peak_memory_kind": (
            "cuda max_memory_allocated: the largest of the configurations' peaks"
            if lm.device.type == "cuda"
            else "process peak RSS of the whole run (per configuration: null, a CPU process's peak only grows)"
        ),
        "lengths": rows,
    }
    if depths:
        report["budget"] = routed.budget
        report["budget_lambda"] = lambda_text(routed.router.route_lambda)
    atomic_write_json(out, report)
    picture = plot_bench(report, picture)
    print(f"wrote {out} and {picture}")
    return report


def format_row(row: dict) -> str:
    """One line per prompt length: medians in ms and the routed / dense ratio (and the depth, under a budget)."""
    kept = f", {row['blocks_kept']} kept" if "blocks_kept" in row else ""
    text = (
        f"{row['tokens']:>5} tokens: dense {row['dense_prefill']['median_ms']:.1f} ms, "
        f"routed {row['routed_prefill']['median_ms']:.1f} ms (router {row['router']['median_ms']:.1f} ms, "
        f"{len(row['omit'])} blocks skipped{kept}) = {row['ratio_routed_vs_dense']:.3f}x"
    )
    if "ratio_generate_speed" in row:
        text += (
            f"; generation {row['dense_generate_tokens_per_s']:.1f} → {row['routed_generate_tokens_per_s']:.1f} "
            "tokens/s"
        )
    peaks = {k: v for k, v in row.get("peak_memory_mb", {}).items() if v is not None}
    if peaks:
        text += "; peak MB " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
    return text


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding bench``: input errors are one line on stderr and exit code 2 (``--debug``:
    traceback)."""
    run_command("pudding bench", lambda args: bench(parse_options(BenchOptions, args, "pudding bench")), argv)
