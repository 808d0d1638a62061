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

Each row keeps every item's value behind each metric, so a table states its uncertainty: per task the standard
error lm-eval reports, and between two rows a paired, task-stratified bootstrap interval of the difference of their
averages (:func:`paired_intervals`; an interval that holds zero is a tie).
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pudding.core.accuracy import average
from pudding.core.io import atomic_write_json, atomic_write_text
from pudding.core.item_records import (
    CHOICES_SUFFIX,
    ITEMS_SUFFIX,
    ItemPicks,
    item_picks,
    spread_picks,
    write_item_files,
)
from pudding.core.outcomes import Outcomes, set_key
from pudding.core.plots import pyplot, save_figure
from pudding.core.tasks import get_task


@dataclass
class Row:
    """One line of the table: per-task metrics (fractions, with their standard errors), blocks kept (mean over items
    where it varies), each item's value behind every metric (what the intervals resample), and per task and metric
    the records behind those values (which set ran each item, what it picked: the items file,
    :mod:`pudding.core.item_records`)."""

    name: str
    kind: str  # dense | static | best_static | task_pick | sleb | random | random_in_task | oracle | routed
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    blocks_kept: float = 0.0
    omit: list[int] | None = None
    items: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)
    picks: dict[str, dict[str, ItemPicks]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def average(self) -> float:
        return average(self.results, "acc")

    def mean(self, metric: str = "acc") -> float:
        """Mean over tasks of ``metric`` (tasks without it use ``acc``)."""
        return average(self.results, metric)

    def metric(self, task: str, metric: str = "acc") -> float:
        """``metric`` on ``task``, or ``acc`` where the task does not report it (BoolQ has no ``acc_norm``)."""
        return float(self.results[task].get(metric, self.results[task]["acc"]))

    def values(self, task: str, metric: str = "acc") -> np.ndarray:
        """Each item's value behind ``metric`` on ``task`` (``acc`` where the task does not report it)."""
        return self.items[task].get(metric, self.items[task]["acc"])

    def add(
        self,
        task: str,
        means: dict[str, float],
        items: dict[str, np.ndarray],
        picks: dict[str, ItemPicks] | None = None,
    ) -> None:
        """Record ``task``'s metrics (``means``, computed by the caller) with the items behind them (and, given,
        the records behind those, per metric), and each metric's standard error as lm-eval computes it (sample
        standard deviation over the square root of n)."""
        n = len(next(iter(items.values())))
        self.results[task] = {**means, "n": n} | {f"{m}_stderr": stderr(v) for m, v in items.items()}
        self.items[task] = {m: np.asarray(v, dtype=np.float64) for m, v in items.items()}
        if picks is not None:
            self.picks[task] = picks

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "omit": self.omit,
            "blocks_kept": self.blocks_kept,
            "results": self.results,
            "average": self.average,
        }


def stderr(values: np.ndarray) -> float | None:
    """lm-eval's standard error of a mean: sample standard deviation (n − 1) over √n; None below two items."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def _metrics(task: str) -> tuple[str, ...]:
    return get_task(task).metrics


def _per_item(out: Outcomes, keys: Sequence[str], metric: str) -> np.ndarray:
    """[len(keys), N] booleans: is each set's choice right on each item."""
    return np.stack([out.correct(k, metric) for k in keys])


def static_row(name: str, kind: str, outcomes: dict[str, Outcomes], omit: Sequence[int], num_blocks: int) -> Row:
    """Every item with the omission set ``omit`` (``()``: the dense model)."""
    key = set_key(omit)
    row = Row(name, kind, blocks_kept=float(num_blocks - len(omit)), omit=[int(b) for b in omit])
    for task, out in outcomes.items():
        items = {m: out.correct(key, m) for m in _metrics(task)}
        row.add(task, {m: float(v.mean()) for m, v in items.items()}, items, _same_set(out, key))
    return row


def _same_set(out: Outcomes, key: str) -> dict[str, ItemPicks]:
    """Every item of ``out`` with the set ``key``, per metric of its task."""
    return _records(out, np.full(len(out.item_ids), key, dtype=object))


def _records(out: Outcomes, sets: np.ndarray) -> dict[str, ItemPicks]:
    """Item ``i`` of ``out`` with the set ``sets[i]`` (a set key), per metric of its task."""
    return {m: item_picks(out, m, sets) for m in _metrics(out.task)}


