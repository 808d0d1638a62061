"""Wall time of ``--processes 2`` against one process, and whether the outputs agree.

    python benchmarks/spread_speed.py --data_dir ../shared/data          # writes benchmarks/results/spread/

Two commands, each run as a user runs it (a fresh ``python -m pudding.cli`` process: interpreter start, imports and
model loading included), first with one process, then with ``--processes 2``:

- ``pudding eval --limit 200`` on the six default tasks, dense (1,200 items in 12 chunks of up to 128);
- one greedy search step: ``pudding candidates --num_omit 1`` on arc_easy and piqa × {likelihood, margin} (four runs
  of one step each, 64 items per task), each process with its own fresh run folder.

Records the machine (CPU model, core count, AMX), the dtype, the load average around each run, the wall times, and
whether the two-process output equals the one-process output (the results JSON's rows; the candidate file byte for
byte). One process uses torch's default thread count; each of two workers gets half of it. Writes ``spread.json``
and ``README.md`` under ``--out_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pudding.core.io import atomic_write_json, atomic_write_text

ROWS = ("results", "average", "omission_sets", "blocks_kept", "kinds")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="../shared/data", help="benchmark files")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--num_samples", type=int, default=64, help="items per task of the search step")
    p.add_argument("--out_dir", default="benchmarks/results/spread")
    p.add_argument("--note", default="", help="a line on the machine's state (shared with other jobs, ...)")
    p.add_argument("--readme_only", action="store_true", help="rewrite README.md from out_dir/spread.json, run nothing")
    return p.parse_args()


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "amx_bf16": "amx_bf16" in cpuinfo,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def timed(args: list[str]) -> dict:
    """One ``python -m pudding.cli`` run: wall seconds, load average before and after, and its exit status."""
    load = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pudding.cli", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pudding {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return {
        "command": "pudding " + " ".join(args),
        "wall_seconds": round(seconds, 1),
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def bench_eval(opts: argparse.Namespace, work: Path) -> dict:
    runs, outputs = {}, {}
    for n in (1, 2):
        out = work / f"eval{n}.json"
        args = ["eval", "--base", "default", "--limit", str(opts.limit), "--data_dir", opts.data_dir]
        args += ["--dtype", opts.dtype, "--progress", "false", "--output", str(out), "--processes", str(n)]
        runs[n] = timed(args)
        outputs[n] = json.loads(out.read_text())
    same = all(outputs[1][part] == outputs[2][part] for part in ROWS)
    dense = outputs[1]["results"]["dense"]
    return {
        "runs": runs,
        "items": sum(r["n"] for r in dense.values()),
        "dtype": outputs[1]["config"]["dtype"],
        "rows_identical": same,
        "average_acc": outputs[1]["average"]["dense"],
    }


def bench_search(opts: argparse.Namespace, work: Path) -> dict:
    runs, files = {}, {}
    for n in (1, 2):
        out = work / f"candidates{n}.yaml"
        args = ["candidates", "--base", "default", "--tasks", "arc_easy,piqa", "--losses", "likelihood,margin"]
        args += ["--num_omit", "1", "--data_dir", opts.data_dir, "--dtype", opts.dtype, "--output", str(out)]
        args += ["--num_samples", str(opts.num_samples), "--work_dir", str(work / f"runs{n}"), "--processes", str(n)]
        runs[n] = timed(args)
        files[n] = out.read_bytes()
    return {"runs": runs, "file_identical": files[1] == files[2], "candidate_file": files[1].decode()}


def readme(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Two processes against one: `pudding eval` and a search step",
        "",
        f"Made by `python benchmarks/spread_speed.py --data_dir ../shared/data` on {report['date']}: "
        f"{m['cpu']}, {m['cores']} cores, AMX {'yes' if m['amx_bf16'] else 'no'} (`grep -o amx_bf16 /proc/cpuinfo`), "
        f"torch {m['torch']} with {m['torch_threads']} threads in one process (each of two workers gets half).",
        "",
    ]
    if report["note"]:
        lines += [f"**Machine state:** {report['note']}", ""]
    lines += [
        "| command | 1 process | 2 processes | speed-up | output equal |",
        "|---|---|---|---|---|",
    ]
    eval_name = f"`pudding eval --limit {report['limit']}` (dense, {report['eval']['items']} items)"
    for name, part, equal in (
        (eval_name, "eval", "rows_identical"),
        (f"one search step (`--num_omit 1`, 4 runs, {report['num_samples']} items each)", "search", "file_identical"),
    ):
        one, two = report[part]["runs"]["1"]["wall_seconds"], report[part]["runs"]["2"]["wall_seconds"]
        lines.append(f"| {name} | {one:.0f} s | {two:.0f} s | {one / two:.2f}× | {report[part][equal]} |")
    lines += [
        "",
        "Wall time of the whole command as a user runs it: a fresh interpreter, imports and model loading included",
        "(each worker loads its own copy). Load average (1, 5, 15 min) before and after each run:",
        "",
    ]
    for part in ("eval", "search"):
        for n in ("1", "2"):
            run = report[part]["runs"][n]
            lines.append(f"- {part}, {n} process(es): {run['load_average_before']} → {run['load_average_after']}")
    lines += [
        "",
        "**Output equal** compares the two outputs as run here: one process with torch's "
        f"{m['torch_threads']} threads, each worker with half. Another thread count sums the matrix products in "
        "another order, so log-likelihoods move in their last bits (more so in bfloat16) and a close choice or a "
        "search loss's last digits can move: the outputs are equal only at equal threads per process. At equal "
        "threads they are: `pudding eval --limit 30 --dtype bfloat16` with `OMP_NUM_THREADS=1` in one process "
        "gives rows identical to `--processes 2` on this machine, while one process with two threads differs from "
        "both on one HellaSwag item's acc_norm (of 30); tests/test_distributed.py asserts identical outputs at one "
        "thread per process in float32.",
        "",
        f"dtype: {report['eval']['dtype']}. The commands are in `spread.json`. How the work is shared, and why: "
        "[docs/spread.md](../../../docs/spread.md).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    opts = parse_args()
    out_dir = Path(opts.out_dir)
    if opts.readme_only:
        atomic_write_text(out_dir / "README.md", readme(json.loads((out_dir / "spread.json").read_text())))
        return
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "note": opts.note,
        "limit": opts.limit,
        "num_samples": opts.num_samples,
    }
    with tempfile.TemporaryDirectory(prefix="pudding-spread-") as tmp:
        work = Path(tmp)
        report["eval"] = bench_eval(opts, work)
        report["search"] = bench_search(opts, work)
    for part in ("eval", "search"):
        report[part]["runs"] = {str(n): run for n, run in report[part]["runs"].items()}
    atomic_write_json(out_dir / "spread.json", report)
    atomic_write_text(out_dir / "README.md", readme(report))
    print(readme(report))


if __name__ == "__main__":
    main()
