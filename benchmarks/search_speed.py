"""How long the candidate search takes: the fast search measured, the naive one extrapolated.

    python benchmarks/search_speed.py --data_dir /work/shared/data            # default search, bf16
    python benchmarks/search_speed.py --data_dir /work/shared/data --fast_from benchmarks/results/search_speed.json

(a) Fast: runs the real search (``pudding.search.run_search``) with a fresh work folder and measures its wall time.
(b) Naive: one request per forward pass, no reuse, no memo. Running it in full would take hours, so it is
    extrapolated, and the JSON says so: for every task, time one naive trial (every request of a seeded subset of
    ``--naive_items`` items, each scored alone) at two depths — the model minus one block and minus ``num_omit``
    blocks — interpolate linearly in the number of blocks run, scale by (all requests / subset requests), and add
    up over what a naive search does: for each run, the dense model plus, at step s, one trial per removable block
    at depth ``num_blocks - s``. Naive runs share nothing, so every (task, loss) run pays in full.

Writes ``<out_dir>/search_speed.json`` and ``<out_dir>/search_speed.png`` and prints a table. The machine's load
average is recorded at start and end: on a shared machine both numbers are slower than on an idle one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import torch

from pudding.core.io import atomic_write_json
from pudding.core.models.adapters import num_blocks
from pudding.core.models.loading import load_base
from pudding.core.scoring import Scorer
from pudding.search import NaiveEvaluator, SearchOptions, plan_runs, removable, run_search
from pudding.search.greedy import Work
from pudding.search.objectives import sample_indices
from pudding.search.runs import RunRecord, dtype_record, load_run, run_key, run_path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=None, help="benchmark files (e.g. /work/shared/data); default: the hub")
    p.add_argument("--base", default="default")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--tasks", default="arc_easy,arc_challenge,boolq,hellaswag,piqa,winogrande")
    p.add_argument("--losses", default="likelihood,margin")
    p.add_argument("--num_omit", type=int, default=7)
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--naive_items", type=int, default=16, help="items per task the naive trials are timed on")
    p.add_argument("--out_dir", default="benchmarks/results")
    p.add_argument("--fast_from", default=None, help="reuse part (a) from an earlier JSON of this script")
    p.add_argument("--fast_output", default=None, help="where the fast search writes its candidate file")
    p.add_argument("--fast_log", nargs="*", default=None, help="reuse part (a) from `pudding candidates` log(s)")
    p.add_argument("--fast_runs", default=None, help="with --fast_log: that run's work_dir (for the work counts)")
    return p.parse_args()


def measure_fast(opts: SearchOptions, base) -> dict:
    """Run the whole search from scratch; wall and CPU seconds plus per-run work counters."""
    stats: list[dict] = []
    load = os.getloadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    cset = run_search(opts, base=base, stats=stats)
    return {
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "load_average_start": load,
        "load_average_end": os.getloadavg(),
        "candidates": len(cset),
        "output": opts.output,
        "runs": stats,
    }


def fast_from_logs(paths: list[Path]) -> dict:
    """Part (a) from the progress lines of ``pudding candidates`` runs that together did every run once.

    Several logs are allowed (processes sharing one work_dir, each doing some runs): a run's time is the elapsed
    time between its last step line and the previous computed run's in the same log, so it includes the dense
    pass; the total is the sum over runs, i.e. what one process doing all of them would have taken.
    """
    runs: dict[str, dict] = {}
    for path in paths:
        previous, current = 0.0, None
        for line in path.read_text().splitlines():
            step = re.match(
                r"\[\d+/\d+ (\S+)\] step (\d+)/(\d+): .*\((\d+) trials, (\d+) cached, [\d.]+s; elapsed (\d+)s\)",
                line,
            )
            if not step:
                continue
            name = step[1]
            index, last, trials, cached, elapsed = map(int, step.groups()[1:])
            current = current or {"run": name, "trials_computed": 0, "trials_cached": 0, "log": str(path)}
            current["trials_computed"] += trials - cached
            current["trials_cached"] += cached
            if index == last:
                current["seconds"] = float(elapsed - previous)
                previous = elapsed
                runs.setdefault(name, current)
                current = None
    return {
        "wall_seconds": sum(r["seconds"] for r in runs.values()),
        "runs": list(runs.values()),
        "measured_by": "pudding candidates progress lines of " + ", ".join(map(str, paths)),
    }


def naive_trial_seconds(base, rset, omit: tuple[int, ...]) -> float:
    evaluator = NaiveEvaluator(base.model, base.tokenizer, rset)
    started = time.perf_counter()
    evaluator.scores(omit)
    return time.perf_counter() - started


def measure_naive(opts: SearchOptions, base, naive_items: int) -> dict:
    """Time naive trials on a subset of each request set and extrapolate the full naive search (see module doc)."""
    specs, _ = plan_runs(opts)
    n = num_blocks(base.model)
    shallow = tuple(removable(n, (), opts.keep_first, opts.keep_last)[: opts.num_omit])
    per_set: dict[str, dict] = {}
    total = 0.0
    for spec in specs:
        rset = spec.rset
        if rset.name not in per_set:
            subset = rset.subset(sample_indices(rset.num_units, naive_items, opts.seed, f"naive:{rset.name}"))
            scale = len(rset.requests) / len(subset.requests)
            deep = naive_trial_seconds(base, subset, (shallow[0],)) * scale  # n - 1 blocks
            low = naive_trial_seconds(base, subset, shallow) * scale  # n - num_omit blocks
            per_set[rset.name] = {"requests": len(rset.requests), "timed_requests": len(subset.requests)}
            per_set[rset.name]["trial_seconds"] = {n - 1: deep, n - len(shallow): low}
            print(f"naive {rset.name}: one trial ≈ {deep:.1f}s at {n - 1} blocks, {low:.1f}s at {n - len(shallow)}")
        times = per_set[rset.name]["trial_seconds"]  # one key when num_omit is 1: both depths are n - 1
        deep, low = times[n - 1], times[n - len(shallow)]

        def at(depth: int, deep: float = deep, low: float = low) -> float:
            if len(shallow) == 1:
                return deep * depth / (n - 1)
            return low + (deep - low) * (depth - (n - len(shallow))) / (len(shallow) - 1)

        run_total = at(n)  # the dense model's loss
        for step in range(1, opts.num_omit + 1):
            run_total += removable_count(n, opts, step) * at(n - step)
        per_set[rset.name]["run_seconds"] = run_total
        total += run_total
    return {
        "extrapolated_seconds": total,
        "method": (
            f"timed one naive trial per request set on {naive_items} seeded items at two depths, scaled by the "
            "request count, interpolated in depth, summed over every trial of every run (no sharing)"
        ),
        "load_average_end": os.getloadavg(),
        "per_request_set": per_set,
    }


def removable_count(n: int, opts: SearchOptions, step: int) -> int:
    """Blocks a greedy step tries: all outside the barriers, minus those removed by earlier steps."""
    return n - opts.keep_first - opts.keep_last - (step - 1)


def _capture(fast: dict, fw: Work, n: int, omit: list[int], seen: set, state: dict, name: str) -> None:
    """A capture pass of the fast evaluator: the current model once, every kept block's input recorded."""
    fast["token_blocks"] += fw.tokens * (n - len(omit))
    fast["head_tokens"] += fw.scored
    fast["capture_passes"] += 1
    seen.add(frozenset(omit))
    state[name] = frozenset(omit)


