"""``pudding-train``: router training (PuDDing stage 3) as a LightningCLI over RouterModule and RouterDataModule.

    pudding-train fit --config configs/router.yaml
    pudding-train fit --config configs/router.yaml --model.lr 3e-5 --trainer.max_epochs 2 --data.batch_size 16
    pudding-train validate --config configs/router.yaml --ckpt_path checkpoints/router/.../best.ckpt
    pudding-train fit --config configs/router.yaml --print_config        # the full resolved config
    pudding-train export CHECKPOINT --output DIR [--overwrite]           # a bundle from any checkpoint
    pudding-train fit --config configs/router_budget.yaml --budget 0.85  # dense as a choice, default budget 0.85

The router tokenizer and truncation length are the model's: ``model.encoder`` and ``model.max_length`` are linked
to ``data.router`` and ``data.max_length``. K and the candidates come from the dataset. At the end of ``fit`` the
best checkpoint (by validation regret) is exported as a bundle to ``--bundle`` (default checkpoints/router/bundle;
``null`` skips it); an existing bundle is refused before training starts unless ``--overwrite_bundle true``.
When the router's choices differ in depth (``--data.dense_choice true``, or candidates of several depths), the bundle
also gets the budget calibration (the router's predictions on its validation rows, :mod:`pudding.router.budget`),
and ``--budget`` records the bundle's default compute budget (null: plain argmax). ``export`` calibrates too,
reading the router data from the run's ``config.yaml`` beside the checkpoint folder (``--datasets`` overrides).

Errors in the input (missing dataset, mixed candidate files, an encoder that cannot be loaded, an existing
bundle...) print one line, ``pudding-train: error: ...``, and exit with status 2; ``--debug`` (or PUDDING_DEBUG=1)
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from pudding.cli.report import run_command
from pudding.core.candidates import Choices
from pudding.core.errors import OptionError
from pudding.core.llm import LLMOptions
from pudding.router.budget import ARGMAX, parse_budget
from pudding.router.bundle import BundleError, export_bundle
from pudding.router.data import RouterDataModule, require_choice_columns
from pudding.router.module import RouterModule
from pudding.routerdata.dataset import read_meta

DEFAULT_BUNDLE = "checkpoints/router/bundle"
DEFAULT_DATASET = "checkpoints/router_dataset"
TRAINER_DEFAULTS = {
    "max_epochs": 3,
    "use_distributed_sampler": False,  # the length-grouped sampler splits batches across ranks itself
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        # no placeholder hp_metric: RouterModule logs its hyper-parameters against val/regret and zero-shot accuracy
        "init_args": {"save_dir": "checkpoints/router", "name": "tensorboard", "default_hp_metric": False},
    },
    "callbacks": [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "monitor": "val/regret",
                "mode": "min",
                "save_top_k": 1,
                "filename": "best-{epoch:02d}",
                "save_last": False,  # Lightning 2.6.6 writes its last.ckpt only when this one improves
            },
        },
        {
            # last.ckpt after every epoch's validation, improved or not: what --ckpt_path last resumes from
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"filename": "last", "monitor": None, "save_top_k": 1, "enable_version_counter": False},
        },
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        {"class_path": "lightning.pytorch.callbacks.TQDMProgressBar", "init_args": {"refresh_rate": 20}},
    ],
}


PARSER_KWARGS = {"exit_on_error": False} | {
    name: {"exit_on_error": False} for name in ("fit", "validate", "test", "predict")
}
"""A bad option raises (one line through :func:`pudding.cli.report.run_command`) instead of printing the usage."""


class RouterCLI(LightningCLI):
    """LightningCLI with the router's links, bundle options and defaults."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.encoder", "data.router")
        parser.link_arguments("model.max_length", "data.max_length")
        parser.add_argument(
            "--bundle",
            type=str | None,
            default=DEFAULT_BUNDLE,
            help="fit only: export the best checkpoint to this folder at the end (null: no bundle)",
        )
        parser.add_argument(
            "--overwrite_bundle", type=bool, default=False, help="fit only: replace an existing bundle folder"
        )
        parser.add_argument(
            "--budget",
            type=float | str | None,
            default=None,
            help="fit only: the bundle's default compute budget, the target mean fraction of blocks kept in (0, 1] "
            "(needs choices of different depths, e.g. data.dense_choice true); null: plain argmax",
        )
        parser.set_defaults({"data.datasets": [DEFAULT_DATASET]})
        parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})

    def before_instantiate_classes(self) -> None:
        """Checks that need no model, run before the encoder loads: each router dataset is one (its metadata
        reads), and ``fit`` may write its bundle."""
        data, model = self._get(self.config, "data"), self._get(self.config, "model")
        paths = RouterDataModule.check_options(
            data.get("datasets") or [],
            max_length=model.get("max_length") or 256,  # linked to data.max_length at instantiation
            batch_size=data.get("batch_size"),
            val_fraction=data.get("val_fraction"),
            target_transform=data.get("target_transform"),
            target=data.get("target") or "likelihood",
            metric=data.get("metric") or "acc",
        )
        metas = [read_meta(path) for path in paths]
        for path, meta in zip(paths, metas, strict=True):
            require_choice_columns(meta, path, data.get("target") or "likelihood")
        budget = parse_budget(self._get(self.config, "budget"))
        if budget is not None and budget != ARGMAX:
            Choices.from_meta(metas[0], dense=bool(data.get("dense_choice"))).require_depths(
                "budget", "the router data"
            )
        if self.subcommand == "fit":
            self._resolve_last_checkpoint()
            bundle = self._get(self.config, "bundle")
            if bundle and Path(bundle).exists() and not self._get(self.config, "overwrite_bundle"):
                raise BundleError(f"bundle folder {bundle} exists; pass --overwrite_bundle true to replace it")

    def _resolve_last_checkpoint(self) -> None:
        """``fit --ckpt_path last``: resume from the newest ``last.ckpt`` of an earlier run under the logger's folder,
        and log into that run's version folder, so checkpoints and TensorBoard curves continue where they stopped.
        (Lightning itself looks for ``last`` only in the *new* run's folder, where there is none.) Without an earlier
        run, training starts from scratch."""
        config = self.config[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        logger = config.get("trainer.logger")
        args = logger.get("init_args") if hasattr(logger, "get") else None
        if args is None or args.get("version") is not None:
            return  # a fixed version folder or another logger: Lightning's own lookup finds it
        root = Path(args.get("save_dir") or ".") / (args.get("name") or "lightning_logs")
        found = sorted(root.glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            print(f"pudding-train: no last.ckpt under {root}; starting from scratch", file=sys.stderr)
            config["ckpt_path"] = None
            return
        last = found[-1]
        config["ckpt_path"] = str(last)
        args["version"] = last.parent.parent.name
        print(f"pudding-train: resuming from {last}", file=sys.stderr)

    def after_fit(self) -> None:
        bundle = self._get(self.config, "bundle")
        if not bundle or not self.trainer.is_global_zero or self.trainer.interrupted:
            return
        monitored = [c for c in self.trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
        callback = monitored[0] if monitored else self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        try:
            config = self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False)
        except Exception:  # a config that cannot be dumped must not cost the bundle
            config = None
        path = export_bundle(
            self.model,
            bundle,
            checkpoint=best or None,
            training_config=config,
            overwrite=bool(self._get(self.config, "overwrite_bundle")),
            datamodule=self.datamodule,
            budget=self._get(self.config, "budget"),
        )
        source = best or "the final weights"
        print(f"pudding-train: router bundle written to {path} (from {source})", file=sys.stderr)


def run_cli(args: list[str] | None) -> RouterCLI:
    return RouterCLI(
        RouterModule,
        RouterDataModule,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs=PARSER_KWARGS,
        args=args,
    )


def export_main(args: list[str]) -> None:
    """``pudding-train export CHECKPOINT --output DIR``: a bundle from any checkpoint written by ``fit``."""
    parser = argparse.ArgumentParser(
        prog="pudding-train export", description="Export a router checkpoint as a self-contained bundle folder."
    )
    parser.add_argument("checkpoint", help="a .ckpt written by pudding-train fit")
    parser.add_argument("--output", default=DEFAULT_BUNDLE, help=f"bundle folder (default {DEFAULT_BUNDLE})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    parser.add_argument(
        "--budget",
        default=None,
        help="the bundle's default compute budget: target mean fraction of blocks kept in (0, 1] (default: none, "
        "plain argmax)",
    )
    parser.add_argument(
        "--datasets",
        default=None,
        help="router datasets to calibrate the budget on (comma-separated; default: those of the run's config.yaml)",
    )
    parser.add_argument(
        "--no_calibration",
        action="store_true",
        help="write no budget calibration (the bundle then routes by plain argmax, or budget 1.0, only)",
    )
    opts = parser.parse_args(args)
    budget = parse_budget(opts.budget)
    checkpoint = Path(opts.checkpoint)
    if not checkpoint.is_file():
        raise OptionError(f"argument checkpoint: {checkpoint} is not a file (give a .ckpt written by fit)")
    if Path(opts.output).exists() and not opts.overwrite:
        raise BundleError(f"bundle folder {opts.output} exists; pass --overwrite to replace it")
    module = RouterModule.load_from_checkpoint(str(checkpoint), map_location="cpu", pretrained=False)
    if module.router.head is None:
        raise BundleError(f"checkpoint {checkpoint} was not written by pudding-train (no router candidates in it)")
    config_file = checkpoint.parent.parent / "config.yaml"  # LightningCLI saves the run config beside checkpoints/
    config = config_file.read_text() if config_file.is_file() else None
    datamodule = None
    if module.router.depths_differ and not opts.no_calibration:
        datamodule = calibration_data(config, opts.datasets, config_file)
    path = export_bundle(
        module,
        opts.output,
        checkpoint=checkpoint,
        training_config=config,
        overwrite=opts.overwrite,
        datamodule=datamodule,
        budget=budget,
    )
    print(f"pudding-train: router bundle written to {path} (from {checkpoint})", file=sys.stderr)


def calibration_data(config: str | None, datasets: str | None, config_file: Path) -> RouterDataModule:
    """The router data a checkpoint was trained on, set up, from its run's ``config.yaml`` (``data`` and the linked
    ``model.encoder`` / ``model.max_length``), with ``datasets`` (comma-separated) replacing the recorded ones."""
    import inspect

    import yaml

    if config is None and datasets is None:
        raise OptionError(
            f"the router's choices differ in depth, so its bundle needs a budget calibration on the router data: "
            f"{config_file} (the run's config) is missing; give --datasets, or --no_calibration"
        )
    run = yaml.safe_load(config) if config else {}
    data = dict((run or {}).get("data") or {})
    model = (run or {}).get("model") or {}
    data.setdefault("router", model.get("encoder", "default"))
    data.setdefault("max_length", model.get("max_length", 256))
    if datasets is not None:
        data["datasets"] = datasets
    if "llm" in data:
        data["llm"] = LLMOptions.from_config(data["llm"])
    allowed = set(inspect.signature(RouterDataModule).parameters)
    datamodule = RouterDataModule(**{k: v for k, v in data.items() if k in allowed})
    datamodule.setup("predict")
    return datamodule


def dispatch(args: list[str]) -> RouterCLI | None:
    """``export`` or a LightningCLI subcommand. The subcommand reads its arguments from ``sys.argv``, set to exactly
    ``args`` for the run: under DDP Lightning starts the other ranks by re-running ``sys.argv``, so it must hold the
    arguments this rank runs with (``--debug``, which only changes how errors print, is left out)."""
    saved_argv = sys.argv
    sys.argv = [sys.argv[0], *args]
    try:
        if args and args[0] == "export":
            export_main(args[1:])
            return None
        return run_cli(None)
    finally:
        sys.argv = saved_argv


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding-train``: input errors are one line on stderr and exit code 2 (``--debug``:
    traceback), through the package's one error layer, :func:`pudding.core.errors.run_command`."""
    run_command("pudding-train", dispatch, argv)


if __name__ == "__main__":
    main()
