"""A trained router as one self-contained folder: what routed inference needs, without the dataset or the run.

Layout (all written to a temporary sibling folder, then renamed into place; an existing bundle is replaced only
with ``overwrite``)::

    router.safetensors   encoder + head weights
    router.json          router config (encoder name, pooling, K, init args), candidate names and omission sets,
                         best static candidate (overall and per depth), base model name and block count, candidate
                         hash, package versions
    encoder/             the encoder's config.json and the router tokenizer (weights live in router.safetensors)
    candidates.yaml      the candidate file (a copy of the dataset's when it is found with the recorded hash,
                         else rebuilt from the dataset metadata: same omission sets, names and block count)
    dataset_meta.json    the router dataset's metadata (``candidates_sha256`` included)
    training_config.yaml the training run's full config, when known
    calibration.safetensors  choices of different depths only: the router's predictions and the raw scores on its
                         validation rows, from which a compute budget's λ is found (:mod:`pudding.router.budget`)

``router.json`` lists the router's choices (``candidate_names``, ``omission_sets``, ``blocks_kept``): the candidate
file's, plus the dense model (name ``dense``, omission set ``[]``, last) when ``dense_choice`` is true; its
``budget`` is the default budget of routed inference (null: plain argmax) and ``calibration`` summarises the
calibration file (rows, and per budget λ, mean blocks kept and the realised score on those rows).

The name ``default`` (:data:`DEFAULT_BUNDLE`) is the released ``self`` router of the default base model,
``checkpoints/release/bundle_self/`` (:func:`resolve_bundle`): every function here that takes a bundle folder, and
:meth:`pudding.routed.model.PuddingModel.from_pretrained`, accept it.

A ``self`` router bundle (``encoder: self``) holds the head weights only: ``encoder/config.json`` then describes the
features instead of a text encoder (``"encoder": "self"``, pooling, ``keep_first``, base model name, block count,
hidden size, dtype), and ``router.json`` repeats it under ``self``. Its router needs the base LLM to route text, so
:func:`load_bundle` takes the loaded base model (``lm``); without one it loads the recorded base on first use.

:func:`load_bundle` checks the pieces agree (K of the router, of router.json and of the candidate file; the base
model's block count when given) and fails with one line naming both sides.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from safetensors.torch import load_file

from pudding.core.candidates import Candidate, CandidateSet, Choices, file_hash, load_candidates
from pudding.core.errors import PuddingError
from pudding.core.io import atomic_folder, atomic_save_safetensors, atomic_write_json
from pudding.core.models.loading import base_num_blocks
from pudding.router.budget import ARGMAX, CALIBRATION, Calibration, calibrate, parse_budget

BUNDLE_FORMAT = 1
WEIGHTS = "router.safetensors"
CONFIG = "router.json"
ENCODER_DIR = "encoder"
CANDIDATES = "candidates.yaml"
DATA_META = "dataset_meta.json"
TRAINING_CONFIG = "training_config.yaml"
REQUIRED = (WEIGHTS, CONFIG, f"{ENCODER_DIR}/config.json", CANDIDATES, DATA_META)
INIT_KEYS = ("pooling", "dropout", "max_length", "head_hidden")
"""The training arguments (``router.json`` ``init_args``) that shape the :class:`~pudding.router.model.Router`."""
CHECKPOINT_PREFIX = "router."
"""Where a training checkpoint keeps the router's weights (the ``router`` of a ``RouterModule``)."""
VERSIONED = ("pudding", "torch", "lightning", "transformers", "torchmetrics", "safetensors")
DEFAULT_BUNDLE = "default"
"""The name of the released router bundle (the default base model's ``self`` router), usable wherever a bundle
folder is asked for; it takes precedence over a folder of that name in the working directory."""
RELEASE_BUNDLE = "bundle_self"
"""The released bundle's folder inside the release folder (``checkpoints/release/``)."""
RELEASE_ENV = "PUDDING_RELEASE"
"""Environment variable naming the release folder, for an install that does not carry it (non-editable)."""


class BundleError(PuddingError):
    """A bundle that cannot be written or used: missing file, mismatch (both sides named), existing output."""


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def router_state(router) -> dict[str, torch.Tensor]:
    """The weights a bundle keeps: the :class:`~pudding.router.model.Router`'s encoder and head."""
    return {
        k: v.detach().cpu().contiguous() for k, v in router.state_dict().items() if k.startswith(("encoder.", "head."))
    }


