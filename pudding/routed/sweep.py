"""The accuracy–compute curve of a router bundle: ``pudding curve --bundle DIR``.

x is the mean number of blocks kept on the evaluation items, y the average zero-shot accuracy (``acc``, averaged over
tasks as in the results table). The series:

- ``dense``: the full model, one point;
- ``sleb``: SLEB at each depth the bundle's candidates span (one perplexity search to the deepest; its first ``d``
  removals are SLEB at ``d``, :func:`pudding.search.sleb.sleb_sets`);
- ``best_static``: at each depth, the candidate of that depth with the best mean score on the router-training rows
  (:func:`pudding.router.static.best_static_by_depth`, the one rule of the table's best-static row);
- ``fixed_router``: at each depth, the bundle's own router restricted to that depth's candidates (plain argmax of its
  predictions over them). At the deepest depth this is PuDDing as the paper runs it: every prompt loses the same
  number of blocks and the router picks which. It reuses the bundle's predictions, so it needs no second router; a
  separately trained fixed-depth router is compared by evaluating its own bundle (``pudding compare --bundle OTHER``);
- ``budget_router``: the router under each budget (λ calibrated on its validation rows,
  :mod:`pudding.router.budget`), placed at the mean blocks kept it *measures* on the evaluation items, which can
  differ a little from the budget;
- ``oracle``: at each depth, an item counts when any candidate of that depth answers it (an upper bound).

No point costs LLM work of its own: the outcomes of every omission set on every item are scored once and cached
(:mod:`pudding.core.outcomes`), the router predicts each task's items once, and a budget is a re-choice over those
predictions (``router.set_budget(b)`` then ``router.choose(preds)``: the code ``pudding compare --bundle DIR --budget
b`` runs, so each point equals that run's routed row).

With a ``pudding bench`` JSON (``--bench FILE``) each point also gets a pre-fill time ratio against the dense model
at ``bench_tokens`` tokens (128 by default) and the plot a second x axis. The bench measures the dense pre-fill, the
pre-fill with the routed prompt's blocks skipped and the router's own time; the time per block is the difference of
the first two over the blocks skipped, the rest (embedding, head) is fixed, so a point keeping ``k`` blocks on
average costs ``(fixed + k × per block [+ router]) / dense``: the router's time is added for the two router series
only, and not where a budget leaves one choice (budget 1.0 with the dense model as a choice: the router does not
run). Where the bench's prompt ran with no block skipped, or the timings leave no positive time per block or one
that times the block count exceeds the dense time, the ratio falls back to ``k / L`` (plus the router), and the JSON
says so.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pudding.core.accuracy import average
from pudding.core.candidates import Choices
from pudding.core.errors import OptionError
from pudding.core.io import atomic_write_json, atomic_write_text, print_line
from pudding.core.outcomes import Outcomes
from pudding.core.plots import pyplot, save_figure
from pudding.core.results import depth_counts, routed_row, spread_rows, static_row
from pudding.core.tasks import DataOptions, get_task
from pudding.routed.evaluate import BundleRun, BundleSettings, prepare_bundle, run_config
from pudding.router.budget import lambda_text
from pudding.router.bundle import resolve_bundle

SERIES = ("dense", "sleb", "best_static", "fixed_router", "budget_router", "oracle")
"""The curve's series, in the order of the table, the JSON and the legend."""

DEFAULT_BUDGETS = tuple(round(0.70 + 0.025 * i, 3) for i in range(13))
"""The default budget grid, 0.70 to 1.00 in steps of 0.025 (the budgets where the mean crosses a depth are added)."""

DEFAULT_BENCH_TOKENS = 128


# ------------------------------------------------------------------------------------------------ budgets


