"""The candidate-file format: the small set of omission sets a router chooses among.

Written by ``pudding candidates``, read by ``pudding eval --candidates``, ``pudding dataset`` and the router. It is
plain YAML so a person can read which blocks each candidate drops and why. Loading validates everything a later
stage relies on and names the file and the candidate when something is wrong.

A file holds candidates of one depth (``num_omit: 7``, names ``task/loss``) or of several depths from the same
searches (``num_omit: [3, 5, 7]``, names ``task/loss@3``): a greedy search removes blocks one at a time, so the first
``d`` blocks of a deeper run are that run's ``d``-block result.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from pudding.core.errors import OptionError, PuddingError
from pudding.core.io import atomic_write_text
from pudding.core.models.loading import base_num_blocks, same_base
from pudding.core.models.omission import OmissionError, validate_omission


class CandidateFileError(PuddingError):
    """A candidate file that cannot be used, with the file and field named."""


@dataclass(frozen=True)
class Candidate:
    """One omission set: blocks in removal order, the (task, loss) that produced it, the loss after each step.

    ``also_from`` lists other ``task/loss`` runs whose search reached the same set of blocks at this depth (merged).
    ``depth_in_name`` is set by :class:`CandidateSet` in a file of several depths, where ``task/loss`` alone would
    name one candidate per depth.
    """

    omit: tuple[int, ...]
    task: str
    loss: str
    step_losses: tuple[float, ...] = ()
    also_from: tuple[str, ...] = ()
    depth_in_name: bool = field(default=False, compare=False, repr=False)

    @property
    def depth(self) -> int:
        """Blocks this candidate omits."""
        return len(self.omit)

    @property
    def run(self) -> str:
        """The ``task/loss`` search that found it."""
        return f"{self.task}/{self.loss}"

    @property
    def name(self) -> str:
        """``task/loss``, or ``task/loss@depth`` in a file of several depths (unique there)."""
        return f"{self.run}@{self.depth}" if self.depth_in_name else self.run

    def to_dict(self) -> dict:
        return {
            "omit": list(self.omit),
            "task": self.task,
            "loss": self.loss,
            "step_losses": list(self.step_losses),
            "also_from": list(self.also_from),
        }


@dataclass(frozen=True)
class CandidateSet:
    """Every candidate found for one base model, plus how the search was run.

    ``num_omit`` is the blocks each candidate omits in a single-depth set, and the largest depth in a set of several
    (see :attr:`depths`); callers that need every candidate's own size use :attr:`Candidate.depth`.
    """

    base_model: str
    num_blocks: int
    num_omit: int
    candidates: tuple[Candidate, ...]
    search: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # names carry the depth exactly when the set has several: ``task/loss`` stays the name in one-depth files
        multi = len({c.depth for c in self.candidates}) > 1
        if any(c.depth_in_name != multi for c in self.candidates):
            tagged = tuple(replace(c, depth_in_name=multi) for c in self.candidates)
            object.__setattr__(self, "candidates", tagged)

    @property
    def depths(self) -> tuple[int, ...]:
        """The distinct candidate sizes (blocks omitted), ascending: one for a single-depth set."""
        return tuple(sorted({c.depth for c in self.candidates}))

    @property
    def multi_depth(self) -> bool:
        return len(self.depths) > 1

    def at_depth(self, depth: int) -> list[Candidate]:
        """The candidates that omit ``depth`` blocks, in file order."""
        return [c for c in self.candidates if c.depth == depth]

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
            "num_omit": list(self.depths) if self.multi_depth else self.num_omit,
            "search": dict(self.search),
            "candidates": [c.to_dict() for c in self.candidates],
        }

    def save(self, path: str | Path) -> None:
        """Write the file atomically (a reader never sees half of it)."""
        validate(self, str(path))
        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))


def merge_identical(candidates: list[Candidate]) -> list[Candidate]:
    """Keep the first candidate of every distinct *set* of blocks; later duplicates' runs go into its ``also_from``.

    Sets of different sizes never coincide, so candidates of several depths are merged within each depth.
    """
    merged: dict[frozenset[int], Candidate] = {}
    for cand in candidates:
        key = frozenset(cand.omit)
        if key in merged:
            first = merged[key]
            merged[key] = replace(first, also_from=(*first.also_from, cand.run))
        else:
            merged[key] = cand
    return list(merged.values())


def validate(cset: CandidateSet, source: str = "<candidates>", depths: tuple[int, ...] | None = None) -> None:
    """Raise :class:`CandidateFileError` unless every set has one of the file's sizes, valid distinct indices, K ≥ 2.

    ``depths`` are the sizes the file declares (default: ``num_omit`` alone in a single-depth set, else the candidates'
    own sizes up to ``num_omit``); every candidate must have one of them and each must have a candidate. Block indices
    are checked by :func:`~pudding.core.models.omission.validate_omission`, the one validator of the package (an int in
    range, not a bool, no repeats, at least one block left). Names must be unique in a multi-depth set.
    """
    if cset.num_blocks < 2:
        raise CandidateFileError(f"{source}: num_blocks must be at least 2, got {cset.num_blocks}")
    if len(cset.candidates) < 2:
        raise CandidateFileError(f"{source}: needs at least 2 candidates for a router to choose from, has {len(cset)}")
    if depths is None:
        depths = cset.depths if cset.multi_depth else (cset.num_omit,)
    if max(depths) != cset.num_omit:
        raise CandidateFileError(f"{source}: num_omit is {cset.num_omit}, but the largest depth is {max(depths)}")
    for i, cand in enumerate(cset.candidates):
        where = f"{source}: candidates[{i}] ({cand.name})"
        if cand.depth not in depths:
            declared = depths[0] if len(depths) == 1 else list(depths)
            raise CandidateFileError(f"{where}: omits {cand.depth} blocks, but num_omit is {declared}")
        try:
            validate_omission(cand.omit, cset.num_blocks)
        except OmissionError as exc:
            raise CandidateFileError(f"{where}: field 'omit': {exc}") from None
    for depth in depths:
        if not cset.at_depth(depth):
            raise CandidateFileError(f"{source}: field 'num_omit' lists depth {depth}, but no candidate omits {depth}")
    seen: dict[frozenset[int], int] = {}
    for i, key in enumerate(frozenset(c.omit) for c in cset.candidates):
        if key in seen:
            raise CandidateFileError(f"{source}: candidates[{i}] repeats the omission set of candidates[{seen[key]}]")
        seen[key] = i
    if cset.multi_depth:
        named: dict[str, int] = {}
        for i, cand in enumerate(cset.candidates):
            if cand.name in named:
                raise CandidateFileError(
                    f"{source}: candidates[{i}] has the name {cand.name!r} of candidates[{named[cand.name]}] "
                    "(in a file of several depths, task/loss@depth must be unique)"
                )
            named[cand.name] = i


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
    base_model = str(_require(raw, "base_model", str, where))
    num_blocks = _require(raw, "num_blocks", int, where)
    if "num_omit" not in raw:
        raise CandidateFileError(f"{where}: missing field 'num_omit'")
    depths = _depths(raw["num_omit"], where)
    cset = CandidateSet(
        base_model=base_model,
        num_blocks=num_blocks,
        num_omit=max(depths),
        candidates=tuple(candidates),
        search=dict(raw.get("search") or {}),
    )
    validate(cset, where, depths)
    return cset


def _depths(value: object, where: str) -> tuple[int, ...]:
    """The file's ``num_omit``: one depth, or a list of distinct positive depths (returned ascending)."""
    if not isinstance(value, int | list) or isinstance(value, bool):
        raise CandidateFileError(f"{where}: field 'num_omit' should be an int or a list of ints, got {value!r}")
    values = value if isinstance(value, list) else [value]
    if not values:
        raise CandidateFileError(f"{where}: field 'num_omit' is an empty list; give at least one depth")
    for depth in values:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise CandidateFileError(f"{where}: field 'num_omit' should hold positive ints, got {depth!r}")
    if len(set(values)) != len(values):
        raise CandidateFileError(f"{where}: field 'num_omit' lists a depth more than once: {values}")
    return tuple(sorted(values))