def work_counts(opts: SearchOptions, base, records: dict[str, RunRecord]) -> dict:
    """Exact, machine-independent cost of both searches: positions × blocks run, and LM-head positions.

    Naive: every trial runs every kept block on every request alone (no padding). Fast: replays the fast
    evaluator's bookkeeping (memo, capture passes, blocks after the removed one) along the runs' actual paths.
    """
    specs, _ = plan_runs(opts)
    n = num_blocks(base.model)
    fast_scorer = Scorer(base.model, base.tokenizer, batch_tokens=opts.batch_tokens)
    naive_scorer = Scorer(base.model, base.tokenizer, batch_tokens=1, share_context=False)
    sizes: dict[str, tuple[Work, Work]] = {}
    naive = {"token_blocks": 0, "head_tokens": 0}
    fast = {"token_blocks": 0, "head_tokens": 0, "trials_computed": 0, "trials_cached": 0, "capture_passes": 0}
    memo: dict[str, set[frozenset[int]]] = {}
    state: dict[str, frozenset[int] | None] = {}
    task = None
    for spec in specs:
        rset = spec.rset
        if rset.name not in sizes:
            sizes[rset.name] = (
                Work.of(naive_scorer.prepare(rset.requests)),
                Work.of(fast_scorer.prepare(rset.requests)),
            )
        nw, fw = sizes[rset.name]
        steps = range(1, opts.num_omit + 1)
        naive["token_blocks"] += nw.tokens * (n + sum(removable_count(n, opts, s) * (n - s) for s in steps))
        naive["head_tokens"] += nw.scored * (1 + sum(removable_count(n, opts, s) for s in steps))
        if spec.task != task:  # run_search drops a task's memo when the next task starts
            memo, state, task = {}, {}, spec.task
        seen = memo.setdefault(rset.name, set())
        omit: list[int] = []
        if frozenset() not in seen:
            _capture(fast, fw, n, omit, seen, state, rset.name)
        for best in records[spec.name].omit:
            kept = [k for k in range(n) if k not in omit]
            winner_computed = False
            for b in removable(n, omit, opts.keep_first, opts.keep_last):
                if frozenset([*omit, b]) in seen:
                    fast["trials_cached"] += 1
                    continue
                if state.get(rset.name) != frozenset(omit):
                    _capture(fast, fw, n, omit, seen, state, rset.name)
                after = [k for k in kept if k > b]
                fast["token_blocks"] += fw.tokens * (len(after) if after else len(kept) - 1)
                fast["head_tokens"] += fw.scored
                seen.add(frozenset([*omit, b]))
                fast["trials_computed"] += 1
                winner_computed |= b == best
            if winner_computed:
                state[rset.name] = frozenset([*omit, best])
            omit.append(best)
    return {
        "naive": naive,
        "fast": fast,
        "token_block_ratio": naive["token_blocks"] / fast["token_blocks"],
        "head_token_ratio": naive["head_tokens"] / fast["head_tokens"],
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fast_min = result["fast"]["wall_seconds"] / 60
    naive_min = result["naive"]["extrapolated_seconds"] / 60
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bars = left.bar(["naive (extrapolated)", "fast (measured)"], [naive_min, fast_min], color=["#bbb", "#3a7"])
    left.axhline(20, color="r", linestyle="--", linewidth=1, label="20-minute target")
    left.set_yscale("log")
    left.set_ylabel("minutes (log scale)")
    left.set_title(f"default candidate search: {result['ratio']:.0f}× faster")
    left.bar_label(bars, fmt="%.1f")
    left.legend()
    runs = result["fast"]["runs"]
    right.barh([r["run"] for r in runs][::-1], [r["seconds"] / 60 for r in runs][::-1], color="#3a7")
    right.set_xlabel("minutes")
    right.set_title("fast search, per run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="search-speed-"))
    opts = SearchOptions(
        base=args.base,
        dtype=args.dtype,
        tasks=args.tasks.split(","),
        losses=args.losses.split(","),
        num_omit=args.num_omit,
        num_samples=args.num_samples,
        data_dir=args.data_dir,
        output=args.fast_output or str(scratch / "candidates.yaml"),
        work_dir=str(scratch / "runs"),
    )
    base = load_base(opts.base, dtype=opts.dtype, device="cpu")
    result: dict = {
        "config": {k: v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
    }
    if args.fast_log:
        result["fast"] = fast_from_logs([Path(p) for p in args.fast_log])
    elif args.fast_from:
        result["fast"] = json.loads(Path(args.fast_from).read_text())["fast"]
        result["fast"]["reused_from"] = args.fast_from
    else:
        result["fast"] = measure_fast(opts, base)
    if args.fast_runs:
        opts.work_dir = args.fast_runs
    specs, _ = plan_runs(opts)
    records = {}
    for spec in specs:
        key = run_key(opts, spec, num_blocks(base.model), dtype_record(base)["dtype"])
        record = load_run(run_path(opts, spec, key), key)
        if record is None:
            raise FileNotFoundError(f"run {spec.name} is not in {opts.run_dir} (pass --fast_runs with --fast_log)")
        records[spec.name] = record
    result["fast"]["runs"] = [run for run in result["fast"]["runs"] if run["run"] in records]
    if args.fast_log:  # the logs may hold runs of other tasks too
        result["fast"]["wall_seconds"] = sum(run["seconds"] for run in result["fast"]["runs"])
    timed = {run["run"] for run in result["fast"]["runs"]}
    if timed != set(records):
        raise ValueError(f"the fast timings cover {sorted(timed)}, the search has {sorted(records)}")
    result["work"] = work_counts(opts, base, records)
    if "token_blocks" in result["fast"]["runs"][0]:  # measured here: the replay must agree with the counters
        measured = sum(r["token_blocks"] for r in result["fast"]["runs"])
        assert measured == result["work"]["fast"]["token_blocks"], (measured, result["work"]["fast"])
    result["naive"] = measure_naive(opts, base, args.naive_items)
    result["ratio"] = result["naive"]["extrapolated_seconds"] / result["fast"]["wall_seconds"]
    atomic_write_json(out_dir / "search_speed.json", result)
    plot(result, out_dir / "search_speed.png")
    fast, naive = result["fast"]["wall_seconds"] / 60, result["naive"]["extrapolated_seconds"] / 60
    print(f"\n{'search':<24}{'minutes':>10}")
    print(f"{'naive (extrapolated)':<24}{naive:>10.1f}")
    print(f"{'fast (measured)':<24}{fast:>10.1f}")
    print(f"{'naive / fast':<24}{result['ratio']:>10.1f}")
    work = result["work"]
    print(
        f"{'work ratio (token×blocks)':<24}{work['token_block_ratio']:>10.1f}   (LM-head positions: "
        f"{work['head_token_ratio']:.1f}; exact counts, independent of machine load)"
    )
    print(f"wrote {out_dir / 'search_speed.json'} and {out_dir / 'search_speed.png'}")


if __name__ == "__main__":
    main()
