"""``pudding release``: package a built candidate file and router dataset as a release folder (no benchmark text).

    pudding release --config configs/release.yaml

writes ``checkpoints/release/`` — the candidate file, the router scores as Parquet and a manifest (hashes, dtype,
versions, headroom, the commands that produced them) — so a new machine rebuilds the router dataset in seconds with
``pudding dataset --scores checkpoints/release/router_scores.parquet --data_dir ...`` instead of hours of scoring.

    pudding release --config configs/release_bundle.yaml

releases a router bundle instead: copied to ``checkpoints/release/bundle_self/`` (the bundle the name ``default``
resolves to) with a ``manifest.yaml`` saying how it was made (:mod:`pudding.router.release`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pudding.cli.parse import parse_options
from pudding.cli.report import run_command
from pudding.core.errors import OptionError
from pudding.core.io import OutputOptions, check_output
from pudding.router.bundle import RELEASE_BUNDLE
from pudding.router.release import release_bundle
from pudding.routerdata.release import MANIFEST, write_release


@dataclass
class ReleaseOptions(OutputOptions):
    """Write a release folder from a router dataset and the candidate file it was built from.

    Args:
        output: Release folder to write (``candidates.yaml``, ``router_scores.parquet``, ``manifest.yaml``).
        overwrite: Replace an existing release in ``output``.
        dataset: Router dataset written by ``pudding dataset`` (its metadata names the candidate file); null: release
            a bundle only.
        bundle: A router bundle to release as ``<output>/bundle_self`` (what the bundle name ``default`` resolves
            to), with its own ``manifest.yaml``; needs ``dataset`` null (``produced_by`` describes one of the two).
        produced_by: The commands that produced the files, copied into the manifest: a list of mappings such as
            ``{command: ..., seconds: ..., machine: ...}`` (see configs/release.yaml, configs/release_bundle.yaml).
    """

    output: str = "checkpoints/release"
    dataset: str | None = "checkpoints/router_dataset"
    bundle: str | None = None
    produced_by: list[dict] | None = None

    def check(self) -> None:
        if (self.dataset is None) == (self.bundle is None):
            raise OptionError(
                "options dataset and bundle: give one of the two (a bundle is released with --dataset null), "
                f"got dataset={self.dataset!r}, bundle={self.bundle!r}"
            )


def release(opts: ReleaseOptions) -> dict:
    """Check the output, then write the release folder (:func:`pudding.routerdata.release.write_release`) or the
    released bundle (:func:`pudding.router.release.release_bundle`)."""
    if opts.bundle is not None:
        target = Path(opts.output) / RELEASE_BUNDLE
        manifest = release_bundle(opts.bundle, target, opts.produced_by, release=opts.output, overwrite=opts.overwrite)
        fit = manifest["fit"] or {}
        print(f"wrote {target}: {len(manifest['files'])} files, val/regret {fit.get('validation', {}).get('regret')}")
        return manifest
    check_output(Path(opts.output) / MANIFEST, opts.overwrite, option="output")
    manifest = write_release(opts.dataset, opts.output, opts.produced_by, overwrite=opts.overwrite)
    scores = manifest["scores"]
    print(
        f"wrote {opts.output}: {manifest['candidates']['num_candidates']} candidates, {scores['rows']} rows of scores"
    )
    return manifest


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``pudding release``: input errors are one line on stderr and exit code 2."""
    run_command("pudding release", lambda args: release(parse_options(ReleaseOptions, args, "pudding release")), argv)


if __name__ == "__main__":
    main()