def sweep_budgets(budgets: Sequence[float] | None, kept_levels: Sequence[int], num_blocks: int) -> list[float]:
    """The budgets to sweep, largest first, without repeats: ``budgets`` as given, or by default the grid
    :data:`DEFAULT_BUDGETS` plus each choice depth's fraction of blocks kept (where the mean kept crosses a depth)."""
    if budgets is None:
        budgets = [*DEFAULT_BUDGETS, *(k / num_blocks for k in kept_levels)]
    unique: dict[float, float] = {}
    for b in budgets:
        unique.setdefault(round(float(b), 9), float(b))
    return sorted(unique.values(), reverse=True)


# ------------------------------------------------------------------------------------------------ pre-fill


@dataclass
class PrefillModel:
    """Pre-fill time against the dense model as a function of blocks kept, from one ``pudding bench`` row."""

    file: str
    tokens: int
    num_blocks: int
    dense_ms: float
    pruned_ms: float
    skipped: int
    router_ms: float
    measured_ratio: float
    fit: str  # "per block" | "proportional (...)"
    ms_per_block: float
    fixed_ms: float

    def ratio(self, blocks_kept: float, routed: bool = False) -> float:
        """Pre-fill time / dense pre-fill time at ``blocks_kept`` blocks (plus the router's time when ``routed``)."""
        ms = self.fixed_ms + blocks_kept * self.ms_per_block + (self.router_ms if routed else 0.0)
        return ms / self.dense_ms

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "tokens": self.tokens,
            "dense_prefill_ms": self.dense_ms,
            "pruned_prefill_ms": self.pruned_ms,
            "blocks_skipped": self.skipped,
            "router_ms": self.router_ms,
            "measured_ratio_routed_vs_dense": self.measured_ratio,
            "fit": self.fit,
            "ms_per_block": self.ms_per_block,
            "fixed_ms": self.fixed_ms,
        }


