"""``pudding release``: package a built candidate file and router dataset as a release folder (no benchmark text).

    pudding release --config configs/release.yaml

writes ``checkpoints/release/`` — the candidate file, the router scores as Parquet and a manifest (hashes, dtype,
versions, headroom, the commands that produced them) — so a new machine rebuilds the router dataset in seconds with
``pudding dataset --scores checkpoints/release/router_scores.parquet --data_dir ...`` instead of hours of scoring.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import CLI

from pudding.checks import check_output
from pudding.errors import run_command
from pudding.release import MANIFEST, write_release


def release(
    dataset: str = "checkpoints/router_dataset",
    output: str = "checkpoints/release",
    produced_by: list[dict] | None = None,
    overwrite: bool = False,
) -> dict:
    """Write a release folder from a router dataset and the candidate file it was built from.

    Args:
        dataset: Router dataset written by ``pudding dataset`` (its metadata names the candidate file).
        output: Release folder to write (``candidates.yaml``, ``router_scores.parquet``, ``manifest.yaml``).
        produced_by: The commands that produced the files, copied into the manifest: a list of mappings such as
            ``{command: ..., seconds: ..., machine: ...}`` (see configs/release.yaml).
        overwrite: Replace an existing release in ``output``.
    """
    check_output(Path(output) / MANIFEST, overwrite, option="output")
    manifest = write_release(dataset, output, produced_by, overwrite=overwrite)
    scores = manifest["scores"]
    print(f"wrote {output}: {manifest['candidates']['num_candidates']} candidates, {scores['rows']} rows of scores")
    return manifest


def main(argv: list[str] | None = None) -> None:
    run_command("pudding release", lambda args: CLI(release, args=args), argv)


if __name__ == "__main__":
    main()
