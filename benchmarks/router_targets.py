"""The router-target comparison (#26 item 5): targets × candidate pools × routers, on the full evaluation splits.

    PYTHONPATH=. python benchmarks/router_targets.py --data_dir ../shared/data

Grid: the router's regression target (``likelihood``: the gold answer's log-likelihood, the paper's; ``posterior``:
the gold answer's log-probability among the choices; ``correct``: whether the set answers right) × the candidate pool
(``12``: the released candidates; ``13``: the same plus SLEB's task-agnostic set of the same depth) × the router
(``bert``: MiniLM, configs/router.yaml; ``self``: the LLM's own first block, ``make tables``' settings). Steps, each
skipped when its output exists (so the script resumes where it stopped):

1. ``pudding candidates --from_runs`` the released runs ``--sleb true``: the 13-candidate file (no search: the SLEB
   search is read from the tracked outcomes file).
2. ``pudding dataset --all_choices true --limit N`` on the 13 candidates: router data with every answer choice
   scored, for the first N router items per task (the full build would take ~8 h here; docs/router-data.md). The
   500-item build is released (``checkpoints/release/all_choices/``, configs/release_choices.yaml), so by default
   the dataset is rebuilt from its scores in seconds (``--scores null`` builds it; its finished chunks then go to
   ``<out>/build_progress.parquet``, so another machine resumes it).
3. The 12-candidate data is the 13-candidate data without its last column (SLEB's): every set is scored on its own
   on the same fixed chunks, so a 12-candidate build gives the same numbers.
4. ``pudding-train fit`` for each cell (``--data.target``; everything else the configs' and ``make tables``').
5. ``pudding compare --bundle`` each on the full evaluation splits (float32 outcomes from the tracked progress file,
   nothing scored again), with the bootstrap intervals of every table.
6. The summary: per cell, the validation accuracy of the routed choice (router data's validation rows: the only
   thing the default is chosen on), the full-split average with PuDDing minus SLEB, the task-level pick, dense and
   random routing within task (95% intervals), per task routed minus random-within-task (paired bootstrap, 10,000
   resamples, seeded), and how often SLEB's set was picked. Writes ``targets.json`` and ``targets.md`` to ``out``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from jsonargparse import CLI

ROUTERS = {
    "bert": [],
    "self": ["--model.encoder", "self", "--model.pooling", "mean_last", "--model.lr", "1e-3", "--model.dropout", "0.1"]
    + ["--trainer.max_epochs", "20"],
}
"""Per router, the fit's options beyond configs/router.yaml (``self``: ``make tables``' SELF_ROUTER)."""
TARGETS = ("likelihood", "posterior", "correct")
POOLS = ("12", "13")
RELEASE_CANDIDATES = "checkpoints/release/candidates.yaml"
EVAL_PROGRESS = "benchmarks/results/eval_progress.parquet"
SLEB_ROW = "SLEB (perplexity, task-agnostic)"
PICK_ROW = "task-level pick (each task's best candidate on router data)"
IN_TASK_ROW = "random routing within task (router's proportions)"
ROUTED_ROW = "PuDDing (router)"


def run(cmd: list[str], log: Path) -> float:
    """Run one command (printed, output appended to ``log``); its wall seconds; stops the script when it fails."""
    print("$", shlex.join(cmd), flush=True)
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"failed ({done.returncode}) after {seconds:.0f} s: {shlex.join(cmd)}; see {log}")
    print(f"  done in {seconds / 60:.1f} min", flush=True)
    return seconds


def derive_pool(source: Path, target: Path, keep: int, candidates: str) -> None:
    """The router data of the first ``keep`` candidates of ``source`` (their columns; every set is scored alone on
    fixed chunks, so this is what a build on ``candidates`` gives), saved with ``candidates``' hash."""
    from pudding.core.candidates import file_hash, load_candidates
    from pudding.routerdata.dataset import CHOICE_COLUMNS, load_router_dataset, make_dataset, save_dataset

    dataset, meta = load_router_dataset(source)
    cset = load_candidates(candidates)
    if [list(s) for s in cset.omission_sets] != meta["omission_sets"][:keep] or len(cset) != keep:
        sys.exit(f"{candidates}: its sets are not the first {keep} of {source}")
    columns = dataset.to_dict()
    for name in ("scores", *(c for c in CHOICE_COLUMNS if not c.startswith("dense_"))):
        if name in columns:
            columns[name] = [row[:keep] for row in columns[name]]
    derived = dict(meta)
    derived.update(
        candidates_file=candidates,
        candidates_sha256=file_hash(candidates),
        num_candidates=keep,
        omission_sets=meta["omission_sets"][:keep],
        candidate_names=meta["candidate_names"][:keep],
        derived_from={"dataset": str(source), "build_key": meta["build_key"], "columns": f"first {keep}"},
    )
    save_dataset(make_dataset(columns, keep), derived, target, overwrite=True)


