"""The released router bundle: a bundle folder in the release folder, with a manifest saying how it was made.

``checkpoints/release/bundle_self/`` (tracked; the name ``default`` resolves to it, :func:`~pudding.router.bundle.
resolve_bundle`) is an ordinary bundle plus ``manifest.yaml``: the base model (and its file's sha256), the router
(encoder, pooling, head, K, feature dtype), the candidate file's sha256 and whether it is the release's, the router
data it was fitted on (build key, dtype, rows), the fit's validation metrics at the exported epoch (read from the
run's TensorBoard event files), package versions, the commands that made it (``produced_by``: command, seconds,
machine, given by whoever ran them), when and on what machine the manifest was written, the training config's file,
and the sha256 of every file of the bundle.
:func:`check_bundle_manifest` verifies a folder against it.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pudding.core.candidates import file_hash
from pudding.core.errors import OutputError
from pudding.core.io import atomic_folder, atomic_write_text
from pudding.core.models.dtype import machine
from pudding.router.bundle import (
    CONFIG,
    DATA_META,
    TRAINING_CONFIG,
    BundleError,
    check_bundle_files,
    package_versions,
)
from pudding.routerdata.release import CANDIDATES, ReleaseError, base_model_file, check_produced_by

BUNDLE_MANIFEST = "manifest.yaml"
"""The manifest inside a released bundle folder (not one of the bundle's own files)."""
FIT_TAGS = ("val/regret", "val/regret_acc", "val/selection_acc", "val/gain_vs_static", "val/mse", "val/loss")
"""Validation metrics recorded per epoch by the router's fit (the exported epoch's go into the manifest);
``regret_acc`` where the router data has the all-choice columns."""
REF_TAGS = (
    "ref/val_regret_best_static",
    "ref/val_regret_random",
    "ref/val_regret_acc_best_static",
    "ref/val_regret_acc_random",
)
"""Reference regrets on the same validation rows (logged once: they do not depend on the epoch)."""


def bundle_files(folder: Path) -> dict[str, str]:
    """sha256 of every file of a bundle folder (relative names, sorted), its manifest excepted."""
    return {
        path.relative_to(folder).as_posix(): file_hash(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != BUNDLE_MANIFEST
    }


def fit_metrics(config: dict) -> dict | None:
    """The fit's validation metrics at the exported epoch, from the TensorBoard event files of the run whose
    checkpoint the bundle was exported from (``router.json`` ``checkpoint``: ``<run>/checkpoints/<name>.ckpt``);
    None when that run's files are not at hand."""
    checkpoint = config.get("checkpoint")
    run = Path(checkpoint).parent.parent if checkpoint else None
    if run is None or not any(run.glob("events.out.tfevents.*")):
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])

    def series(tag: str) -> list[float]:
        return [v for _, v in sorted({e.step: e.value for e in events.Scalars(tag)}.items())] if tag in tags else []

    regret = series("val/regret")
    if not regret:
        return None
    found = re.search(r"epoch=(\d+)", Path(checkpoint).name)
    epoch = int(found.group(1)) if found else min(range(len(regret)), key=regret.__getitem__)

    def at(tag: str) -> float | None:
        values = series(tag)
        return round(float(values[epoch]), 6) if epoch < len(values) else None

    zeroshot = sorted(t for t in tags if t.startswith(("zeroshot/", "zeroshot_ref/")))
    return {
        "run": run.name,
        "checkpoint": Path(checkpoint).name,
        "epoch": epoch,
        "epochs": len(regret),
        "validation": {tag.split("/", 1)[1]: at(tag) for tag in FIT_TAGS if tag in tags},
        "references": {tag.split("/", 1)[1]: round(float(series(tag)[-1]), 6) for tag in REF_TAGS if tag in tags},
        "zeroshot": {tag: at(tag) for tag in zeroshot} or None,
    }


def write_bundle_manifest(folder: str | Path, produced_by: list[dict], release: str | Path | None = None) -> dict:
    """Write ``folder``/manifest.yaml for a bundle folder and return it; ``release``: the release folder whose
    candidate file the bundle's is compared with."""
    steps = check_produced_by(produced_by)
    if not steps:
        raise ReleaseError("option produced_by: say which commands made the bundle (command, seconds, machine)")
    folder = check_bundle_files(folder)
    config = json.loads((folder / CONFIG).read_text())
    meta = json.loads((folder / DATA_META).read_text())
    candidates_sha = file_hash(folder / CANDIDATES)
    released = Path(release) / CANDIDATES if release is not None else None
    described = config.get("self") or {}
    manifest = {
        "what": "a released pudding router bundle (router.json, weights, candidate file) and how it was made",
        "base_model": config["base_model"],
        "base_model_file": base_model_file(config["base_model"]),
        "num_blocks": config["num_blocks"],
        "router": {
            "encoder": config["encoder"],
            "pooling": config["pooling"],
            "keep_first": described.get("keep_first"),
            "head_hidden": described.get("head_hidden"),
            "features_dtype": described.get("dtype"),
            "num_candidates": config["num_candidates"],
            "dense_choice": config["dense_choice"],
            "budget": config["budget"],
        },
        "candidates": {
            "file": CANDIDATES,
            "sha256": candidates_sha,
            "same_as_release": released is not None and released.is_file() and file_hash(released) == candidates_sha,
            "names": config["candidate_names"],
        },
        "router_data": {
            "build_key": meta.get("build_key"),
            "dtype": meta.get("dtype"),
            "rows": meta.get("num_rows"),
            "tasks": meta.get("tasks"),
            "router_fraction": meta.get("router_fraction"),
            "split_seed": meta.get("split_seed"),
        },
        "fit": fit_metrics(config),
        "versions": package_versions(),
        "produced_by": steps,
        "training_config": TRAINING_CONFIG if (folder / TRAINING_CONFIG).is_file() else None,
        "written_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "written_on": machine(),
        "files": bundle_files(folder),
    }
    atomic_write_text(folder / BUNDLE_MANIFEST, yaml.safe_dump(manifest, sort_keys=False, width=120))
    return manifest


def release_bundle(
    bundle: str | Path, output: str | Path, produced_by: list[dict], release: str | Path, overwrite: bool = False
) -> dict:
    """Copy the bundle folder ``bundle`` to ``output`` (nothing to copy when they are the same folder) and write
    its manifest there; returns the manifest."""
    source, output = check_bundle_files(bundle), Path(output)
    check_produced_by(produced_by)
    if source.resolve() != output.resolve():
        if output.exists() and not overwrite:
            raise OutputError(f"{output} exists; pass --overwrite true to replace the released bundle")
        with atomic_folder(output) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            (tmp / BUNDLE_MANIFEST).unlink(missing_ok=True)
    return write_bundle_manifest(output, produced_by, release=release)


def check_bundle_manifest(folder: str | Path) -> dict:
    """Verify that a released bundle's files are those its manifest lists (same names, same sha256)."""
    folder = check_bundle_files(folder)
    path = folder / BUNDLE_MANIFEST
    if not path.is_file():
        raise BundleError(f"{path} does not exist (not a released bundle)")
    manifest = yaml.safe_load(path.read_text())
    listed = (manifest or {}).get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict):
        raise BundleError(f"{path}: no files mapping")
    found = bundle_files(folder)
    for name in sorted(set(listed) | set(found)):
        if name not in found:
            raise BundleError(f"{path}: file {name} is missing from the bundle")
        if name not in listed:
            raise BundleError(f"{path}: file {name} of the bundle is not listed")
        if found[name] != listed[name]:
            raise BundleError(f"{folder / name}: sha256 differs from {path} (files.{name})")
    return manifest