def read_bench(path: str | Path, tokens: int = DEFAULT_BENCH_TOKENS) -> dict:
    """The ``pudding bench`` report at ``path`` and its row at ``tokens`` tokens (``report["row"]``), or a one-line
    error naming option ``bench``. Cheap: commands call it before loading any model."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"option bench: {path} is not a file (give the JSON pudding bench writes)")
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OptionError(f"option bench: {path} is not valid JSON ({exc})") from None
    rows = report.get("lengths") if isinstance(report, dict) else None
    if not isinstance(rows, list) or not rows:
        raise OptionError(f"option bench: {path} is not a pudding bench report (no 'lengths')")
    found = [r for r in rows if isinstance(r, dict) and r.get("tokens") == tokens]
    if not found:
        have = ", ".join(str(r.get("tokens")) for r in rows if isinstance(r, dict))
        raise OptionError(
            f"option bench: {path} has no {tokens}-token row (it has {have}); "
            f"run pudding bench --lengths {tokens}, or set --bench_tokens"
        )
    row = found[0]
    try:
        for part in ("dense_prefill", "pruned_prefill", "router"):
            float(row[part]["median_ms"])
        list(row["omit"])
    except (KeyError, TypeError, ValueError):
        raise OptionError(f"option bench: {path}: the {tokens}-token row lacks pre-fill medians or 'omit'") from None
    return {**report, "row": row, "file": str(path)}


def prefill_model(bench: dict, num_blocks: int, base: str | None = None) -> PrefillModel:
    """The :class:`PrefillModel` of a :func:`read_bench` report, for a model of ``num_blocks`` blocks (``base``,
    when given, must be the model the bench timed)."""
    row, path = bench["row"], bench["file"]
    timed = bench.get("base_model")
    if base is not None and timed is not None and timed != base:
        raise OptionError(f"option bench: {path} timed base model {timed!r}, this evaluation runs {base!r}")
    dense = float(row["dense_prefill"]["median_ms"])
    pruned = float(row["pruned_prefill"]["median_ms"])
    router = float(row["router"]["median_ms"])
    skipped = len(row["omit"])
    measured = float(row.get("ratio_routed_vs_dense", (pruned + router) / dense))
    if dense <= 0:
        raise OptionError(f"option bench: {path}: dense pre-fill median is {dense} ms")
    per_block = (dense - pruned) / skipped if skipped else 0.0
    if skipped and per_block > 0 and dense - num_blocks * per_block >= 0:
        fit, fixed = "per block", dense - num_blocks * per_block
    else:
        if not skipped:
            why = "no block skipped in the bench"
        elif per_block <= 0:
            why = "timings give no positive time per block"
        else:  # noise in a few skipped blocks' saving, scaled to every block, overshoots the dense time
            why = f"{num_blocks} x {per_block:.2f} ms per block exceeds the dense {dense:.1f} ms"
        fit, per_block, fixed = f"proportional ({why})", dense / num_blocks, 0.0
    return PrefillModel(
        file=path,
        tokens=int(row["tokens"]),
        num_blocks=num_blocks,
        dense_ms=dense,
        pruned_ms=pruned,
        skipped=skipped,
        router_ms=router,
        measured_ratio=measured,
        fit=fit,
        ms_per_block=per_block,
        fixed_ms=fixed,
    )


# ------------------------------------------------------------------------------------------------ points


@dataclass
class Point:
    """One point of the curve: per-task metrics (fractions) at a mean number of blocks kept on the evaluation items.

    ``depth`` is the blocks omitted for the per-depth series; ``budget``, ``lam`` and ``calibration_kept`` (the mean
    blocks kept on the router's calibration rows) belong to the budget router; ``depths`` counts the items per blocks
    kept for the router series.
    """

    series: str
    label: str
    blocks_kept: float
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    depth: int | None = None
    budget: float | None = None
    lam: float | str | None = None
    calibration_kept: float | None = None
    omit: list[int] | None = None
    candidate: str | None = None
    depths: dict[str, int] | None = None
    prefill_ratio: float | None = None
    router_runs: bool | None = None  # router series: False where the budget leaves one choice (no router time)

    @property
    def average(self) -> float:
        return average(self.results, "acc")

    def to_dict(self) -> dict:
        return {
            "series": self.series,
            "label": self.label,
            "blocks_kept": self.blocks_kept,
            "average": self.average,
            "results": self.results,
            "depth": self.depth,
            "budget": self.budget,
            "lambda": self.lam,
            "calibration_kept": self.calibration_kept,
            "omit": self.omit,
            "candidate": self.candidate,
            "depths": self.depths,
            "router_runs": self.router_runs,
            "prefill_ratio": self.prefill_ratio,
        }


def _static_point(series: str, label: str, outcomes, omit, num_blocks: int, depth: int | None, **extra) -> Point:
    row = static_row(label, series, outcomes, omit, num_blocks)
    return Point(series, label, row.blocks_kept, row.results, depth=depth, omit=row.omit, **extra)


def _kept_counts(choices: dict[str, Sequence[int]], kept: Sequence[int]) -> dict[str, int]:
    """Items per blocks kept, pooled over tasks, shallowest first."""
    return depth_counts([c for picks in choices.values() for c in picks], kept)


def restricted_argmax(preds: torch.Tensor, columns: Sequence[int]) -> torch.Tensor:
    """Per row, the column among ``columns`` with the highest prediction (first on a tie), as an index into all."""
    columns = list(columns)
    return torch.as_tensor(columns)[torch.as_tensor(preds)[:, columns].argmax(dim=-1)]


def curve_points(
    outcomes: dict[str, Outcomes],
    choice_sets: Sequence[Sequence[int]],
    names: Sequence[str],
    num_blocks: int,
    preds: Mapping[str, torch.Tensor],
    router,
    budgets: Sequence[float],
    best_static: Mapping[int, int],
    sleb: Mapping[int, Sequence[int]] | None = None,
) -> list[Point]:
    """Every point of the curve (series in :data:`SERIES` order), each a lookup in ``outcomes``.

    ``choice_sets`` are the router's choices (candidates first, in candidate-file order, then the dense model when it
    is a choice); ``names`` the candidates' names; ``preds[task]`` the router's predictions [N, C]; ``best_static``
    the best static candidate (index) per depth; ``sleb`` SLEB's set per depth. ``router`` routes under a budget
    with ``set_budget(b)``, ``choose(preds)`` and ``fixed_choice()``; its own budget is restored afterwards.
    """
    sets = [tuple(sorted(int(b) for b in s)) for s in choice_sets]
    kept = [num_blocks - len(s) for s in sets]
    depths = sorted({len(s) for s in sets if s})
    points = [_static_point("dense", "dense", outcomes, (), num_blocks, 0)]
    for depth, omit in sorted((sleb or {}).items()):
        points.append(_static_point("sleb", f"SLEB @{depth}", outcomes, omit, num_blocks, depth))
    for depth in depths:
        index = best_static[depth]
        label = f"best static @{depth} ({names[index]})"
        points.append(
            _static_point("best_static", label, outcomes, sets[index], num_blocks, depth, candidate=names[index])
        )
    for depth in depths:
        columns = [i for i, s in enumerate(sets) if len(s) == depth]
        choices = {task: restricted_argmax(p, columns).tolist() for task, p in preds.items()}
        row = routed_row("", outcomes, sets, choices, num_blocks)
        results, mean = row.results, row.blocks_kept
        label = f"router @{depth} (argmax over {len(columns)} candidates)"
        points.append(
            Point(
                "fixed_router", label, mean, results, depth=depth, depths=_kept_counts(choices, kept), router_runs=True
            )
        )
    calibration = getattr(router, "calibration", None)
    saved = router.budget
    try:
        for budget in budgets:
            lam = router.set_budget(budget)
            choices = {task: router.choose(p).tolist() for task, p in preds.items()}
            row = routed_row("", outcomes, sets, choices, num_blocks)
            results, mean = row.results, row.blocks_kept
            point = Point("budget_router", f"router, budget {budget:.4g}", mean, results, budget=budget)
            point.lam = lambda_text(lam)
            point.calibration_kept = calibration.solve(budget)[1] if calibration is not None else None
            point.depths = _kept_counts(choices, kept)
            point.router_runs = router.fixed_choice() is None
            points.append(point)
    finally:
        router.set_budget(saved)
    for depth in depths:
        _, oracle = spread_rows(outcomes, [s for s in sets if len(s) == depth], num_blocks)
        points.append(Point("oracle", f"oracle @{depth}", float(num_blocks - depth), oracle.results, depth=depth))
    return points


# ------------------------------------------------------------------------------------------------ tables


def _columns(tasks: Sequence[str]) -> list[tuple[str, str]]:
    return [(t, m) for t in tasks for m in get_task(t).metrics]


def csv_curve(points: Sequence[Point], tasks: Sequence[str]) -> str:
    """CSV, one line per point: series, label, budget, λ, depth, mean blocks kept (on the evaluation items, and on the
    calibration rows for the budget router), per-task metrics (fractions), the average of acc and the pre-fill ratio
    (empty without a bench)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = _columns(tasks)
    head = ["series", "label", "budget", "lambda", "depth", "blocks_kept", "calibration_kept"]
    writer.writerow([*head, *(f"{t}/{m}" for t, m in columns), "average_acc", "prefill_ratio"])

    def cell(value, fmt: str = "{}") -> str:
        return "" if value is None else fmt.format(value)

    for p in points:
        writer.writerow(
            [
                p.series,
                p.label,
                cell(p.budget, "{:.6g}"),
                cell(p.lam),
                cell(p.depth),
                f"{p.blocks_kept:.4f}",
                cell(p.calibration_kept, "{:.4f}"),
                *(f"{p.results[t][m]:.6f}" for t, m in columns),
                f"{p.average:.6f}",
                cell(p.prefill_ratio, "{:.4f}"),
            ]
        )
    return buffer.getvalue()