def validation_rows(dataset: str) -> dict:
    """The router data's validation rows (the fit's split: seeded, by item): task, prompt and per-candidate
    correctness [n, K]."""
    from pudding.router.data import RouterDataModule
    from pudding.routerdata.dataset import load_router_dataset

    data = RouterDataModule(datasets=[dataset], router="default", target="correct")
    data.prepare_data()
    data.setup("fit")
    rows, _ = load_router_dataset(dataset)
    text = {(t, i): x for t, i, x in zip(rows["task"], rows["item_id"], rows["router_text"], strict=True)}
    return {
        "task": [e["task"] for e in data.val_set],
        "text": [text[(e["task"], e["item_id"])] for e in data.val_set],
        "correct": np.stack([np.asarray(e["correct"], dtype=float) for e in data.val_set]),
    }


def validation_accuracy(val: dict, bundle: Path, dtype: str) -> dict:
    """The bundle's routed accuracy on the validation rows, routed from their prompts as at inference (beside the
    oracle's and the best single candidate's on the same rows), and its per-row correctness for paired intervals.
    It is checked against the fit's own figure (oracle minus ``val/regret_acc`` at the exported epoch)."""
    from pudding.routed.model import PuddingModel
    from pudding.router.release import fit_metrics

    model = PuddingModel.from_pretrained(bundle, dtype=dtype, device="cpu")
    picks = np.asarray(model.route(val["text"]))
    correct = val["correct"]
    routed = correct[np.arange(len(picks)), picks]
    oracle = float(correct.max(axis=1).mean())
    fit = fit_metrics(json.loads((bundle / "router.json").read_text()))
    from_fit = None if fit is None else oracle - fit["validation"].get("regret_acc", float("nan"))
    return {
        "rows": len(picks),
        "routed": float(routed.mean()),
        "routed_by_fit": from_fit,
        "epoch": None if fit is None else fit["epoch"],
        "oracle": oracle,
        "best_single": float(correct.mean(axis=0).max()),
        "per_row": routed.tolist(),
    }


def paired_val(a: list[float], b: list[float], tasks: list[str], resamples: int = 10_000, seed: int = 0) -> dict:
    """``a`` minus ``b`` (per-row correctness on the same validation rows) and a paired, task-stratified bootstrap
    95% interval of the difference (as the tables' intervals, over rows instead of evaluation items)."""
    diffs = np.asarray(a) - np.asarray(b)
    tasks_ = np.asarray(tasks)
    boot = np.zeros(resamples)
    names = sorted(set(tasks))
    for task in names:
        d = diffs[tasks_ == task]
        n = len(d)
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        boot += rng.multinomial(n, np.full(n, 1.0 / n), size=resamples) @ d / len(diffs)  # the task's share of rows
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(diffs.mean()), "low": float(low), "high": float(high), "tie": bool(low <= 0 <= high)}