def routed_row(
    name: str,
    outcomes: dict[str, Outcomes],
    choice_sets: Sequence[Sequence[int]],
    choices: dict[str, Sequence[int]],
    num_blocks: int,
    kind: str = "routed",
) -> Row:
    """Item ``i`` of a task with ``choice_sets[choices[task][i]]``; blocks kept is the mean over all items of all
    tasks (pooled)."""
    keys = [set_key(s) for s in choice_sets]
    kept = np.array([num_blocks - len(s) for s in choice_sets], dtype=float)
    row = Row(name, kind)
    kept_routed: list[float] = []
    for task, out in outcomes.items():
        n = len(out.item_ids)
        picks = np.asarray(choices[task], dtype=int)
        if picks.shape != (n,):
            raise ValueError(f"{task}: {picks.shape[0] if picks.ndim else 0} routing choices for {n} items")
        items = {m: _per_item(out, keys, m)[picks, np.arange(n)] for m in _metrics(task)}
        chosen = np.asarray(keys, dtype=object)[picks]
        row.add(task, {m: float(v.mean()) for m, v in items.items()}, items, _records(out, chosen))
        kept_routed.extend(kept[picks].tolist())
    row.blocks_kept = float(np.mean(kept_routed)) if kept_routed else 0.0
    return row


def spread_rows(
    outcomes: dict[str, Outcomes], choice_sets: Sequence[Sequence[int]], num_blocks: int
) -> tuple[Row, Row]:
    """Random routing (expected, uniform over ``choice_sets``: an item is worth the share of sets that answer it) and
    oracle routing (an item counts when any of them answers it)."""
    keys = [set_key(s) for s in choice_sets]
    kept = float(np.mean([num_blocks - len(s) for s in choice_sets]))
    random = Row("random routing (expected)", "random", blocks_kept=kept)
    oracle = Row("oracle routing (upper bound)", "oracle", blocks_kept=kept)
    uniform = np.full(len(keys), 1.0 / max(len(keys), 1))
    for task, out in outcomes.items():
        tables = {m: _per_item(out, keys, m) for m in _metrics(task)}
        random.add(
            task,
            {m: float(v.mean()) for m, v in tables.items()},
            {m: v.mean(axis=0) for m, v in tables.items()},
            {m: spread_picks(out, m, keys, uniform) for m in tables},
        )
        hits = {m: v.any(axis=0) for m, v in tables.items()}
        # the oracle's set on an item: the first choice that answers it (the first choice where none does)
        best = {m: item_picks(out, m, np.asarray(keys, dtype=object)[v.argmax(axis=0)]) for m, v in tables.items()}
        oracle.add(task, {m: float(v.mean()) for m, v in hits.items()}, hits, best)
    return random, oracle


def random_in_task_row(
    outcomes: dict[str, Outcomes],
    choice_sets: Sequence[Sequence[int]],
    choices: dict[str, Sequence[int]],
    num_blocks: int,
) -> Row:
    """Random routing within each task in the router's own proportions there: what routing adds beyond telling the
    tasks apart (an item is worth the share-weighted mean of the sets that answer it)."""
    keys = [set_key(s) for s in choice_sets]
    kept = np.array([num_blocks - len(s) for s in choice_sets], dtype=float)
    row = Row("random routing within task (router's proportions)", "random_in_task")
    total_kept, total = 0.0, 0
    for task, out in outcomes.items():
        picks = np.asarray(choices[task], dtype=int)
        shares = np.bincount(picks, minlength=len(keys)) / max(len(picks), 1)
        items = {m: shares @ _per_item(out, keys, m) for m in _metrics(task)}
        records = {m: spread_picks(out, m, keys, shares) for m in items}
        row.add(task, {m: float(v.mean()) for m, v in items.items()}, items, records)
        total_kept += float(shares @ kept) * len(picks)
        total += len(picks)
    row.blocks_kept = total_kept / max(total, 1)
    return row


TASK_PICK = "task-level pick (each task's best candidate on router data)"


