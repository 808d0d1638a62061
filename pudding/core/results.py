"""Results tables from per-item outcomes: the one path from outcomes to rows to JSON, Markdown, CSV and PNG.

``pudding eval`` (dense and static sets), ``pudding compare`` (routed pruning against every baseline) and the
router's zero-shot callback all build their rows here, and the commands write them with :func:`write_results`.

Every row is a lookup in the outcomes of the omission sets on the evaluation items (:mod:`pudding.core.outcomes`): a
static set reads its own column; random routing is the expected accuracy of a uniformly random candidate; the
oracle counts an item when any candidate answers it (an upper bound no router can pass); PuDDing reads, per item,
the column of the candidate its router chose. A router with the dense model as a choice routes over the candidates
plus the dense model, and random and oracle routing then range over those choices too. Accuracies are fractions in
[0, 1] in the JSON and CSV, percent in the printed and markdown tables. The average is over tasks, of ``acc`` (as
the paper's tables; ``acc_norm`` is shown per task where the task has it).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pudding.core.accuracy import average
from pudding.core.io import atomic_write_json, atomic_write_text
from pudding.core.outcomes import Outcomes, set_key
from pudding.core.plots import pyplot, save_figure
from pudding.core.tasks import get_task


@dataclass
class Row:
    """One line of the table: per-task metrics (fractions), blocks kept (mean over items where it varies)."""

    name: str
    kind: str  # dense | static | best_static | sleb | random | oracle | routed
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    blocks_kept: float = 0.0
    omit: list[int] | None = None

    @property
    def average(self) -> float:
        return average(self.results, "acc")

    def mean(self, metric: str = "acc") -> float:
        """Mean over tasks of ``metric`` (tasks without it use ``acc``)."""
        return average(self.results, metric)

    def metric(self, task: str, metric: str = "acc") -> float:
        """``metric`` on ``task``, or ``acc`` where the task does not report it (BoolQ has no ``acc_norm``)."""
        return float(self.results[task].get(metric, self.results[task]["acc"]))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "omit": self.omit,
            "blocks_kept": self.blocks_kept,
            "results": self.results,
            "average": self.average,
        }


def _metrics(task: str) -> tuple[str, ...]:
    return get_task(task).metrics


def _per_item(out: Outcomes, keys: Sequence[str], metric: str) -> np.ndarray:
    """[len(keys), N] booleans: is each set's choice right on each item."""
    return np.stack([out.correct(k, metric) for k in keys])


def static_row(name: str, kind: str, outcomes: dict[str, Outcomes], omit: Sequence[int], num_blocks: int) -> Row:
    key = set_key(omit)
    row = Row(name, kind, blocks_kept=float(num_blocks - len(omit)), omit=[int(b) for b in omit])
    for task, out in outcomes.items():
        row.results[task] = {m: float(out.correct(key, m).mean()) for m in _metrics(task)} | {"n": len(out.item_ids)}
    return row


def routed_results(
    outcomes: dict[str, Outcomes],
    choice_sets: Sequence[Sequence[int]],
    choices: dict[str, Sequence[int]],
    num_blocks: int,
) -> tuple[dict[str, dict[str, float]], float]:
    """Per-task metrics when item ``i`` of a task runs with ``choice_sets[choices[task][i]]``, and the mean blocks
    kept over all items of all tasks (pooled)."""
    keys = [set_key(s) for s in choice_sets]
    kept = np.array([num_blocks - len(s) for s in choice_sets], dtype=float)
    results: dict[str, dict[str, float]] = {}
    kept_routed: list[float] = []
    for task, out in outcomes.items():
        n = len(out.item_ids)
        picks = np.asarray(choices[task], dtype=int)
        if picks.shape != (n,):
            raise ValueError(f"{task}: {picks.shape[0] if picks.ndim else 0} routing choices for {n} items")
        results[task] = {"n": n}
        for m in _metrics(task):
            results[task][m] = float(_per_item(out, keys, m)[picks, np.arange(n)].mean())
        kept_routed.extend(kept[picks].tolist())
    return results, float(np.mean(kept_routed)) if kept_routed else 0.0