def candidates_from_runs(path: str | Path, depths: Sequence[int]) -> CandidateSet:
    """The candidates at ``depths`` from the runs a candidate file records (``search.runs``), without searching.

    A run records every block it removed in removal order, so its first ``d`` blocks are its ``d``-block candidate,
    exactly as a search asked for that depth would have made it (merges included); the candidates of the file itself
    are not enough, because a merged candidate keeps one run's order only.
    """
    source = load_candidates(path)
    runs = source.search.get("runs")
    if not isinstance(runs, list) or not runs:
        raise CandidateFileError(f"{path}: field 'search.runs' is missing or empty, so depths cannot be derived")
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or not all(key in run for key in ("task", "loss", "omit", "step_losses")):
            raise CandidateFileError(f"{path}: search.runs[{i}] needs task, loss, omit and step_losses")
        if len(run["omit"]) < max(depths):
            raise CandidateFileError(
                f"{path}: search.runs[{i}] ({run['task']}/{run['loss']}) removed {len(run['omit'])} blocks, "
                f"fewer than depth {max(depths)}"
            )
    search = {**source.search, "derived_from": {"file": str(path), "sha256": file_hash(path)}}
    return CandidateSet(
        base_model=source.base_model,
        num_blocks=source.num_blocks,
        num_omit=max(depths),
        candidates=candidates_at_depths(runs, depths),
        search=search,
    )


