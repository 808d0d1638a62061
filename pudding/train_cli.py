"""``pudding-train``: router training (PuDDing stage 3) as a LightningCLI over RouterModule and RouterDataModule.

    pudding-train fit --config configs/router.yaml
    pudding-train fit --config configs/router.yaml --model.lr 3e-5 --trainer.max_epochs 2 --data.batch_size 16
    pudding-train validate --config configs/router.yaml --ckpt_path checkpoints/router/.../best.ckpt
    pudding-train fit --config configs/router.yaml --print_config        # the full resolved config
    pudding-train export CHECKPOINT --output DIR [--overwrite]           # a bundle from any checkpoint

The router tokenizer and truncation length are the model's: ``model.encoder`` and ``model.max_length`` are linked
to ``data.router`` and ``data.max_length``. K and the candidates come from the dataset. At the end of ``fit`` the
best checkpoint (by validation regret) is exported as a bundle to ``--bundle`` (default checkpoints/router/bundle;
``null`` skips it); an existing bundle is refused before training starts unless ``--overwrite_bundle true``.

Errors in the input (missing dataset, mixed candidate files, an encoder that cannot be loaded, an existing
bundle...) print one line, ``pudding-train: error: ...``, and exit with status 2; ``--debug`` (or PUDDING_DEBUG=1)
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from pudding.router.bundle import BundleError, export_bundle
from pudding.router.module import RouterModule
from pudding.routerdata.datamodule import RouterDataModule

DEFAULT_BUNDLE = "checkpoints/router/bundle"
DEFAULT_DATASET = "checkpoints/router_dataset"
TRAINER_DEFAULTS = {
    "max_epochs": 3,
    "use_distributed_sampler": False,  # the length-grouped sampler splits batches across ranks itself
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "checkpoints/router", "name": "tensorboard"},
    },
    "callbacks": [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"monitor": "val/regret", "mode": "min", "save_top_k": 1, "filename": "best-{epoch:02d}"},
        },
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        {"class_path": "lightning.pytorch.callbacks.TQDMProgressBar", "init_args": {"refresh_rate": 20}},
    ],
}


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
        parser.set_defaults({"data.datasets": [DEFAULT_DATASET]})
        parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})

    def before_fit(self) -> None:
        bundle = self._get(self.config, "bundle")
        if bundle and Path(bundle).exists() and not self._get(self.config, "overwrite_bundle"):
            raise BundleError(f"bundle folder {bundle} exists; pass --overwrite_bundle true to replace it")

    def after_fit(self) -> None:
        bundle = self._get(self.config, "bundle")
        if not bundle or not self.trainer.is_global_zero or self.trainer.interrupted:
            return
        callback = self.trainer.checkpoint_callback
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
        )
        source = best or "the final weights"
        print(f"pudding-train: router bundle written to {path} (from {source})", file=sys.stderr)


def run_cli(args: list[str]) -> RouterCLI:
    return RouterCLI(
        RouterModule,
        RouterDataModule,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
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
    opts = parser.parse_args(args)
    checkpoint = Path(opts.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    if Path(opts.output).exists() and not opts.overwrite:
        raise BundleError(f"bundle folder {opts.output} exists; pass --overwrite to replace it")
    module = RouterModule.load_from_checkpoint(str(checkpoint), map_location="cpu", pretrained=False)
    if module.head is None:
        raise BundleError(f"checkpoint {checkpoint} was not written by pudding-train (no router candidates in it)")
    config_file = checkpoint.parent.parent / "config.yaml"  # LightningCLI saves the run config beside checkpoints/
    config = config_file.read_text() if config_file.is_file() else None
    path = export_bundle(module, opts.output, checkpoint=checkpoint, training_config=config, overwrite=opts.overwrite)
    print(f"pudding-train: router bundle written to {path} (from {checkpoint})", file=sys.stderr)


def _is_project_error(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, FileExistsError)):
        return True
    return isinstance(exc, ValueError) and type(exc).__module__.startswith("pudding")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("PUDDING_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    saved_argv = sys.argv
    sys.argv = sys.argv[:1]  # LightningCLI reads args= only; keep it from warning about sys.argv too
    try:
        if args and args[0] == "export":
            export_main(args[1:])
        else:
            run_cli(args)
    except Exception as exc:
        if debug or not _is_project_error(exc):
            raise
        message = " ".join(str(exc).split())
        print(f"pudding-train: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    main()
