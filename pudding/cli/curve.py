"""``pudding curve``: the accuracy–compute curve of a router bundle whose choices differ in depth.

    pudding curve --bundle checkpoints/router/bundle_budget --data_dir ../shared/data --limit 200 \
        --bench checkpoints/bench/budget.json

dense, SLEB, best static, the router restricted to one depth and oracle routing at every candidate depth, and the
router under every budget of ``budgets``, each at its mean blocks kept on the evaluation items; writes ``output``
(JSON) with ``.md``, ``.csv`` and ``.png`` beside it (:func:`pudding.routed.sweep.sweep_bundle`). The LLM work is the
table's (``pudding compare``): one pass, cached; each budget is a re-choice over the router's predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pudding.cli.parse import parse_options
from pudding.cli.report import run_command
from pudding.core.io import OutputOptions
from pudding.core.options import check_positive
from pudding.core.tasks import TaskOptions
from pudding.routed.evaluate import BundleSettings, check_bundle_inputs
from pudding.routed.sweep import DEFAULT_BENCH_TOKENS, check_depths, read_bench
from pudding.router.budget import parse_budgets
from pudding.router.bundle import check_bundle_files


@dataclass
class CurveOptions(OutputOptions, TaskOptions, BundleSettings):
    """The accuracy–compute curve of a router bundle.

    Args:
        bundle: A router bundle whose choices differ in depth (trained with ``data.dense_choice``, or on candidates
            of several depths) and that holds its budget calibration.
        base: Base model; null: the bundle's. Another model must have the same number of blocks.
        tasks: Tasks to evaluate, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa,
            winogrande.
        output: The curve's JSON (``.md``, ``.csv`` and ``.png`` are written beside it); checked before any work.
        overwrite: Replace existing output files (without it an existing one is an error, found up front).
        budgets: The budgets to sweep, a YAML list or comma-separated, each in (0, 1]. Null: 0.70 to 1.00 in steps of
            0.025 plus each choice depth's fraction of blocks kept.
        bench: A ``pudding bench`` JSON of the same base model; every point then gets its pre-fill time against the
            dense model (``bench_tokens`` tokens; fitted per block to the bench's measurements) and the plot a
            second x axis.
        bench_tokens: The prompt length (tokens) of the bench row to use.
    """

    bundle: str = "checkpoints/router/bundle_budget"
    output: str = "checkpoints/eval/curve.json"
    budgets: list[float] | str | None = None
    bench: str | None = None
    bench_tokens: int = DEFAULT_BENCH_TOKENS

    def check(self) -> None:
        self.budgets = parse_budgets(self.budgets)
        check_positive(self.bench_tokens, "bench_tokens")


def curve(opts: CurveOptions) -> dict:
    """Check the bundle (depths, calibration), bench file, outputs and corpus, then
    :func:`pudding.routed.sweep.sweep_bundle`."""
    from pudding.routed.sweep import sweep_bundle

    check_bundle_files(opts.bundle)
    check_depths(opts.bundle)
    if opts.bench is not None:
        read_bench(opts.bench, opts.bench_tokens)  # a bad bench file fails before any model loads
    out = opts.check_outputs(".json", ".md", ".csv", ".png")[0]
    settings = replace(opts, base=check_bundle_inputs(opts.bundle, opts))
    return sweep_bundle(
        opts.bundle,
        list(opts.tasks),
        opts.data_options,
        settings,
        output=out.with_suffix(""),
        budgets=opts.budgets,
        bench=opts.bench,
        bench_tokens=opts.bench_tokens,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding curve``: input errors are one line on stderr and exit code 2."""
    run_command("pudding curve", lambda args: curve(parse_options(CurveOptions, args, "pudding curve")), argv)


if __name__ == "__main__":
    main()
