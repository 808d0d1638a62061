"""Several processes for one job: fixed units dealt to ranks, each unit a keyed record, assembled from the records.

The long jobs here are made of independent units whose results are keyed records in a shared store
(:mod:`pudding.core.store`): a candidate search run, an outcome shard of a chunk of evaluation items. Spreading such a
job needs no communication between the processes: every rank computes the same deal of the units (:func:`deal`,
from the units' sizes alone, never from what is already on disk), computes the records of its own units, and waits by
*polling the store* until every unit's record is there (:func:`wait_for`); then the job is assembled from the store
exactly as one process assembles it after a resumed run. The numbers are the same as one process's by construction:
each record is the same computation on the same inputs (provided the kernels are deterministic, as they are on the
CPU at a fixed thread count; see docs/spread.md).

There is no collective in the wait, so no process-group timeout can fire however long a share takes, and nothing
needs a port or a backend. Two launchers use it: :func:`spread` starts ``processes`` workers for a plain command
(``pudding eval``, ``pudding candidates``), and under a Lightning DDP fit the zero-shot callback uses the trainer's
ranks. A worker whose parent died stops waiting (:func:`wait_for`); :func:`spread` ends every worker when one fails.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from pudding.core.errors import OptionError, PuddingError
from pudding.core.options import OptionGroup, check_positive

T = TypeVar("T")

POLL_SECONDS = 2.0
"""How often a rank that finished its share looks for the other ranks' records."""


@dataclass(frozen=True)
class Share:
    """Which part of a job a process does: ``rank`` of ``world`` processes (``Share()`` is the whole job)."""

    rank: int = 0
    world: int = 1

    @property
    def spread(self) -> bool:
        """Whether other processes share the job."""
        return self.world > 1

    @property
    def lead(self) -> bool:
        """The rank that assembles and writes the job's output (and alone prints its tables)."""
        return self.rank == 0

    def mine(self, owners: Sequence[int]) -> list[int]:
        """The indices of the units :func:`deal` gave this rank."""
        return [i for i, owner in enumerate(owners) if owner == self.rank]


WHOLE = Share()
"""The whole job in one process."""


def deal(costs: Sequence[float], world: int) -> list[int]:
    """The rank that computes each unit: largest unit first, each to the rank with the least work so far.

    Deterministic (ties go to the lower unit index, then the lower rank) and a function of the costs alone, so every
    rank computes the same deal without talking to the others. Dealing by size (not ``i % world``) keeps the ranks'
    finishing times close when units differ in size, as the last, partial chunk of each task does.
    """
    check_positive(world, "processes")
    loads = [0.0] * world
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owners[index] = rank
        loads[rank] += float(costs[index])
    return owners


def text_cost(requests: Iterable[tuple[str, str]]) -> int:
    """A unit's size for :func:`deal`: the characters the scoring engine runs, each distinct context once (it packs
    the choices that share a context into one row) plus every continuation."""
    requests = list(requests)
    return sum(len(context) for context in {c for c, _ in requests}) + sum(len(x) for _, x in requests)


def wait_for(
    missing: Callable[[], int],
    what: str,
    log: Callable[[str], None] | None = None,
    poll: float = POLL_SECONDS,
    log_every: float = 60.0,
) -> None:
    """Return once ``missing()`` (how many units still lack their record) is 0, polling the store.

    No collective and no timeout: a share may take hours. A process whose parent went away (the launching command,
    or Lightning's rank 0) stops with an error instead of waiting for records that will never come.
    """
    parent = os.getppid()
    said = time.monotonic()
    while True:
        left = missing()
        if left == 0:
            return
        if os.getppid() != parent:
            raise RuntimeError(f"stopped waiting for {left} {what}: the process that started this one has ended")
        if log is not None and time.monotonic() - said >= log_every:
            log(f"waiting for {left} {what} of the other processes")
            said = time.monotonic()
        time.sleep(poll)


@dataclass
class SpreadOptions(OptionGroup):
    """How many processes share a command's work.

    Args:
        processes: Worker processes that share the command's units (each loads its own copy of the base model;
            with CUDA, worker r runs on cuda:r, round robin over the devices; on the CPU each gets its share of the
            cores). The results are those of one process. 1: no extra process.
    """

    processes: int = 1

    def check(self) -> None:
        check_positive(self.processes, "processes")
        device = getattr(self, "device", "auto")
        if self.processes > 1 and device not in ("auto", "cpu", "cuda"):
            raise OptionError(
                f"option device: {device!r} names one device; with processes {self.processes} give auto, cpu or cuda "
                "(worker r then runs on cuda:r)"
            )


def rank_device(device: str, share: Share) -> str:
    """The device of ``share``'s rank for a ``device`` option: the option itself for one process; with several,
    ``cuda:<rank>`` (round robin over the visible devices) for cuda/auto on a CUDA machine, else the CPU."""
    if not share.spread or device == "cpu":
        return device
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{share.rank % torch.cuda.device_count()}"
    if device == "cuda":
        raise OptionError("option device: cuda, but no CUDA device is available")
    return "cpu"


def rank_devices(device: str, processes: int) -> list[str]:
    """Every rank's :func:`rank_device` (what a spread job records)."""
    return [rank_device(device, Share(rank, processes)) for rank in range(processes)]


def spread(fn: Callable[..., T], *args: Any, processes: int) -> T:
    """``fn(*args, share=Share(rank, processes))`` in ``processes`` fresh processes (spawned); rank 0's return value.

    Each worker gets ``torch.get_num_threads() // processes`` threads (at least one), so the workers together use the
    cores one process would. When a worker fails, the others are ended and its error is raised here: a
    :class:`PuddingError` as it is (one line at the command layer), anything else with the worker's traceback.
    """
    context = mp.get_context("spawn")
    results = context.Queue()
    threads = max(1, torch.get_num_threads() // processes)
    workers = [
        context.Process(
            target=_work, args=(fn, args, Share(rank, processes), threads, results), name=f"pudding-worker-{rank}"
        )
        for rank in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        return _collect(workers, results)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join()


def _collect(workers: list, results) -> Any:
    """Wait for every worker's report; the first failure ends the wait with its error."""
    pending, answer = set(range(len(workers))), None
    while pending:
        try:
            rank, ok, value = results.get(timeout=1.0)
        except queue.Empty:
            gone = [r for r in sorted(pending) if workers[r].exitcode is not None]
            if gone:
                try:  # a worker that reported and exited: its report may have arrived just now
                    rank, ok, value = results.get(timeout=5.0)
                except queue.Empty:
                    code = workers[gone[0]].exitcode
                    raise RuntimeError(f"worker {gone[0]} ended with exit code {code} and no report") from None
            else:
                continue
        pending.discard(rank)
        if not ok:
            raise value
        if rank == 0:
            answer = value
    return answer


def _work(fn: Callable[..., Any], args: tuple, share: Share, threads: int, results) -> None:
    """A worker's body: its thread count, the job's share, and one report (value or error) to the parent."""
    torch.set_num_threads(threads)
    try:
        value = fn(*args, share=share)
        results.put((share.rank, True, value if share.lead else None))
    except BaseException as exc:  # every failure is reported; the parent decides
        results.put((share.rank, False, _portable(exc, share.rank)))


def _portable(exc: BaseException, rank: int) -> BaseException:
    """``exc`` when it is a PuddingError that pickles (the command layer prints it as one line), else a RuntimeError
    carrying the worker's traceback."""
    if isinstance(exc, PuddingError):
        try:
            return pickle.loads(pickle.dumps(exc))
        except Exception:
            pass
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return RuntimeError(f"worker {rank} failed:\n{text}")