def task_pick_row(outcomes: dict[str, Outcomes], sets: Mapping[str, Sequence[int]], num_blocks: int) -> Row:
    """Each task with its own static set ``sets[task]`` (picked on router data, never on evaluation items): the
    reference a task classifier over the candidates reaches. Which candidate each task got is the caller's to
    record."""
    row = Row(TASK_PICK, "task_pick")
    for task, out in outcomes.items():
        key = set_key(sets[task])
        items = {m: out.correct(key, m) for m in _metrics(task)}
        row.add(task, {m: float(v.mean()) for m, v in items.items()}, items, _same_set(out, key))
    row.blocks_kept = float(np.mean([num_blocks - len(sets[t]) for t in outcomes]))
    return row


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
    task_pick: Mapping[str, int] | None = None,
) -> list[Row]:
    """Rows in table order: dense, every candidate, best static, the task-level pick, SLEB, random, random within
    task, oracle, PuDDing (the router).

    ``choices[task]`` index ``choice_sets`` (the router's choices; default: ``omission_sets``, the candidates);
    random and oracle routing range over the same choices. With candidates of several depths, ``best_static``
    (candidate index) and ``sleb`` (omission set) may be given per depth, ``{depth: ...}``: one row per depth then.
    ``task_pick`` (task → candidate index, picked on router data) adds the task-level pick's row.
    """
    choice_sets = omission_sets if choice_sets is None else choice_sets
    rows = [static_row("dense", "dense", outcomes, (), num_blocks)]
    rows += [static_row(n, "static", outcomes, s, num_blocks) for n, s in zip(names, omission_sets, strict=True)]
    per_depth = isinstance(best_static, Mapping)
    best = dict(best_static) if per_depth else {None: int(best_static)}
    for depth, index in sorted(best.items(), key=lambda kv: kv[0] or 0):
        name = best_static_name(depth, names[index])
        rows.append(static_row(name, "best_static", outcomes, omission_sets[index], num_blocks))
    if task_pick:
        sets = {task: omission_sets[i] for task, i in task_pick.items()}
        rows.append(task_pick_row(outcomes, sets, num_blocks))
    if sleb is not None:
        slebs = dict(sleb) if isinstance(sleb, Mapping) else {None: sleb}
        for depth, omit in sorted(slebs.items(), key=lambda kv: kv[0] or 0):
            rows.append(static_row(sleb_name(depth), "sleb", outcomes, omit, num_blocks))
    random_row, oracle_row = spread_rows(outcomes, choice_sets, num_blocks)
    in_task = random_in_task_row(outcomes, choice_sets, choices, num_blocks)
    routed = routed_row(routed_name, outcomes, choice_sets, choices, num_blocks)
    return [*rows, random_row, in_task, oracle_row, routed]


def paired_intervals(
    reference: Row,
    rows: Sequence[Row],
    tasks: Sequence[str],
    metric: str = "acc",
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict]:
    """Per row: the difference ``reference`` minus that row in the average of ``metric`` over tasks, and its paired,
    task-stratified bootstrap interval (percentile, ``level``).

    Each resample draws every task's items with replacement, the same draw for both rows (paired), so only the items'
    differences vary; the tasks' means are averaged as the table averages them. Seeded per task (``seed`` and the
    task's name), so an interval is the same every run. A row whose interval holds zero ties the reference.
    """
    others = [r for r in rows if r.name != reference.name]
    boot = np.zeros((len(others), resamples))
    for task in tasks:
        diffs = np.stack([reference.values(task, metric) - r.values(task, metric) for r in others])  # [R, n]
        n = diffs.shape[1]
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        for lo in range(0, resamples, 1000):
            size = min(1000, resamples - lo)
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)  # [size, n]: each item's draws
            boot[:, lo : lo + size] += diffs @ counts.T / n / len(tasks)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boot, [tail, 100 - tail], axis=1)
    out = {}
    for i, row in enumerate(others):
        diff = reference.mean(metric) - row.mean(metric)
        out[row.name] = {
            "diff": diff,
            "low": float(low[i]),
            "high": float(high[i]),
            "tie": bool(low[i] <= 0 <= high[i]),
        }
    return out


def interval_text(interval: Mapping) -> str:
    """``+1.23 [+0.10, +2.40]`` in points, and ``tie`` where the interval holds zero."""
    text = f"{100 * interval['diff']:+.2f} [{100 * interval['low']:+.2f}, {100 * interval['high']:+.2f}]"
    return text + (" tie" if interval["tie"] else "")


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
    """Per task ``acc ±se`` (and ``/ acc_norm`` where the task has it), in %."""
    cells = []
    for task in tasks:
        res = row.results[task]
        cell = f"{100 * res['acc']:.2f}" + _pm(res.get("acc_stderr"))
        if "acc_norm" in res:
            cell += f" / {100 * res['acc_norm']:.2f}"
        cells.append(cell)
    return cells


def _pm(se: float | None) -> str:
    return "" if se is None else f" ±{100 * se:.2f}"


def average_stderr(row: Row, metric: str = "acc") -> float | None:
    """Standard error of the average over tasks (the tasks' items are independent): √(Σ se²) / tasks."""
    ses = [row.results[t].get(f"{metric}_stderr", row.results[t].get("acc_stderr")) for t in row.results]
    if not ses or any(se is None for se in ses):
        return None
    return float(np.sqrt(np.sum(np.square(ses))) / len(ses))