def within_task(items: Path, resamples: int = 10_000, seed: int = 0) -> dict[str, dict]:
    """Per task, PuDDing minus random routing within the task in the router's proportions: mean and a paired
    bootstrap 95% interval over the task's items (seeded per task, as the tables' intervals are)."""
    import pandas as pd

    frame = pd.read_parquet(items)
    out = {}
    for task, rows in frame.groupby("task", sort=False):
        routed = rows[rows["row"] == ROUTED_ROW].set_index("item_id")["correct"].astype(float)
        spread = rows[rows["row"] == IN_TASK_ROW]
        expected = (spread["weight"] * spread["correct"].astype(float)).groupby(spread["item_id"]).sum()
        diffs = (routed - expected.reindex(routed.index)).to_numpy()
        n = len(diffs)
        rng = np.random.default_rng([seed, zlib.crc32(str(task).encode())])
        boot = np.concatenate(
            [rng.multinomial(n, np.full(n, 1.0 / n), size=1000) @ diffs / n for _ in range(resamples // 1000)]
        )
        low, high = np.percentile(boot, [2.5, 97.5])
        out[str(task)] = {"diff": float(diffs.mean()), "low": float(low), "high": float(high), "above": bool(low > 0)}
    return out


def summarize(name: str, results: Path, val: dict, bundle: Path, dtype: str) -> dict:
    """One cell's numbers: validation accuracy, full-split averages and intervals, within-task gains, SLEB share."""
    table = json.loads(results.read_text())
    intervals = table["intervals"]
    histogram = table["routing_histogram"]
    names = table["candidate_names"]
    picked = np.sum([counts for counts in histogram.values()], axis=0)
    sleb = [i for i, n in enumerate(names) if n.startswith("sleb/")]
    margin = [i for i, n in enumerate(names) if n.endswith("/margin")]
    return {
        "name": name,
        "validation": validation_accuracy(val, bundle, dtype),
        "average": table["average"][ROUTED_ROW],
        "references": {row: table["average"][row] for row in (SLEB_ROW, PICK_ROW, IN_TASK_ROW, "dense")},
        "minus": {row: intervals[row] for row in (SLEB_ROW, PICK_ROW, IN_TASK_ROW, "dense")},
        "within_task": within_task(results.with_suffix(".items.parquet")),
        "share_sleb": float(picked[sleb].sum() / picked.sum()) if sleb else None,
        "share_margin": float(picked[margin].sum() / picked.sum()),
        "seconds": table.get("seconds"),
    }


PAPER = "likelihood-12"
"""The paper's setting (gold log-likelihood target, the released 12 candidates): the default unless a cell beats it."""
CHOSEN_ON = (
    "the router data's validation rows only (never evaluation items): the released router kind (self) keeps the "
    "paper's setting (likelihood, 12 candidates) unless another target/pool routes those rows more accurately with "
    "a paired, task-stratified 95% bootstrap interval above zero; among such cells the most accurate"
)


def choose_default(cells: list[dict], vals: dict) -> str:
    """The default cell (see :data:`CHOSEN_ON`); every cell gets its paired interval against its router's paper
    setting on the validation rows (``validation.minus_paper``). Validation rows hold ~300 items: a cell must win
    by more than their noise, or the simpler paper setting stays."""
    texts = [v["text"] for v in vals.values()]
    if any(t != texts[0] for t in texts):
        sys.exit("the pools' validation rows differ: their cells cannot be compared row for row")
    tasks = next(iter(vals.values()))["task"]
    by_name = {c["name"]: c for c in cells}
    for c in cells:
        paper = by_name.get(f"{c['name'].split('-')[0]}-{PAPER}")
        if paper is not None:
            c["validation"]["minus_paper"] = paired_val(
                c["validation"]["per_row"], paper["validation"]["per_row"], tasks
            )
    for c in cells:
        c["validation"].pop("per_row")
    self_cells = [c for c in cells if c["name"].startswith("self-")]
    winners = [c for c in self_cells if c["validation"].get("minus_paper", {}).get("low", 0) > 0]
    if winners:
        return max(winners, key=lambda c: c["validation"]["routed"])["name"]
    return (
        f"self-{PAPER}" if f"self-{PAPER}" in by_name else max(cells, key=lambda c: c["validation"]["routed"])["name"]
    )


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def interval(i: dict) -> str:
    text = f"{100 * i['diff']:+.2f} [{100 * i['low']:+.2f}, {100 * i['high']:+.2f}]"
    return text + (" tie" if i.get("tie") else "")


def markdown(cells: list[dict], default: str) -> str:
    """The comparison table: one row per cell, the default in bold."""
    head = (
        "| router | target | pool | val acc: routed / oracle / best single | val: minus likelihood-12 | full-split "
        "average | minus SLEB | minus task-level pick | minus dense | minus random within task | tasks above "
        "random-in-task | SLEB share |\n"
        "|---|---|---|---|---|---:|---|---|---|---|---|---:|\n"
    )
    lines = []
    for c in cells:
        router, target, pool = c["name"].split("-")
        v = c["validation"]
        above = [t for t, w in c["within_task"].items() if w["above"]]
        cells_ = [
            router,
            target,
            pool,
            f"{pct(v['routed'])} / {pct(v['oracle'])} / {pct(v['best_single'])}",
            interval(v["minus_paper"]) if "minus_paper" in v and not c["name"].endswith(PAPER) else "—",
            pct(c["average"]),
            interval(c["minus"][SLEB_ROW]),
            interval(c["minus"][PICK_ROW]),
            interval(c["minus"]["dense"]),
            interval(c["minus"][IN_TASK_ROW]),
            ", ".join(above) or "none",
            "—" if c["share_sleb"] is None else f"{100 * c['share_sleb']:.1f}%",
        ]
        if c["name"] == default:
            cells_ = [f"**{x}**" for x in cells_]
        lines.append("| " + " | ".join(cells_) + " |")
    return head + "\n".join(lines) + "\n"


def main(
    data_dir: str = "../shared/data",
    limit: int = 500,
    build_dtype: str = "bfloat16",
    results_dtype: str = "float32",
    work: str = "checkpoints/targets",
    out: str = "benchmarks/results/targets",
    routers: str = "self,bert",
    targets: str = ",".join(TARGETS),
    pools: str = ",".join(POOLS),
    scores: str | None = "checkpoints/release/all_choices/router_scores.parquet",
    note: str = "",
    run_missing: bool = True,
) -> None:
    """Run the grid (see the module docstring).

    Args:
        data_dir: The benchmark files (``../shared/data``).
        limit: Router items per task scored with every answer choice (the first ones of each task).
        build_dtype: dtype of the router-data build (bfloat16: ~3.6x faster on a CPU with AMX or a GPU; the
            outcomes the routers are judged on are float32 whatever this is).
        results_dtype: dtype of the evaluation outcomes (the tracked ones are float32).
        work: Folder for the candidate file, datasets, fits and tables (git-ignored).
        out: Folder for the summary (tracked).
        routers: Comma-separated subset of bert, self.
        targets: Comma-separated subset of likelihood, posterior, correct.
        pools: Comma-separated subset of 12, 13.
        scores: Released all-choice scores to rebuild the 13-candidate data from (its ``limit`` must be this one's);
            null: build it.
        note: Words about the machine's load, written into the summary.
        run_missing: False: run nothing, summarise the cells whose tables exist and list the others as missing.
    """
    pudding, train = (
        str(Path(sys.executable).with_name("pudding")),
        str(Path(sys.executable).with_name("pudding-train")),
    )
    work_dir, out_dir = Path(work), Path(out)
    work_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "commands.log"
    seconds: dict[str, float] = {}
    candidates = work_dir / "candidates_sleb.yaml"
    if not candidates.exists():
        seconds["candidates"] = run(
            [pudding, "candidates", "--from_runs", RELEASE_CANDIDATES, "--sleb", "true", "--outcomes_progress"]
            + [EVAL_PROGRESS, "--data_dir", data_dir, "--dtype", results_dtype, "--output", str(candidates)],
            log,
        )
    data = {"13": work_dir / "data13", "12": work_dir / "data12"}
    if not (data["13"] / "pudding_meta.json").exists() and scores:
        seconds["rebuild"] = run(
            [pudding, "dataset", "--scores", scores, "--data_dir", data_dir, "--output", str(data["13"])], log
        )
    if not (data["13"] / "pudding_meta.json").exists():
        seconds["build"] = run(
            [pudding, "dataset", "--config", "configs/dataset.yaml", "--data_dir", data_dir, "--dtype", build_dtype]
            + ["--candidates", str(candidates), "--all_choices", "true", "--limit", str(limit)]
            + ["--output", str(data["13"]), "--trainer.devices", "2", "--trainer.strategy", "ddp"]
            + ["--progress", str(out_dir / "build_progress.parquet")],
            log,
        )
    if not (data["12"] / "pudding_meta.json").exists():
        derive_pool(data["13"], data["12"], 12, RELEASE_CANDIDATES)
    cells, missing, vals = [], [], {}
    for router in routers.split(","):
        for pool in pools.split(","):
            for target in targets.split(","):
                name = f"{router}-{target}-{pool}"
                bundle = work_dir / "bundles" / name
                results = work_dir / "eval" / f"{name}.json"
                if not run_missing and not results.exists():
                    missing.append(name)
                    continue
                if not (bundle / "router.json").exists():
                    seconds[f"fit {name}"] = run(
                        [train, "fit", "--config", "configs/router.yaml", *ROUTERS[router]]
                        + ["--data.datasets", f"[{data[pool]}]", "--data.target", target]
                        + ["--data.llm.dtype", results_dtype, "--trainer.callbacks.llm.dtype", results_dtype]
                        + ["--trainer.logger.init_args.save_dir", str(work_dir / "logs")]
                        + [
                            "--trainer.logger.init_args.name",
                            name,
                            "--bundle",
                            str(bundle),
                            "--overwrite_bundle",
                            "true",
                        ],
                        log,
                    )
                if not results.exists():
                    seconds[f"compare {name}"] = run(
                        [pudding, "compare", "--bundle", str(bundle), "--data_dir", data_dir, "--dtype", results_dtype]
                        + ["--outcomes_progress", EVAL_PROGRESS, "--output", str(results), "--overwrite", "true"],
                        log,
                    )
                if pool not in vals:
                    vals[pool] = validation_rows(str(data[pool]))
                cells.append(summarize(name, results, vals[pool], bundle, results_dtype))
    default = choose_default(cells, vals)
    summary = {
        "what": "router targets x candidate pools x routers (#26 item 5); docs/router.md explains the choice",
        "default": default,
        "chosen_on": CHOSEN_ON,
        "router_items_per_task": limit,
        "build_dtype": build_dtype,
        "results_dtype": results_dtype,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "amx": "amx_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None,
            "note": note,
        },
        "seconds": seconds,
        "missing": missing,
        "cells": cells,
    }
    (out_dir / "targets.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "targets.md").write_text(markdown(cells, default))
    print(markdown(cells, default))
    print(f"default: {default} ({CHOSEN_ON})")


if __name__ == "__main__":
    CLI(main, as_positional=False)
