"""``pudding dataset``: the router's training data (PuDDing stage 2).

    pudding dataset --config configs/dataset.yaml --data_dir ../shared/data
    pudding dataset --config configs/dataset.yaml --trainer.accelerator gpu --trainer.devices 4 --trainer.strategy ddp
    pudding dataset --scores checkpoints/release/router_scores.parquet --data_dir ../shared/data   # seconds

For every router item of the tasks (train split, or the reserved part of validation when a task has no train split
at hand), scores the gold answer's per-token mean log-likelihood under each candidate omission set and dense (with
``--all_choices true`` also every other choice, for the gold answer's posterior and correctness per set), and saves
a ``datasets`` Arrow dataset. The run is a Lightning ``predict`` run, so ``--trainer.devices``,
``--trainer.strategy`` and ``--trainer.num_nodes`` spread it over processes, GPUs and machines. Killed runs resume:
run the same command again. Options may come from ``--config`` YAML and the command line (which wins).

Under DDP Lightning starts the other processes by re-running this command line, so call it from a shell (or
``python -m pudding.cli dataset ...``), not from another Python program with a different ``sys.argv``. With
``--trainer.num_nodes`` > 1 the work dir must be on a file system all nodes share; global rank 0 writes the output.

With ``--progress FILE`` the build's finished chunks are also kept in one small Parquet file (item ids and scores,
no benchmark text) that can be committed: a machine that starts over resumes from it. ``--pack_progress FILE`` writes
that file for a build of the same options already running without it, and exits (see
:mod:`pudding.routerdata.progress`).

With ``--scores FILE`` nothing is scored: the released scores (no benchmark text) are joined with the router text
read from ``data_dir`` into the same dataset the full build writes (see :mod:`pudding.routerdata.scores`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser

from pudding.cli.parse import build_options, options_parser
from pudding.cli.report import run_command
from pudding.core.candidates import resolve_base
from pudding.core.errors import OptionError
from pudding.core.io import OutputOptions, check_output
from pudding.core.llm import LLMOptions
from pudding.core.options import check_positive
from pudding.core.tasks import TaskOptions
from pudding.routerdata.build import build_dataset, pack_build, print_headroom, say
from pudding.routerdata.dataset import load_router_dataset
from pudding.routerdata.predict import ScoringModule
from pudding.routerdata.scores import rebuild_dataset
from pudding.routerdata.units import ScoringDataModule

TRAINER_DEFAULTS = {
    "trainer.logger": False,
    "trainer.enable_progress_bar": False,  # the builder prints progress lines that also read well in a log file
    "trainer.enable_model_summary": False,
    "trainer.devices": 1,
}


DEFAULT_CANDIDATES = "checkpoints/candidates.yaml"


@dataclass
class DatasetOptions(OutputOptions, TaskOptions, LLMOptions):
    """Build the router dataset.

    Args:
        base: Base model (``default``, hub id, local folder or ``.gguf``); null takes the candidate file's
            ``base_model``.
        dtype: As for every command (auto, float32, bfloat16 or float16; recorded in the metadata and part of the
            build key). Use this, not ``trainer.precision``.
        tasks: Tasks whose router items are scored, a YAML list or comma-separated: arc_easy, arc_challenge, boolq,
            hellaswag, piqa, winogrande.
        router_fraction: For tasks with no train split at hand, the share of the validation split used as router
            data (and excluded from evaluation, which says so).
        output: Folder the dataset is saved to (with ``pudding_meta.json`` inside).
        overwrite: Replace an existing output that was built from other settings (an up-to-date one is kept).
        candidates: Candidate file written by ``pudding candidates``; its sha256 is recorded in the dataset so
            datasets of different candidate files are never mixed. Null: ``checkpoints/candidates.yaml``, or with
            ``scores`` the ``candidates.yaml`` beside the scores file.
        scores: A scores file (``pudding release`` writes one; ``checkpoints/release/router_scores.parquet`` is the
            default model's): instead of scoring, join its scores with the router text of the task files in
            ``data_dir`` and write the same dataset the full build wrote. Takes seconds; no model is loaded. The
            tasks, limit and split options recorded in the scores file are used (those given here are not).
        limit: Score only the first ``limit`` router items of each task (null: all).
        items_per_batch: Items per work unit: one predict batch, one shard file, the unit of resumption and of
            distribution over processes. Part of the build key.
        reuse_prefix: Start each run from the hidden states an earlier run recorded where their kept blocks part
            (exact; every candidate skips at least the blocks below its first omitted one).
        all_choices: Also score every other answer choice of each item under each candidate and dense, and keep per
            set the gold answer's posterior among the choices and whether the set answers right (as acc and as
            acc_norm judge; the targets ``--data.target posterior|correct`` of ``pudding-train``). The gold scores
            stay bit for bit those of a gold-only build; the extra scoring costs about as much again
            (docs/router-data.md). Part of the build key when true.
        work_dir: Folder for the resumable shards; null means ``<output>.work``.
        keep_shards: Keep the shard files after the dataset is assembled (they are deleted by default).
        progress_every: Seconds between progress lines (negative: only the final summary).
        progress: A progress file (Parquet; chunk ids, item ids and float64 scores, no benchmark text) that carries
            a build across machines: before scoring, its chunks become shards of the work dir; while scoring it is
            rewritten from the shards on disk (every ``progress_save_every`` seconds, and once scoring ends); once
            the dataset is written it is left in place, holding every chunk (a build given it then scores nothing;
            delete it when done). Commit it to resume elsewhere. A file of other settings is refused. Null: none.
            Not part of the build key.
        progress_save_every: Seconds between rewrites of the progress file while scoring (0: after every chunk).
        pack_progress: Write the progress file of the build these options name (its finished shards in the work
            dir, e.g. of a run started without ``progress``) to this path and exit; no model is loaded.
    """

    output: str = "checkpoints/router_dataset"
    candidates: str | None = None
    scores: str | None = None
    limit: int | None = None
    items_per_batch: int = 64
    reuse_prefix: bool = True
    all_choices: bool = False
    work_dir: str | None = None
    keep_shards: bool = False
    progress_every: float = 30.0
    progress: str | None = None
    progress_save_every: float = 600.0
    pack_progress: str | None = None

    def check(self) -> None:
        check_positive(self.limit, "limit")
        check_positive(self.items_per_batch, "items_per_batch")
        check_positive(self.progress_save_every, "progress_save_every", minimum=0)
        if self.scores and (self.progress or self.pack_progress):
            raise OptionError("options scores and progress/pack_progress exclude each other: --scores scores nothing")


def build_parser() -> LightningArgumentParser:
    """The flat options of :class:`DatasetOptions` plus the Lightning ``--trainer.*`` group."""
    parser = options_parser(DatasetOptions, "pudding dataset", parser_class=LightningArgumentParser)
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.set_defaults(TRAINER_DEFAULTS)
    return parser


def check_output_path(opts: DatasetOptions) -> None:
    """The output path, checked before any data or model is read."""
    if opts.scores:
        check_output(opts.output, opts.overwrite)
    else:  # an up-to-date output is kept as is; one from other settings is refused (before scoring) unless overwrite
        check_output(opts.output, overwrite=True)


def rebuild(opts: DatasetOptions) -> None:
    """``--scores``: rebuild the dataset from a scores file, then print its headroom as a full build does."""
    started = time.perf_counter()
    candidates = opts.candidates or str(Path(opts.scores).parent / "candidates.yaml")
    output = rebuild_dataset(opts.scores, candidates, opts.data_dir, opts.output, overwrite=opts.overwrite)
    dataset, meta = load_router_dataset(output)
    say(f"wrote {output} from {opts.scores} ({len(dataset)} rows, K={meta['num_candidates']}, candidates {candidates})")
    say(f"done in {time.perf_counter() - started:.1f} s")
    print_headroom(dataset, meta)


def run(argv: list[str]) -> None:
    """The command proper: parse, check everything that needs no model, then build (or rebuild) the dataset."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    opts = build_options(DatasetOptions, cfg)
    check_output_path(opts)
    if opts.scores:
        rebuild(opts)
        return
    init = parser.instantiate(cfg)
    candidates = opts.candidates or DEFAULT_CANDIDATES
    module = ScoringModule(
        candidates=candidates, llm=opts.llm, reuse_prefix=opts.reuse_prefix, all_choices=opts.all_choices
    )
    resolve_base(opts.base, module.cset, candidates, opts.cache_dir)  # name and block count, from the config only
    data = ScoringDataModule(
        tasks=list(opts.tasks),
        limit=opts.limit,
        data_dir=opts.data_dir,
        router_fraction=opts.router_fraction,
        split_seed=opts.split_seed,
        items_per_batch=opts.items_per_batch,
    )
    data.load()  # every task's files read and parsed before the model loads
    trainer = Trainer(**init.trainer)
    if opts.pack_progress:
        run_dir, count = pack_build(trainer, module, data, opts.output, opts.pack_progress, work_dir=opts.work_dir)
        say(f"packed {count} of {len(data.chunks)} chunks of {run_dir} into {opts.pack_progress}")
        return
    build_dataset(
        trainer,
        module,
        data,
        output=opts.output,
        work_dir=opts.work_dir,
        overwrite=opts.overwrite,
        keep_shards=opts.keep_shards,
        progress_every=opts.progress_every,
        progress=opts.progress,
        progress_save_every=opts.progress_save_every,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding dataset``: a bad input is one line on stderr, exit code 2 (``--debug``: traceback)."""
    run_command("pudding dataset", run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