def candidate_set_from_meta(meta: dict) -> CandidateSet:
    """Rebuild the candidate file from a router dataset's metadata (omission sets, names, base model, blocks)."""
    if "num_blocks" not in meta:
        raise BundleError("dataset metadata has no num_blocks, so the candidate file cannot be rebuilt")
    sets = meta["omission_sets"]
    names = meta.get("candidate_names") or [f"candidate{i}/?" for i in range(len(sets))]
    candidates = []
    for name, omit in zip(names, sets, strict=True):
        run, at, depth = str(name).rpartition("@")
        task, _, loss = (run if at and depth.isdigit() else str(name)).partition("/")  # task/loss@depth: several
        candidates.append(Candidate(omit=tuple(int(b) for b in omit), task=task, loss=loss or "?"))
    return CandidateSet(
        base_model=str(meta.get("candidates_base_model") or meta["base_model"]),
        num_blocks=int(meta["num_blocks"]),
        num_omit=max((len(s) for s in sets), default=0),  # the largest depth, in a file of several
        candidates=tuple(candidates),
        search={"rebuilt_from": "router dataset metadata"},
    )


def _write_candidates(meta: dict, target: Path) -> str:
    """Copy the dataset's candidate file when it is there with the recorded hash; else rebuild it. Returns how."""
    source = meta.get("candidates_file")
    if source and Path(source).is_file() and file_hash(source) == meta.get("candidates_sha256"):
        shutil.copyfile(source, target)
        return "copy"
    candidate_set_from_meta(meta).save(target)
    return "rebuilt"


def export_bundle(
    module,
    output: str | Path,
    checkpoint: str | Path | None = None,
    training_config: str | None = None,
    overwrite: bool = False,
    datamodule=None,
    budget: float | str | None = None,
) -> Path:
    """Write the router of ``module`` (a :class:`~pudding.router.module.RouterModule`; with the weights of
    ``checkpoint`` when given) as a bundle folder at ``output``; its training arguments are recorded beside it.

    When the router's choices differ in depth (a dense choice, or candidates of several depths) and ``datamodule``
    (its set-up :class:`~pudding.router.data.RouterDataModule`) is given, those weights are run over its validation
    rows and the budget calibration is written. ``budget`` is recorded as the bundle's default budget (None or
    ``argmax``: plain argmax); it is checked against the calibration before anything is written.
    """
    output = Path(output)
    budget = parse_budget(budget)
    budget = None if budget == ARGMAX else budget
    if output.exists() and not overwrite:
        raise BundleError(f"bundle folder {output} exists; pass overwrite (--overwrite_bundle true) to replace it")
    router = module.router
    if router.head is None:
        raise BundleError("the router has no head (K unknown): set it up with its dataset or load a checkpoint first")
    state = router_state(router)
    is_self = router.is_self
    if checkpoint:
        saved = torch.load(str(checkpoint), map_location="cpu", weights_only=False)["state_dict"]
        missing = sorted(k for k in state if CHECKPOINT_PREFIX + k not in saved)
        if missing:
            raise BundleError(f"checkpoint {checkpoint} lacks router weights {missing[:3]} of this router")
        state = {k: saved[CHECKPOINT_PREFIX + k].detach().cpu().contiguous() for k in state}
    meta = dict(router.data_meta)
    hparams = {k: v for k, v in dict(module.hparams).items() if not k.startswith("_")}
    calibration = bundle_calibration(router, state, datamodule) if datamodule is not None else None
    saved = (router.calibration, router.budget, router.route_lambda)
    try:
        router.calibration = calibration
        router.set_budget(budget)  # a default the bundle cannot honour is refused now, not at load time
    finally:
        router.calibration, router.budget, router.route_lambda = saved
    with atomic_folder(output) as tmp:
        atomic_save_safetensors(tmp / WEIGHTS, state)
        if is_self:
            (tmp / ENCODER_DIR).mkdir()
            atomic_write_json(tmp / ENCODER_DIR / "config.json", self_description(router))
        else:
            router.encoder.config.save_pretrained(str(tmp / ENCODER_DIR))
            router.tokenizer.save_pretrained(str(tmp / ENCODER_DIR))
        how = _write_candidates(meta, tmp / CANDIDATES) if meta else None
        if how is None:
            raise BundleError("the router has no dataset metadata (candidate file unknown); export needs it")
        cset = load_candidates(tmp / CANDIDATES)
        atomic_write_json(tmp / DATA_META, meta)
        if calibration is not None:
            calibration.save(tmp / CALIBRATION)
        if training_config:
            (tmp / TRAINING_CONFIG).write_text(training_config)
        atomic_write_json(
            tmp / CONFIG,
            {
                "format": BUNDLE_FORMAT,
                "encoder": hparams.get("encoder"),
                "pooling": hparams.get("pooling"),
                "num_candidates": router.num_candidates,
                "hidden_size": router.encoder.out_features if is_self else router.encoder.config.hidden_size,
                "self": self_description(router) if is_self else None,
                "init_args": hparams,
                "candidate_names": router.candidate_names,
                "omission_sets": router.omission_sets,
                "dense_choice": router.dense_choice,
                "blocks_kept": [cset.num_blocks - len(s) for s in router.omission_sets],
                "budget": budget,
                "calibration": calibration.summary() if calibration is not None else None,
                "best_static": router.best_static,
                "best_static_by_depth": {str(d): i for d, i in sorted(router.best_static_by_depth.items())} or None,
                "best_static_by_task": dict(router.best_static_by_task) or None,
                "base_model": cset.base_model,
                "num_blocks": cset.num_blocks,
                "candidates_sha256": meta.get("candidates_sha256"),
                "candidate_file": how,
                "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                "versions": package_versions(),
            },
        )
    return output