def spread_results(
    outcomes: dict[str, Outcomes], choice_sets: Sequence[Sequence[int]]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per-task metrics of random routing (expected, uniform over ``choice_sets``) and of oracle routing (an item
    counts when any of them answers it)."""
    keys = [set_key(s) for s in choice_sets]
    random_results: dict[str, dict[str, float]] = {}
    oracle_results: dict[str, dict[str, float]] = {}
    for task, out in outcomes.items():
        n = len(out.item_ids)
        random_results[task] = {"n": n}
        oracle_results[task] = {"n": n}
        for m in _metrics(task):
            table = _per_item(out, keys, m)
            random_results[task][m] = float(table.mean())
            oracle_results[task][m] = float(table.any(axis=0).mean())
    return random_results, oracle_results


def best_static_name(depth: int | None, candidate: str) -> str:
    """``best static (name)``, or ``best static @d (name)`` for one depth of several."""
    return f"best static ({candidate})" if depth is None else f"best static @{depth} ({candidate})"


def sleb_name(depth: int | None) -> str:
    """``SLEB (perplexity, task-agnostic)``, or ``SLEB @d (...)`` for one depth of several."""
    return "SLEB (perplexity, task-agnostic)" if depth is None else f"SLEB @{depth} (perplexity, task-agnostic)"


def build_rows(
    outcomes: dict[str, Outcomes],
    names: Sequence[str],
    omission_sets: Sequence[Sequence[int]],
    choices: dict[str, Sequence[int]],
    best_static: int | Mapping[int, int],
    num_blocks: int,
    sleb: Sequence[int] | Mapping[int, Sequence[int]] | None = None,
    choice_sets: Sequence[Sequence[int]] | None = None,
    routed_name: str = "PuDDing (router)",
) -> list[Row]:
    """Rows in table order: dense, every candidate, best static, SLEB, random, oracle, PuDDing (the router).

    ``choices[task]`` index ``choice_sets`` (the router's choices; default: ``omission_sets``, the candidates);
    random and oracle routing range over the same choices. With candidates of several depths, ``best_static``
    (candidate index) and ``sleb`` (omission set) may be given per depth, ``{depth: ...}``: one row per depth then.
    """
    choice_sets = omission_sets if choice_sets is None else choice_sets
    kept = np.array([num_blocks - len(s) for s in choice_sets], dtype=float)
    rows = [static_row("dense", "dense", outcomes, (), num_blocks)]
    rows += [static_row(n, "static", outcomes, s, num_blocks) for n, s in zip(names, omission_sets, strict=True)]
    per_depth = isinstance(best_static, Mapping)
    best = dict(best_static) if per_depth else {None: int(best_static)}
    for depth, index in sorted(best.items(), key=lambda kv: kv[0] or 0):
        name = best_static_name(depth, names[index])
        rows.append(static_row(name, "best_static", outcomes, omission_sets[index], num_blocks))
    if sleb is not None:
        slebs = dict(sleb) if isinstance(sleb, Mapping) else {None: sleb}
        for depth, omit in sorted(slebs.items(), key=lambda kv: kv[0] or 0):
            rows.append(static_row(sleb_name(depth), "sleb", outcomes, omit, num_blocks))
    random_results, oracle_results = spread_results(outcomes, choice_sets)
    random_row = Row("random routing (expected)", "random", random_results, blocks_kept=float(kept.mean()))
    oracle_row = Row("oracle routing (upper bound)", "oracle", oracle_results, blocks_kept=float(kept.mean()))
    routed, routed_kept = routed_results(outcomes, choice_sets, choices, num_blocks)
    routed_row = Row(routed_name, "routed", routed, blocks_kept=routed_kept)
    return [*rows, random_row, oracle_row, routed_row]


def routing_histogram(choices: dict[str, Sequence[int]], num_candidates: int) -> dict[str, list[int]]:
    """Per task, how many items the router sent to each candidate."""
    return {
        task: np.bincount(np.asarray(c, dtype=int), minlength=num_candidates).astype(int).tolist()
        for task, c in choices.items()
    }


def depth_counts(picks: Sequence[int], blocks_kept: Sequence[int]) -> dict[str, int]:
    """How many of ``picks`` (choice indices) go to each depth: ``{blocks kept: items}``, shallowest first."""
    depths = np.asarray(blocks_kept, dtype=int)[np.asarray(picks, dtype=int)]
    return {str(int(d)): int((depths == d).sum()) for d in np.unique(depths)}


def depth_histogram(choices: dict[str, Sequence[int]], blocks_kept: Sequence[int]) -> dict[str, dict[str, int]]:
    """Per task, how many items the router sent to each depth: ``{task: {blocks kept: items}}``, shallowest first."""
    return {task: depth_counts(picks, blocks_kept) for task, picks in choices.items()}


def depth_lines(histogram: dict[str, dict[str, int]]) -> str:
    """The routed depths per task as text: ``arc_easy: 23 blocks × 40, 30 blocks × 10 (mean 24.40 kept)``."""
    lines = ["routed depth per task (blocks kept × items):"]
    for task, counts in histogram.items():
        total = sum(counts.values())
        mean = sum(int(d) * n for d, n in counts.items()) / max(total, 1)
        shown = ", ".join(f"{d} blocks × {n}" for d, n in counts.items())
        lines.append(f"  {task}: {shown} (mean {mean:.2f} kept)")
    return "\n".join(lines)


def _cells(row: Row, tasks: Sequence[str]) -> list[str]:
    cells = []
    for task in tasks:
        res = row.results[task]
        cell = f"{100 * res['acc']:.2f}"
        if "acc_norm" in res:
            cell += f" / {100 * res['acc_norm']:.2f}"
        cells.append(cell)
    return cells


def markdown_table(rows: Sequence[Row], tasks: Sequence[str], metric: str = "acc") -> str:
    """Markdown: rows × tasks (acc, or acc / acc_norm in %), the average of ``metric``, blocks kept."""
    head = ["", *(f"{t} acc{' / acc_norm' if 'acc_norm' in _metrics(t) else ''}" for t in tasks), "average", "kept"]
    if metric != "acc":
        head[-2] = f"average ({metric})"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.name, *_cells(row, tasks), f"{100 * row.mean(metric):.2f}", f"{row.blocks_kept:.2f}"]
        if row.kind == "routed":
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(rows: Sequence[Row], tasks: Sequence[str]) -> str:
    """Fixed-width table for the terminal (acc in %)."""
    width = max(len(r.name) for r in rows) + 2
    lines = [f"{'':<{width}}" + "".join(f"{t[:13]:>14}" for t in tasks) + f"{'average':>10}{'kept':>7}"]
    for row in rows:
        accs = "".join(f"{100 * row.results[t]['acc']:>14.2f}" for t in tasks)
        lines.append(f"{row.name:<{width}}{accs}{100 * row.average:>10.2f}{row.blocks_kept:>7.2f}")
    return "\n".join(lines)


def csv_table(rows: Sequence[Row], tasks: Sequence[str], metric: str = "acc") -> str:
    """CSV, one line per row and metric columns per task (fractions)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = [(t, m) for t in tasks for m in _metrics(t)]
    writer.writerow(["row", "kind", *(f"{t}/{m}" for t, m in columns), f"average_{metric}", "blocks_kept"])
    for row in rows:
        values = [f"{row.results[t][m]:.6f}" for t, m in columns]
        writer.writerow([row.name, row.kind, *values, f"{row.mean(metric):.6f}", f"{row.blocks_kept:.4f}"])
    return buffer.getvalue()


def text_by_task(rows: Sequence[Row], tasks: Sequence[str], metric: str = "acc") -> str:
    """Fixed-width table for the terminal with one column per row (a few sets over many tasks): ``metric`` in %, or
    for a single row its acc, acc_norm and item count per task."""
    if len(rows) == 1:
        row = rows[0]
        lines = [f"{'task':<15}{'acc':>8}{'acc_norm':>10}{'n':>7}"]
        for task in tasks:
            res = row.results[task]
            norm = f"{100 * res['acc_norm']:.2f}" if "acc_norm" in res else "-"
            lines.append(f"{task:<15}{100 * res['acc']:>8.2f}{norm:>10}{res['n']:>7}")
        lines.append(f"{'average (' + metric + ')':<15}{100 * row.mean(metric):>8.2f}")
        return "\n".join(lines)
    width = max(10, *(len(r.name) + 2 for r in rows))
    lines = [f"{metric + ' %':<15}" + "".join(f"{r.name:>{width}}" for r in rows)]
    for task in tasks:
        lines.append(f"{task:<15}" + "".join(f"{100 * r.metric(task, metric):>{width}.2f}" for r in rows))
    lines.append(f"{'average':<15}" + "".join(f"{100 * r.mean(metric):>{width}.2f}" for r in rows))
    return "\n".join(lines)


def plot_results(
    rows: Sequence[Row],
    histogram: dict[str, list[int]] | None,
    names: Sequence[str],
    path: str | Path,
    metric: str = "acc",
) -> Path:
    """PNG: average accuracy of each row (left) and, given the router's ``histogram``, which choice it picks for
    which task (right)."""
    plt = pyplot()
    panels = 2 if histogram else 1
    fig, axes = plt.subplots(
        1, panels, figsize=(13 if panels == 2 else 6.5, 0.35 * len(rows) + 2.5), width_ratios=(1, 1.2)[:panels]
    )
    left = axes[0] if panels == 2 else axes
    colours = {"routed": "tab:red", "oracle": "tab:gray", "random": "tab:gray", "dense": "tab:green"}
    y = np.arange(len(rows))
    values = [100 * r.mean(metric) for r in rows]
    left.barh(y, values, color=[colours.get(r.kind, "tab:blue") for r in rows])
    left.set_yticks(y, [r.name for r in rows], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel(f"average zero-shot accuracy ({metric}, %)")
    for i, value in enumerate(values):
        left.text(value, i, f" {value:.1f}", va="center", fontsize=7)
    if histogram:
        right = axes[1]
        tasks = list(histogram)
        counts = np.array([histogram[t] for t in tasks], dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = right.imshow(shares, aspect="auto", cmap="Blues", vmin=0, vmax=1)
        right.set_yticks(range(len(tasks)), tasks, fontsize=8)
        right.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        right.set_title("router's choices per task (share of items)", fontsize=9)
        fig.colorbar(image, ax=right, fraction=0.04)
    return save_figure(fig, path)


def rows_report(rows: Sequence[Row], metric: str = "acc") -> dict:
    """The part of a results JSON every table shares: per row its per-task results, its average of ``metric``, its
    omission set (None where it varies per item), blocks kept and kind."""
    return {
        "results": {row.name: row.results for row in rows},
        "average": {row.name: row.mean(metric) for row in rows},
        "omission_sets": {row.name: row.omit for row in rows},
        "blocks_kept": {row.name: row.blocks_kept for row in rows},
        "kinds": {row.name: row.kind for row in rows},
    }


def write_results(
    output: str | Path,
    rows: Sequence[Row],
    tasks: Sequence[str],
    report: dict,
    metric: str = "acc",
    histogram: dict[str, list[int]] | None = None,
    names: Sequence[str] = (),
) -> list[Path]:
    """Write ``report`` (a :func:`rows_report` plus whatever the command adds) as ``<output>.json`` and the rows as
    ``.md``, ``.csv`` and ``.png`` beside it, each atomically; returns the paths."""
    out = Path(output).with_suffix("")
    paths = [out.with_suffix(suffix) for suffix in (".json", ".md", ".csv", ".png")]
    atomic_write_json(paths[0], report)
    atomic_write_text(paths[1], markdown_table(rows, tasks, metric) + "\n")
    atomic_write_text(paths[2], csv_table(rows, tasks, metric))
    plot_results(rows, histogram, names, paths[3], metric)
    return paths
