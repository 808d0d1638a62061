"""The router dataset on disk: a ``datasets`` Arrow dataset plus a ``pudding_meta.json`` sidecar in its folder.

Columns: ``task``, ``item_id``, ``router_text`` (the prompt without the answer: what the router reads), ``scores``
(K float32: per candidate, the gold continuation's per-token mean log-likelihood with that omission set) and
``dense_score`` (the same for the unpruned model). Rows are in task order, then the task's source order. Scores are
stored as float32 (a resolution of ~5e-7 nats, far below any dtype effect), which halves the released scores file
and lets a dataset rebuilt from it equal the original bit for bit.

A build with ``all_choices`` (every answer choice scored; metadata ``all_choices: true``) adds
:data:`CHOICE_COLUMNS`: per candidate (K) and for the dense model (``dense_`` prefix), ``posterior`` (float32: the
gold answer's log-probability among the item's choices, a log-softmax over their summed log-likelihoods), ``correct``
(bool: ``acc`` picks the gold answer) and ``posterior_norm`` / ``correct_norm`` (the same over length-normalised
log-likelihoods, as ``acc_norm`` judges, for the tasks that report ``acc_norm``; equal to the ``acc`` pair for the
others). Datasets without them load as before; they just cannot serve those targets.

The metadata lives in a sidecar file rather than in ``info.description`` so a person can read it with any tool; it
names the base model, the candidate file and its sha256, the omission sets in column order of ``scores``, and where
each task's items came from. A dataset is written to a temporary folder and renamed into place, so its path never
holds a half-written dataset.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from datasets import (
    Dataset,
    Features,
    List,
    Value,
    are_progress_bars_disabled,
    disable_progress_bars,
    enable_progress_bars,
    load_from_disk,
)

from pudding.core.errors import OutputError, PuddingError
from pudding.core.io import atomic_folder, atomic_write_json

META_FILE = "pudding_meta.json"
DATASET_FORMAT = 2
"""2: float32 scores and per-task ``items_sha256`` in the metadata (1: float64, no digests)."""
TARGET = "per-token mean log-likelihood of the gold continuation (lm-eval tokenisation), per candidate"
BASE_COLUMNS = ("task", "item_id", "router_text", "scores", "dense_score")
CHOICE_METRICS = ("posterior", "posterior_norm", "correct", "correct_norm")
"""The all-choice values of a set on an item (see the module docstring)."""
CHOICE_COLUMNS = tuple(name for metric in CHOICE_METRICS for name in (metric, f"dense_{metric}"))
"""The columns an ``all_choices`` build adds: each of :data:`CHOICE_METRICS` per candidate ([K]) and dense."""
CHOICE_TARGETS = {
    "posterior": "log-probability of the gold answer among the choices (log-softmax of summed log-likelihoods)",
    "posterior_norm": "as posterior, over length-normalised log-likelihoods where the task reports acc_norm",
    "correct": "acc picks the gold answer",
    "correct_norm": "acc_norm picks the gold answer where the task reports it, else acc",
}


class RouterDataError(PuddingError):
    """A router dataset that cannot be used (missing, malformed, or incompatible with the others)."""


def features(num_candidates: int, all_choices: bool = False) -> Features:
    spec = {
        "task": Value("string"),
        "item_id": Value("string"),
        "router_text": Value("string"),
        "scores": List(Value("float32"), length=num_candidates),
        "dense_score": Value("float32"),
    }
    if all_choices:
        for name in CHOICE_COLUMNS:
            kind = Value("bool") if "correct" in name else Value("float32")
            spec[name] = kind if name.startswith("dense_") else List(kind, length=num_candidates)
    return Features(spec)


def has_choice_columns(columns: dict | list) -> bool:
    """Whether a dataset's columns (names, or a name → values mapping) hold every all-choice column."""
    return all(name in columns for name in CHOICE_COLUMNS)


def make_dataset(columns: dict[str, list], num_candidates: int) -> Dataset:
    """Columns → Arrow dataset with fixed-length ``scores`` (K is checked by Arrow as well as by us); the all-choice
    columns are kept when every one of them is given."""
    finite = 0
    for i, row in enumerate(columns["scores"]):
        if len(row) != num_candidates:
            raise RouterDataError(f"row {i}: {len(row)} scores, expected K={num_candidates}")
        finite += all(math.isfinite(s) for s in row)
    if columns["scores"] and not finite:  # a few non-finite rows are dropped (with a count) when training
        raise RouterDataError(
            f"none of the {len(columns['scores'])} rows has finite scores for every candidate (row 0, "
            f"{columns['task'][0]}/{columns['item_id'][0]}: {list(columns['scores'][0])})"
        )
    choices = has_choice_columns(columns)
    names = [*BASE_COLUMNS, *(CHOICE_COLUMNS if choices else ())]
    return Dataset.from_dict({n: columns[n] for n in names}, features=features(num_candidates, choices))


def save_dataset(dataset: Dataset, meta: dict, output: str | Path, overwrite: bool = False) -> Path:
    """Write dataset + metadata to a temporary sibling folder, then rename it to ``output``.

    An existing ``output`` is replaced only with ``overwrite``; it is moved aside first and deleted after the new
    one is in place, so a crash leaves either the old or the new dataset (plus a ``.old-*`` folder), never a mix.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; pass overwrite=True (--overwrite true) to replace it")
    with atomic_folder(output) as tmp:
        quiet = are_progress_bars_disabled()
        disable_progress_bars()
        try:
            dataset.save_to_disk(str(tmp))
        finally:
            if not quiet:
                enable_progress_bars()
        atomic_write_json(tmp / META_FILE, meta)
    return output


def read_meta(path: str | Path) -> dict:
    """The metadata of a router dataset folder, or a clear error when it is not one."""
    path = Path(path)
    meta_file = path / META_FILE
    if not path.is_dir():
        raise RouterDataError(f"router dataset {path} does not exist (build it with `pudding dataset`)")
    if not meta_file.is_file():
        raise RouterDataError(f"{path} is not a router dataset: {META_FILE} is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise RouterDataError(f"{meta_file}: not valid JSON ({exc})") from exc
    for key in ("candidates_sha256", "num_candidates", "omission_sets", "base_model"):
        if key not in meta:
            raise RouterDataError(f"{meta_file}: field {key!r} is missing")
    return meta


def load_router_dataset(path: str | Path) -> tuple[Dataset, dict]:
    """Load a dataset written by ``pudding dataset`` and its metadata; checks K against the metadata."""
    meta = read_meta(path)
    dataset = load_from_disk(str(path))
    wanted = {*BASE_COLUMNS, *(CHOICE_COLUMNS if meta.get("all_choices") else ())}
    missing = wanted - set(dataset.column_names)
    if missing:
        raise RouterDataError(f"{path}: columns {sorted(missing)} are missing")
    k = meta["num_candidates"]
    if len(meta["omission_sets"]) != k:
        raise RouterDataError(f"{path}: metadata lists {len(meta['omission_sets'])} omission sets but says K={k}")
    feature = dataset.features["scores"]
    width = getattr(feature, "length", -1)
    if width not in (-1, None) and width != k:
        raise RouterDataError(f"{path}: scores have {width} columns but the metadata says K={k} candidates")
    return dataset, meta