def markdown_curve(points: Sequence[Point], tasks: Sequence[str], num_blocks: int) -> str:
    """Markdown: one line per point, acc per task in %, the average and blocks kept (and the pre-fill ratio)."""
    ratio = any(p.prefill_ratio is not None for p in points)
    head = ["series", "point", f"blocks kept (of {num_blocks})", *(f"{t} acc" for t in tasks), "average acc"]
    head += ["pre-fill / dense"] if ratio else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        cells = [p.series, p.label, f"{p.blocks_kept:.2f}", *(f"{100 * p.results[t]['acc']:.2f}" for t in tasks)]
        cells.append(f"{100 * p.average:.2f}")
        if ratio:
            cells.append("" if p.prefill_ratio is None else f"{p.prefill_ratio:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_curve(points: Sequence[Point]) -> str:
    """Fixed-width lines for the terminal: point, blocks kept, average acc in % (and the pre-fill ratio)."""
    width = max(len(p.label) for p in points) + 2
    ratio = any(p.prefill_ratio is not None for p in points)
    lines = [f"{'':<{width}}{'kept':>7}{'average':>9}" + (f"{'pre-fill':>10}" if ratio else "")]
    for p in points:
        line = f"{p.label:<{width}}{p.blocks_kept:>7.2f}{100 * p.average:>9.2f}"
        if ratio:
            line += f"{p.prefill_ratio:>10.3f}" if p.prefill_ratio is not None else f"{'':>10}"
        lines.append(line)
    return "\n".join(lines)


STYLE = {
    "dense": ("dense", "tab:green", "*", "none"),
    "sleb": ("SLEB (per depth)", "tab:brown", "v", "-"),
    "best_static": ("best static (per depth)", "tab:blue", "s", "-"),
    "fixed_router": ("router, fixed depth", "tab:orange", "D", "-"),
    "budget_router": ("router, compute budget", "tab:red", "o", "-"),
    "oracle": ("oracle (per depth)", "tab:gray", "^", "--"),
}


def plot_curve(
    points: Sequence[Point],
    num_blocks: int,
    path: str | Path,
    prefill: PrefillModel | None = None,
    title: str | None = None,
) -> Path:
    """PNG: average accuracy against mean blocks kept, one line per series; with ``prefill`` a second x axis (top)
    shows the LLM's pre-fill time against the dense model's."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    if title:
        fig.suptitle(title, fontsize=9)
    for series in SERIES:
        mine = [p for p in points if p.series == series]
        if not mine:
            continue
        mine.sort(key=lambda p: (p.blocks_kept, p.budget or 0.0))
        label, colour, marker, line = STYLE[series]
        ax.plot(
            [p.blocks_kept for p in mine],
            [100 * p.average for p in mine],
            marker=marker,
            linestyle=line,
            color=colour,
            label=label,
            markersize=9 if series == "dense" else 5,
        )
    ax.set_xlabel(f"mean blocks kept on the evaluation items (of {num_blocks})")
    ax.set_ylabel("average zero-shot accuracy (acc, %)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if prefill is not None:
        per, fixed, dense = prefill.ms_per_block, prefill.fixed_ms, prefill.dense_ms
        top = ax.secondary_xaxis(
            "top", functions=(lambda k: (fixed + k * per) / dense, lambda r: (r * dense - fixed) / per)
        )
        top.set_xlabel(
            f"LLM pre-fill time / dense at {prefill.tokens} tokens (router series add "
            f"{prefill.router_ms / dense:.3f} where the router runs; {prefill.fit})",
            fontsize=8,
        )
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ the command


def check_depths(bundle: str | Path) -> None:
    """Refuse, before any model loads, a bundle whose choices all omit the same number of blocks (no budget moves
    it, so it has no curve) or that has no budget calibration."""
    info = json.loads((resolve_bundle(bundle) / "router.json").read_text())
    choices = Choices.listed(
        info["candidate_names"], info["omission_sets"], info["num_blocks"], bool(info.get("dense_choice"))
    )
    choices.require_depths("bundle", f"router bundle {bundle}", "no budget moves it along a curve")
    if not info.get("calibration"):
        raise OptionError(
            f"option bundle: router bundle {bundle} has no budget calibration (its predictions on validation rows); "
            "re-export it with the router data (pudding-train export CHECKPOINT --output DIR)"
        )


def sweep_bundle(
    bundle: str,
    tasks: Sequence[str],
    options: DataOptions,
    settings: BundleSettings | None = None,
    *,
    output: str | Path = "checkpoints/eval/curve",
    budgets: Sequence[float] | None = None,
    bench: str | None = None,
    bench_tokens: int = DEFAULT_BENCH_TOKENS,
    log: Callable[[str], None] = print_line,
    **overrides: Any,
) -> dict:
    """The accuracy–compute curve of a bundle; writes ``<output>.{json,md,csv,png}`` and returns the JSON report.

    The JSON: ``series[name]`` (a list of points per name in :data:`SERIES`: ``label``, ``blocks_kept``,
    ``average``, ``results[task]``, ``depth``, ``budget``, ``lambda``, ``calibration_kept``, ``omit``, ``candidate``,
    ``depths``, ``prefill_ratio``), ``budgets``, ``num_blocks``, ``depths`` (the candidates'),
    ``best_static_picked_on``, ``bench`` (the pre-fill fit, or None), ``config`` and ``seconds``. ``budgets``: None
    for the default grid (:func:`sweep_budgets`). ``settings`` and the keyword arguments that override its fields as
    :func:`pudding.routed.evaluate.evaluate_bundle`'s.
    """
    started = time.perf_counter()
    settings = BundleSettings.resolve(settings, overrides)
    check_depths(bundle)
    bench_report = read_bench(bench, bench_tokens) if bench is not None else None
    run: BundleRun = prepare_bundle(bundle, tasks, options, settings, budget="argmax", log=log)
    num_blocks = run.cset.num_blocks
    prefill = prefill_model(bench_report, num_blocks, run.base) if bench_report is not None else None
    kept_levels = sorted({num_blocks - len(s) for s in run.choice_sets})
    grid = sweep_budgets(budgets, kept_levels, num_blocks)
    best, source = run.best_static_by_depth()
    points = curve_points(
        run.outcomes, run.choice_sets, run.names, num_blocks, run.preds, run.router, grid, best, run.sleb
    )
    if prefill is not None:
        for p in points:
            p.prefill_ratio = prefill.ratio(p.blocks_kept, routed=bool(p.router_runs))
    report = {
        "series": {s: [p.to_dict() for p in points if p.series == s] for s in SERIES},
        "budgets": grid,
        "num_blocks": num_blocks,
        "depths": list(run.cset.depths),
        "best_static_picked_on": source,
        "candidate_names": run.choice_names,
        "bench": prefill.to_dict() if prefill is not None else None,
        "config": run_config(
            run,
            options,
            settings,
            sweep=True,
            budgets=None if budgets is None else list(budgets),
            bench=bench,
            bench_tokens=bench_tokens if bench is not None else None,
        ),
        "seconds": round(time.perf_counter() - started, 2),
    }
    out = Path(output)
    atomic_write_json(out.with_suffix(".json"), report)
    atomic_write_text(out.with_suffix(".md"), markdown_curve(points, list(tasks), num_blocks) + "\n")
    atomic_write_text(out.with_suffix(".csv"), csv_curve(points, list(tasks)))
    items = sum(len(o.item_ids) for o in run.outcomes.values())
    title = f"{run.base} ({run.record.get('dtype')}): {len(tasks)} tasks, {items} evaluation items"
    plot_curve(points, num_blocks, out.with_suffix(".png"), prefill, title=title)
    log(text_curve(points))
    log(f"wrote {out.with_suffix('.json')}, .md, .csv and .png ({report['seconds']:.0f} s)")
    return report
