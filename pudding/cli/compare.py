"""``pudding compare``: routed pruning against every baseline on the tasks' evaluation items, in one table.

    pudding compare --bundle checkpoints/router/bundle --data_dir ../shared/data
    pudding compare --bundle checkpoints/router/bundle_budget --budget 0.85 --limit 200 --data_dir ../shared/data

puts PuDDing (the bundle's router) beside the dense model, every candidate as a static set, the best static
candidate (picked on router data), SLEB, random and oracle routing, per task, averaged, with blocks kept, and writes
``output`` (JSON) with ``.md``, ``.csv``, ``.png``, ``.items.parquet`` (per-item records) and ``.choices.parquet``
(the router's choices, no labels) beside it (:func:`pudding.routed.evaluate.evaluate_bundle`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pudding.cli.parse import parse_options
from pudding.cli.report import run_command
from pudding.core.io import OutputOptions
from pudding.core.results import result_suffixes
from pudding.core.tasks import TaskOptions
from pudding.routed.evaluate import BundleSettings, check_bundle_inputs
from pudding.router.budget import parse_budget
from pudding.router.bundle import check_bundle_files


@dataclass
class CompareOptions(OutputOptions, TaskOptions, BundleSettings):
    """Routed pruning of a router bundle against every baseline.

    Args:
        bundle: A router bundle (written by ``pudding-train fit``); ``default``: the released one
            (``checkpoints/release/bundle_self``, the default model's ``self`` router).
        base: Base model; null: the bundle's. Another model must have the same number of blocks.
        tasks: Tasks to evaluate, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa,
            winogrande.
        output: The results JSON (``.md``, ``.csv``, ``.png``, the per-item records ``.items.parquet`` and the
            router's choices ``.choices.parquet`` are written beside it); checked before any work.
        overwrite: Replace existing output files (without it an existing one is an error, found up front).
        budget: Compute budget, the target mean fraction of blocks kept in (0, 1]: each prompt goes to the choice
            with the best predicted score + λ × blocks omitted, λ calibrated on the router's validation rows. Null:
            the bundle's default (plain argmax unless it records one); ``argmax``: plain argmax. Needs a bundle whose
            choices differ in depth (trained with ``data.dense_choice``).
    """

    bundle: str = "checkpoints/router/bundle"
    output: str = "checkpoints/eval/results.json"
    budget: float | str | None = None

    def check(self) -> None:
        self.budget = parse_budget(self.budget)


def compare(opts: CompareOptions) -> dict:
    """Check the bundle, outputs and corpus, then :func:`pudding.routed.evaluate.evaluate_bundle`."""
    from pudding.routed.evaluate import evaluate_bundle

    check_bundle_files(opts.bundle)
    out = opts.check_outputs(*result_suffixes(routed=True))[0]
    settings = replace(opts, base=check_bundle_inputs(opts.bundle, opts))
    return evaluate_bundle(
        opts.bundle, list(opts.tasks), opts.data_options, settings, output=out.with_suffix(""), budget=opts.budget
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding compare``: input errors are one line on stderr and exit code 2."""
    run_command("pudding compare", lambda args: compare(parse_options(CompareOptions, args, "pudding compare")), argv)


if __name__ == "__main__":
    main()