def bundle_calibration(router, state: dict[str, torch.Tensor], datamodule):
    """The budget calibration of ``router`` with the weights ``state`` on ``datamodule``'s validation rows, or None
    when its choices all keep the same number of blocks (a budget would change nothing). The router's own weights
    are put back afterwards."""
    if not router.depths_differ:
        return None
    data = datamodule.choices
    if data.omission_sets != router.choices.omission_sets:
        raise BundleError(
            f"the router's {router.num_candidates} choices differ from the router data's {len(data)} "
            f"({list(data.names)}); calibrate it on the data it was trained on (same dense_choice)"
        )
    current = router_state(router)
    router.load_state_dict(state, strict=False)
    try:
        return calibrate(router, datamodule)
    finally:
        router.load_state_dict(current, strict=False)


def self_description(router) -> dict:
    """What a ``self`` router needs to find its features again: base model, blocks, keep_first, pooling, dtype."""
    info = router.encoder.info
    return {
        "encoder": "self",
        "pooling": router.encoder.pooling,
        "keep_first": int(info["keep_first"]),
        "base_model": info["base_model"],
        "num_blocks": info.get("num_blocks"),
        "hidden_size": int(info["hidden_size"]),
        "dtype": info.get("dtype"),
        "head_hidden": list(router.head_hidden),
    }


def head_rows(state: dict[str, torch.Tensor]) -> int | None:
    """Outputs (K) of the head's last Linear in a router state dict (``head.weight`` or ``head.<i>.weight``)."""
    keys = [k for k in state if k.startswith("head.") and k.endswith(".weight")]
    if not keys:
        return None
    last = max(keys, key=lambda k: -1 if k == "head.weight" else int(k.split(".")[1]))
    return int(state[last].shape[0])


def release_folders() -> list[Path]:
    """Where the release folder is looked for: ``$PUDDING_RELEASE`` alone when it is set; else the source tree's
    ``checkpoints/release`` (a clone, an editable install, ``PYTHONPATH``), then the working directory's (a
    non-editable install run from a clone: the wheel carries the package only)."""
    if os.environ.get(RELEASE_ENV):
        return [Path(os.environ[RELEASE_ENV]).expanduser()]
    source = Path(__file__).resolve().parents[2] / "checkpoints" / "release"
    here = Path.cwd() / "checkpoints" / "release"
    return [source] if source.resolve() == here.resolve() else [source, here]


def resolve_bundle(bundle: str | os.PathLike[str]) -> Path:
    """The folder of a bundle: ``default`` is the released bundle (:data:`RELEASE_BUNDLE` in the first of
    :func:`release_folders` that holds it; relative to the working directory when below it); anything else is a
    path, returned as it is."""
    if str(bundle) != DEFAULT_BUNDLE:
        return Path(bundle)
    looked = [folder / RELEASE_BUNDLE for folder in release_folders()]
    for path in looked:
        if (path / CONFIG).is_file():
            try:
                return path.resolve().relative_to(Path.cwd().resolve())
            except ValueError:
                return path
    raise BundleError(
        f"router bundle 'default' (the released {RELEASE_BUNDLE}) is not in {' nor '.join(map(str, looked))}; "
        f"run from a clone of pudding or set {RELEASE_ENV} to its checkpoints/release"
    )


def check_bundle_files(folder: str | os.PathLike[str]) -> Path:
    """The bundle folder (``default``: the released one) exists and holds every required file (a cheap check
    commands run before loading models); returns the folder."""
    folder = resolve_bundle(folder)
    if not folder.is_dir():
        raise BundleError(f"router bundle {folder} does not exist")
    for name in REQUIRED:
        if not (folder / name).is_file():
            raise BundleError(f"router bundle {folder}: file {name} is missing")
    return folder