def candidates_at_depths(runs: Sequence[Mapping], depths: Sequence[int]) -> tuple[Candidate, ...]:
    """Each run's candidate at each depth: its first ``d`` removals with their step losses (``runs`` hold ``task``,
    ``loss``, ``omit`` in removal order and ``step_losses``, as ``search.runs`` does). Depth order, then run order;
    runs that reached the same set at a depth are merged (:func:`merge_identical`)."""
    candidates = [
        Candidate(
            omit=tuple(run["omit"][:depth]),
            task=str(run["task"]),
            loss=str(run["loss"]),
            step_losses=tuple(float(x) for x in run["step_losses"][:depth]),
        )
        for depth in sorted(depths)
        for run in runs
    ]
    return tuple(merge_identical(candidates))


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes: of a candidate file, recorded by every dataset built from it so mixes are refused;
    of every released file, in its manifest."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


DENSE = "dense"
"""Name of the dense model when it is one of a router's choices."""


@dataclass(frozen=True)
class Choices:
    """What a router chooses among: candidate omission sets, plus the dense model (last, omission set ``()``) when
    it is a choice. The one description of them that the router data, the router, its bundle, routed inference and
    the evaluations share.
    """

    names: tuple[str, ...]
    omission_sets: tuple[tuple[int, ...], ...]
    num_blocks: int
    dense: bool = False

    @classmethod
    def of(
        cls, names: Sequence[str], omission_sets: Sequence[Sequence[int]], num_blocks: int, dense: bool = False
    ) -> Choices:
        """The candidates ``names`` / ``omission_sets`` (each set sorted), plus the dense model when ``dense``."""
        sets = tuple(tuple(sorted(int(b) for b in s)) for s in omission_sets)
        if len(names) != len(sets):
            raise CandidateFileError(f"{len(names)} candidate names for {len(sets)} omission sets")
        if dense:
            return cls((*names, DENSE), (*sets, ()), int(num_blocks), True)
        return cls(tuple(names), sets, int(num_blocks), False)

    @classmethod
    def from_meta(cls, meta: Mapping, dense: bool | None = None) -> Choices:
        """The choices a router dataset's (or router's) metadata describes: its candidates' names and sets, its block
        count, and the dense model when ``dense`` (default: the metadata's ``dense_choice``)."""
        sets = meta["omission_sets"]
        names = meta.get("candidate_names") or [f"candidate{i}" for i in range(len(sets))]
        dense = bool(meta.get("dense_choice")) if dense is None else dense
        return cls.of(names, sets, int(meta.get("num_blocks") or 0), dense)

    @classmethod
    def listed(
        cls, names: Sequence[str], omission_sets: Sequence[Sequence[int]], num_blocks: int, dense: bool = False
    ) -> Choices:
        """Choices as a router records them: every choice's name and set, the dense model (``[]``) already last when
        ``dense``."""
        if dense and (not omission_sets or list(omission_sets[-1])):
            raise CandidateFileError("the router's choices name the dense model, but their last omission set is not []")
        count = len(omission_sets) - int(dense)
        return cls.of(list(names)[:count], list(omission_sets)[:count], num_blocks, dense)

    def __len__(self) -> int:
        return len(self.omission_sets)

    @property
    def num_candidates(self) -> int:
        """The candidates among the choices (the dense model not counted)."""
        return len(self) - int(self.dense)

    @property
    def omitted(self) -> list[int]:
        """Blocks omitted by each choice."""
        return [len(s) for s in self.omission_sets]

    @property
    def blocks_kept(self) -> list[int]:
        """Blocks kept by each choice."""
        return [self.num_blocks - o for o in self.omitted]

    @property
    def depths_differ(self) -> bool:
        """Whether the choices keep different numbers of blocks (only then does a compute budget change routing)."""
        return len(set(self.omitted)) > 1

    def require_depths(self, option: str, whose: str, what: str = "a budget cannot change the routing") -> None:
        """Refuse, naming ``option``, choices (``whose``: ``this router``, ``router bundle DIR``) that all keep the
        same number of blocks: a compute budget has nothing to trade."""
        if self.depths_differ:
            return
        kept = f"{self.blocks_kept[0]} of {self.num_blocks}" if self.num_blocks and len(self) else "the same number of"
        raise OptionError(
            f"option {option}: every choice of {whose} keeps {kept} blocks, so {what}; it needs choices of different "
            "depths (train with data.dense_choice true, or on candidates of several depths)"
        )


# ------------------------------------------------------------------------------------ checks before a model loads


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
