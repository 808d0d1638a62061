"""Checks every command runs before the slow work starts: output paths, block indices, candidate file vs base model.

A bad output path found after an hour of scoring loses the hour; a block index checked only once the model is in
memory costs the load. These checks read nothing heavier than a model's config (or a GGUF header), so each command
calls them first and fails in a second with one line naming the option or file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pudding.candidates import CandidateFileError, CandidateSet, load_candidates
from pudding.errors import OptionError, OutputError
from pudding.models.loading import base_num_blocks, same_base
from pudding.models.omission import OmissionError, validate_omission


def check_output(path: str | os.PathLike[str], overwrite: bool = False, option: str = "output") -> Path:
    """An output path that can be written: its nearest existing parent is a writable folder, and it does not
    exist yet unless ``overwrite``. Returns it as a :class:`Path`."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise OutputError(f"option {option}: {path} exists; pass --overwrite true to replace it, or choose another")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"option {option}: cannot create {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"option {option}: cannot create {path}: folder {parent} is not writable")
    return path


def check_omit(omit: Iterable[int], num_blocks: int, base: str, option: str = "omit") -> tuple[int, ...]:
    """``omit`` validated for a model of ``num_blocks`` blocks (the package's one block-index validator)."""
    try:
        return validate_omission(omit, num_blocks)
    except OmissionError as exc:
        raise OptionError(f"option {option}: {exc} (base model {base!r} has {num_blocks} blocks)") from None


def check_candidates_base(cset: CandidateSet, path: str | os.PathLike[str], base: str, num_blocks: int) -> None:
    """A candidate file is used only with the base model it was searched on: same name, same block count."""
    if not same_base(cset.base_model, base):
        raise CandidateFileError(
            f"{path}: made for base model {cset.base_model!r}, but --base is {base!r}; drop --base to use the file's "
            "model, or pass a candidate file searched on this one"
        )
    if cset.num_blocks != num_blocks:
        raise CandidateFileError(
            f"{path}: field 'num_blocks' is {cset.num_blocks}, but base model {base!r} has {num_blocks} blocks"
        )


def resolve_base(base: str | None, cset: CandidateSet | None, cset_path: str | None, cache_dir: str) -> tuple[str, int]:
    """The base model a command runs (``--base``, else the candidate file's, else ``default``) and its block count,
    checked against the candidate file when there is one. Reads the model's config only."""
    name = base if base is not None else (cset.base_model if cset is not None else "default")
    num_blocks = base_num_blocks(name, cache_dir)
    if cset is not None:
        check_candidates_base(cset, cset_path or "<candidates>", name, num_blocks)
    return name, num_blocks


def check_bundle(bundle: str | os.PathLike[str], base: str | None, cache_dir: str) -> tuple[str, int]:
    """A router bundle with every file present, and the base model it will run on (``base``, else the bundle's) with
    the bundle's block count. Another base model is allowed (a fine-tune, say) only at the same depth. Reads the
    bundle's candidate file and the model's config only."""
    from pudding.router.bundle import CANDIDATES, BundleError, check_bundle_files

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