def load_bundle(folder: str | Path, base_num_blocks: int | None = None, lm=None, budget: float | str | None = None):
    """A ready :class:`~pudding.router.model.Router` (``predict_texts`` / ``route_texts``, eval mode, CPU) and its
    ``router.json`` metadata, from a bundle ``folder`` (``default``: the released one, :func:`resolve_bundle`).

    Checks: every required file is present; K of the weights, of router.json and of the candidate file (plus the
    dense choice, when the router has one) agree; and, given ``base_num_blocks`` (the base model's decoder block
    count), that it equals the candidate file's. ``lm`` (a loaded :class:`~pudding.core.models.loading.BaseModel`) is
    what a ``self`` router reads its features from (checked against the recorded hidden size and block count); text
    routers ignore it. ``budget``: route under this compute budget (:mod:`pudding.router.budget`); None: the
    bundle's default budget (router.json ``budget``; null there is plain argmax); ``argmax``: plain argmax.
    """
    from pudding.router.model import Router

    budget = parse_budget(budget)
    folder = check_bundle_files(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{folder / CONFIG}: not valid JSON ({exc})") from exc
    cset = load_candidates(folder / CANDIDATES)
    k = int(config["num_candidates"])
    dense = bool(config.get("dense_choice"))
    if len(cset) + dense != k:
        plus = " plus the dense choice" if dense else ""
        raise BundleError(
            f"router bundle {folder}: the router has K={k} outputs, {CANDIDATES} has {len(cset)} candidates{plus}"
        )
    sets = [sorted(s) for s in config["omission_sets"]]
    if [list(s) for s in cset.omission_sets] != sets[: len(cset)] or (dense and sets[-1] != []):
        raise BundleError(f"router bundle {folder}: {CONFIG} omission sets differ from those of {CANDIDATES}")
    if base_num_blocks is not None and int(base_num_blocks) != cset.num_blocks:
        raise BundleError(
            f"router bundle {folder}: candidates are for {cset.base_model!r} with {cset.num_blocks} blocks, "
            f"the base model given has {base_num_blocks} blocks"
        )
    state = load_file(str(folder / WEIGHTS))
    rows = head_rows(state)
    if rows != k:
        raise BundleError(f"router bundle {folder}: {WEIGHTS} has a head with {rows} outputs, {CONFIG} says K={k}")
    init = {key: value for key, value in config.get("init_args", {}).items() if key in INIT_KEYS}
    data_meta = json.loads((folder / DATA_META).read_text())
    described = config.get("self")
    if described:
        init["head_hidden"] = described["head_hidden"]
        init["pooling"] = described["pooling"]
        data_meta = {**data_meta, "self_features": {**data_meta.get("self_features", {}), **described}}
        encoder = "self"
    else:
        encoder = str(folder / ENCODER_DIR)
    router = Router(encoder=encoder, pretrained=False, **init)
    choices = Choices.listed(config["candidate_names"], config["omission_sets"], cset.num_blocks, dense)
    router.configure(choices, config["best_static"], data_meta)
    router.best_static_by_depth = {int(d): int(i) for d, i in (config.get("best_static_by_depth") or {}).items()}
    router.best_static_by_task = {t: int(i) for t, i in (config.get("best_static_by_task") or {}).items()}
    missing, unexpected = router.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(
            f"router bundle {folder}: {WEIGHTS} does not fit the encoder config ({missing or unexpected})"
        )
    router.eval()
    if config.get("calibration"):
        path = folder / config["calibration"].get("file", CALIBRATION)
        if not path.is_file():
            raise BundleError(f"router bundle {folder}: file {path.name} is missing ({CONFIG} names it)")
        router.calibration = Calibration.load(path)
    if budget is None:
        budget = parse_budget(config.get("budget"), option=f"budget of {folder / CONFIG}")
    router.set_budget(None if budget in (None, ARGMAX) else budget)
    if described:
        from pudding.router.self_features import keep_first_of

        keep_first_of({"omission_sets": config["omission_sets"]}, {"keep_first": described["keep_first"]})
        if lm is not None:
            router.encoder.attach(lm.model, lm.tokenizer)
    elif lm is not None:
        router.to(lm.device)  # a text router runs where the LLM runs, not on the host beside a GPU's model
    return router, config


def check_bundle(bundle: str | os.PathLike[str], base: str | None, cache_dir: str) -> tuple[str, int]:
    """A router bundle with every file present, and the base model it will run on (``base``, else the bundle's) with
    the bundle's block count. Another base model is allowed (a fine-tune, say) only at the same depth. Reads the
    bundle's candidate file and the model's config only."""
    folder = check_bundle_files(bundle)
    cset = load_candidates(folder / CANDIDATES)
    name = base if base is not None else cset.base_model
    num_blocks = base_num_blocks(name, cache_dir)
    if num_blocks != cset.num_blocks:
        raise BundleError(
            f"router bundle {bundle}: candidates are for {cset.base_model!r} with {cset.num_blocks} blocks, "
            f"base model {name!r} has {num_blocks}; pass the bundle's base model with --base"
        )
    return name, num_blocks
