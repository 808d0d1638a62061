"""The candidate-file format: the small set of omission sets a router chooses among.

Written by ``pudding candidates``, read by ``pudding eval --candidates``, ``pudding dataset`` and the router. It is
plain YAML so a person can read which blocks each candidate drops and why. Loading validates everything a later
stage relies on and names the file and the candidate when something is wrong.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from pudding.errors import PuddingError
from pudding.io import atomic_write_text
from pudding.models.omission import OmissionError, validate_omission


class CandidateFileError(PuddingError):
    """A candidate file that cannot be used, with the file and field named."""


@dataclass(frozen=True)
class Candidate:
    """One omission set: blocks in removal order, the (task, loss) that produced it, the loss after each step.

    ``also_from`` lists other ``task/loss`` runs whose search ended in the same set of blocks (merged).
    """

    omit: tuple[int, ...]
    task: str
    loss: str
    step_losses: tuple[float, ...] = ()
    also_from: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.task}/{self.loss}"


@dataclass(frozen=True)
class CandidateSet:
    """Every candidate found for one base model, plus how the search was run."""

    base_model: str
    num_blocks: int
    num_omit: int
    candidates: tuple[Candidate, ...]
    search: dict = field(default_factory=dict)

    @property
    def omission_sets(self) -> list[tuple[int, ...]]:
        """The candidates' omission sets, sorted within each set, in candidate order."""
        return [tuple(sorted(c.omit)) for c in self.candidates]

    def __len__(self) -> int:
        return len(self.candidates)

    def to_dict(self) -> dict:
        return {
            "base_model": self.base_model,
            "num_blocks": self.num_blocks,
            "num_omit": self.num_omit,
            "search": dict(self.search),
            "candidates": [
                {**asdict(c), "omit": list(c.omit), "step_losses": list(c.step_losses), "also_from": list(c.also_from)}
                for c in self.candidates
            ],
        }

    def save(self, path: str | Path) -> None:
        """Write the file atomically (a reader never sees half of it)."""
        validate(self, str(path))
        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))


def merge_identical(candidates: list[Candidate]) -> list[Candidate]:
    """Keep the first candidate of every distinct *set* of blocks; later duplicates go into its ``also_from``."""
    merged: dict[frozenset[int], Candidate] = {}
    for cand in candidates:
        key = frozenset(cand.omit)
        if key in merged:
            first = merged[key]
            also = (*first.also_from, cand.name)
            merged[key] = Candidate(first.omit, first.task, first.loss, first.step_losses, also)
        else:
            merged[key] = cand
    return list(merged.values())


def validate(cset: CandidateSet, source: str = "<candidates>") -> None:
    """Raise :class:`CandidateFileError` unless every set has the same size, valid distinct indices, and K ≥ 2.

    Block indices are checked by :func:`pudding.models.omission.validate_omission`, the one validator of the package
    (an int in range, not a bool, no repeats, at least one block left).
    """
    if cset.num_blocks < 2:
        raise CandidateFileError(f"{source}: num_blocks must be at least 2, got {cset.num_blocks}")
    if len(cset.candidates) < 2:
        raise CandidateFileError(f"{source}: needs at least 2 candidates for a router to choose from, has {len(cset)}")
    for i, cand in enumerate(cset.candidates):
        where = f"{source}: candidates[{i}] ({cand.name})"
        if len(cand.omit) != cset.num_omit:
            raise CandidateFileError(f"{where}: omits {len(cand.omit)} blocks, but num_omit is {cset.num_omit}")
        try:
            validate_omission(cand.omit, cset.num_blocks)
        except OmissionError as exc:
            raise CandidateFileError(f"{where}: field 'omit': {exc}") from None
    seen: dict[frozenset[int], int] = {}
    for i, key in enumerate(frozenset(c.omit) for c in cset.candidates):
        if key in seen:
            raise CandidateFileError(f"{source}: candidates[{i}] repeats the omission set of candidates[{seen[key]}]")
        seen[key] = i


def _require(mapping: dict, key: str, kind: type | tuple[type, ...], where: str):
    if key not in mapping:
        raise CandidateFileError(f"{where}: missing field {key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CandidateFileError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def load_candidates(path: str | Path) -> CandidateSet:
    """Read and validate a candidate file (YAML or JSON)."""
    path = Path(path)
    if not path.is_file():
        raise CandidateFileError(f"candidate file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CandidateFileError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise CandidateFileError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    where = str(path)
    entries = _require(raw, "candidates", list, where)
    candidates = []
    for i, entry in enumerate(entries):
        at = f"{where}: candidates[{i}]"
        if not isinstance(entry, dict):
            raise CandidateFileError(f"{at}: expected a mapping, got {entry!r}")
        omit = _require(entry, "omit", list, at)
        candidates.append(
            Candidate(
                omit=tuple(omit),
                task=str(entry.get("task", "?")),
                loss=str(entry.get("loss", "?")),
                step_losses=tuple(float(x) for x in entry.get("step_losses", []) or []),
                also_from=tuple(entry.get("also_from", []) or []),
            )
        )
    cset = CandidateSet(
        base_model=str(_require(raw, "base_model", str, where)),
        num_blocks=_require(raw, "num_blocks", int, where),
        num_omit=_require(raw, "num_omit", int, where),
        candidates=tuple(candidates),
        search=dict(raw.get("search") or {}),
    )
    validate(cset, where)
    return cset


def file_hash(path: str | Path) -> str:
    """sha256 of a candidate file's bytes: recorded by every dataset built from it, so mixes are refused."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
