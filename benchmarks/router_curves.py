"""The curves and the final table of a `pudding-train fit` run, from its TensorBoard event files.

    python benchmarks/router_curves.py checkpoints/router/tensorboard/version_0 --output benchmarks/results/router_fit

writes ``<output>.png`` (validation regret and selection accuracy per epoch with the best-static and random
reference lines; routed zero-shot average per epoch with the dense, best static, random and oracle lines; training
loss per step), ``<output>.md`` (final validation metrics, and routed zero-shot accuracy per task against the
references) and ``<output>.json`` (every scalar series), and prints the markdown. Read-only on the run folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REFS = ("dense", "best_static", "random", "oracle")


def load_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's event files, as (step, value) lists in step order (the last write wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(run_dir.glob("events.out.tfevents.*")):
        raise SystemExit(f"error: no TensorBoard event files in {run_dir}")
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    series = {}
    for tag in acc.Tags()["scalars"]:
        by_step = {e.step: e.value for e in acc.Scalars(tag)}
        series[tag] = sorted(by_step.items())
    return series


def per_epoch(series: dict, tag: str) -> list[float]:
    """A per-epoch series in epoch order (Lightning logs epoch metrics at the epoch's last step)."""
    return [v for _, v in series.get(tag, [])]


def last(series: dict, tag: str) -> float | None:
    values = per_epoch(series, tag)
    return values[-1] if values else None


def best_epoch(series: dict) -> int:
    """Index of the epoch with the lowest validation regret (the one the bundle exports)."""
    regret = per_epoch(series, "val/regret")
    return min(range(len(regret)), key=regret.__getitem__) if regret else -1


def tasks_of(series: dict) -> list[str]:
    return sorted(t.split("/", 1)[1] for t in series if t.startswith("zeroshot/") and t != "zeroshot/average")


def table(series: dict) -> str:
    """Markdown: final (best-epoch) validation metrics with the reference regrets, and routed zero-shot per task."""
    epoch = best_epoch(series)

    def pick(tag: str) -> float | None:
        values = per_epoch(series, tag)
        return values[epoch] if -len(values) <= epoch < len(values) else None

    pct = lambda v: "—" if v is None else f"{100 * v:.2f}"  # noqa: E731
    num = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        f"Validation at the best epoch ({epoch}, lowest `val/regret`; the exported bundle):",
        "",
        "| | router | best static | random |",
        "|---|---|---|---|",
        f"| regret (nats/token) | {num(pick('val/regret'))} | {num(last(series, 'ref/val_regret_best_static'))} "
        f"| {num(last(series, 'ref/val_regret_random'))} |",
        f"| selection accuracy (%) | {pct(pick('val/selection_acc'))} | | |",
        f"| gain vs best static (nats/token) | {num(pick('val/gain_vs_static'))} | 0 | |",
        f"| mse | {num(pick('val/mse'))} | | |",
        "",
    ]
    tasks = tasks_of(series)
    if tasks:
        lines += [
            "Routed zero-shot accuracy (%) on the callback's evaluation items, same epoch:",
            "",
            "| | " + " | ".join(tasks) + " | average |",
            "|---|" + "---|" * (len(tasks) + 1),
            "| **PuDDing (router)** | "
            + " | ".join(pct(pick(f"zeroshot/{t}")) for t in tasks)
            + f" | **{pct(pick('zeroshot/average'))}** |",
        ]
        for ref in REFS:
            lines.append(
                f"| {ref.replace('_', ' ')} | "
                + " | ".join(pct(last(series, f"zeroshot_ref/{ref}/{t}")) for t in tasks)
                + f" | {pct(last(series, f'zeroshot_ref/{ref}'))} |"
            )
    return "\n".join(lines) + "\n"


def plot(series: dict, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    from pudding.core.plots import pyplot, save_figure

    fig, axes = pyplot().subplots(1, 4, figsize=(19, 4.2))
    epochs = lambda tag: list(range(len(per_epoch(series, tag))))  # noqa: E731

    steps = series.get("train/loss_step", [])
    axes[0].plot([s for s, _ in steps], [v for _, v in steps], lw=0.6, alpha=0.7)
    axes[0].set(title="training loss (per step)", xlabel="step", yscale="log")

    for ax, tag, title in (
        (axes[1], "regret", "regret (nats/token, lower is better)"),
        (axes[2], "selection_acc", "selection accuracy"),
    ):
        for split in ("train", "val"):
            ax.plot(epochs(f"{split}/{tag}"), per_epoch(series, f"{split}/{tag}"), marker="o", label=split)
        if tag == "regret":
            for ref, style in (("best_static", "--"), ("random", ":")):
                value = last(series, f"ref/val_regret_{ref}")
                if value is not None:
                    ax.axhline(value, ls=style, c="grey", label=f"val {ref.replace('_', ' ')}")
        ax.set(title=title, xlabel="epoch")
        ax.legend()

    ax = axes[3]
    ax.plot(
        epochs("zeroshot/average"),
        [100 * v for v in per_epoch(series, "zeroshot/average")],
        marker="o",
        c="C3",
        label="router",
    )
    for ref, style in zip(REFS, ("-", "--", ":", "-."), strict=True):
        value = last(series, f"zeroshot_ref/{ref}")
        if value is not None:
            ax.axhline(100 * value, ls=style, c="grey", label=ref.replace("_", " "))
    ax.set(title="routed zero-shot average (%)", xlabel="epoch")
    ax.legend(fontsize=8)
    for ax in axes[1:]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a TensorBoard version folder of pudding-train fit")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("benchmarks/results/router_fit"),
        help="path stem of the .png, .md and .json written",
    )
    args = parser.parse_args()
    series = load_scalars(args.run_dir)
    if "val/regret" not in series:
        raise SystemExit(f"error: {args.run_dir} has no val/regret: not a finished pudding-train fit epoch")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = table(series)
    args.output.with_suffix(".md").write_text(text)
    args.output.with_suffix(".json").write_text(json.dumps(series, indent=1))
    plot(series, args.output.with_suffix(".png"))
    print(text)
    print(f"wrote {args.output}.png, .md, .json")


if __name__ == "__main__":
    main()