def markdown_table(
    rows: Sequence[Row], tasks: Sequence[str], metric: str = "acc", intervals: Mapping[str, Mapping] | None = None
) -> str:
    """Markdown: rows × tasks (acc ±se, or acc ±se / acc_norm in %), the average of ``metric`` ±se, blocks kept, and
    with ``intervals`` (:func:`paired_intervals`) the reference minus each row with its 95% interval."""
    head = ["", *(f"{t} acc{' / acc_norm' if 'acc_norm' in _metrics(t) else ''}" for t in tasks), "average", "kept"]
    if metric != "acc":
        head[-2] = f"average ({metric})"
    reference = next((r.name for r in rows if intervals is not None and r.name not in intervals), None)
    if intervals is not None:
        head.append(f"{reference} minus row [95% CI]")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        average_cell = f"{100 * row.mean(metric):.2f}" + _pm(average_stderr(row, metric))
        cells = [row.name, *_cells(row, tasks), average_cell, f"{row.blocks_kept:.2f}"]
        if intervals is not None:
            cells.append(interval_text(intervals[row.name]) if row.name in intervals else "")
        if row.kind == "routed":
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(rows: Sequence[Row], tasks: Sequence[str], intervals: Mapping[str, Mapping] | None = None) -> str:
    """Fixed-width table for the terminal (acc in %; with ``intervals``, the reference minus each row)."""
    width = max(len(r.name) for r in rows) + 2
    head = f"{'':<{width}}" + "".join(f"{t[:13]:>14}" for t in tasks) + f"{'average':>10}{'kept':>7}"
    lines = [head + ("   reference minus row [95% CI]" if intervals is not None else "")]
    for row in rows:
        accs = "".join(f"{100 * row.results[t]['acc']:>14.2f}" for t in tasks)
        line = f"{row.name:<{width}}{accs}{100 * row.average:>10.2f}{row.blocks_kept:>7.2f}"
        if intervals is not None and row.name in intervals:
            line += "   " + interval_text(intervals[row.name])
        lines.append(line)
    return "\n".join(lines)


def csv_table(
    rows: Sequence[Row], tasks: Sequence[str], metric: str = "acc", intervals: Mapping[str, Mapping] | None = None
) -> str:
    """CSV, one line per row: per task each metric and its standard error (fractions), the average and its standard
    error, blocks kept, and with ``intervals`` the reference minus the row with its 95% interval and whether it ties."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = [(t, m) for t in tasks for m in _metrics(t)]
    head = ["row", "kind", *(f"{t}/{m}{s}" for t, m in columns for s in ("", "_stderr"))]
    head += [f"average_{metric}", f"average_{metric}_stderr", "blocks_kept"]
    if intervals is not None:
        head += ["diff_vs_reference", "diff_low", "diff_high", "tie"]
    writer.writerow(head)

    def cell(value: float | None, digits: int = 6) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for row in rows:
        values = [cell(row.results[t].get(key)) for t, m in columns for key in (m, f"{m}_stderr")]
        line = [row.name, row.kind, *values, cell(row.mean(metric)), cell(average_stderr(row, metric))]
        line.append(f"{row.blocks_kept:.4f}")
        if intervals is not None:
            found = intervals.get(row.name)
            line += [cell(found["diff"]), cell(found["low"]), cell(found["high"]), found["tie"]] if found else [""] * 4
        writer.writerow(line)
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
    colours = {"routed": "tab:red", "oracle": "tab:gray", "random": "tab:gray", "random_in_task": "tab:gray"}
    colours |= {"dense": "tab:green", "task_pick": "tab:purple"}
    y = np.arange(len(rows))
    values = [100 * r.mean(metric) for r in rows]
    errors = [196 * (average_stderr(r, metric) or 0.0) for r in rows]  # 95%: 1.96 standard errors, in points
    left.barh(y, values, xerr=errors, capsize=2, color=[colours.get(r.kind, "tab:blue") for r in rows])
    left.set_yticks(y, [r.name for r in rows], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel(f"average zero-shot accuracy ({metric}, %; bars: ±1.96 standard errors)")
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
    intervals: Mapping[str, Mapping] | None = None,
) -> list[Path]:
    """Write ``report`` (a :func:`rows_report` plus whatever the command adds) as ``<output>.json`` and the rows as
    ``.md``, ``.csv`` and ``.png`` beside it, with the per-item records (``.items.parquet``, under ``metric``) and,
    where a row is routed, the router's choices (``.choices.parquet``, no labels: :mod:`pudding.core.item_records`),
    each atomically; returns the paths."""
    out = Path(output).with_suffix("")
    paths = [out.with_suffix(suffix) for suffix in (".json", ".md", ".csv", ".png")]
    atomic_write_json(paths[0], report)
    atomic_write_text(paths[1], markdown_table(rows, tasks, metric, intervals) + "\n")
    atomic_write_text(paths[2], csv_table(rows, tasks, metric, intervals))
    plot_results(rows, histogram, names, paths[3], metric)
    return paths + write_item_files(out, rows, tasks, metric)


def result_suffixes(routed: bool) -> tuple[str, ...]:
    """The files :func:`write_results` writes beside each other (``routed``: the table has a routed row), for the
    commands to check before any work."""
    return (".json", ".md", ".csv", ".png", ITEMS_SUFFIX, *((CHOICES_SUFFIX,) if routed else ()))
