"""Results table and plot from finished training runs.

Every train.py run writes ``summary.json`` into its run directory (:mod:`mobilevit.run_summary`). This command
collects them into a markdown table and a plot of test accuracy against parameters and latency:

    python -m mobilevit.report logs/train/runs/2026-11-25_05-00-00 logs/train/runs/2026-11-25_06-00-00
    python -m mobilevit.report logs/train --output docs/results.md --plot docs/results.png

Nothing in the table is typed by hand: every cell comes from a summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mobilevit.errors import UserInputError
from mobilevit.run_summary import SUMMARY_FILE
from mobilevit.utils.machine import machine_label

COLUMNS: tuple[str, ...] = (
    "experiment", "variant", "params", "protocol", "resolution", "epochs", "wall time", "machine",
    "tested", "val top-1", "test top-1", "test macro F1", "date",
)  # fmt: skip
# The experiments table: every try with the overrides that made it (its record of what changed).
EXPERIMENT_COLUMNS: tuple[str, ...] = (
    "experiment", "overrides", "protocol", "resolution", "epochs", "wall time", "tested", "val top-1", "test top-1",
    "date",
)  # fmt: skip


def find_summaries(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every summary.json in or under ``paths`` (run directories or folders of runs), oldest first."""
    files: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file() and path.name == SUMMARY_FILE:
            files.add(path.resolve())
        elif path.is_dir():
            files.update(file.resolve() for file in path.rglob(SUMMARY_FILE))
        else:
            raise UserInputError(f"'{path}' is neither a run directory nor a {SUMMARY_FILE} file.")
    if not files:
        raise UserInputError(f"No {SUMMARY_FILE} found under {[str(p) for p in paths]}: finish a train.py run first.")
    summaries = [json.loads(file.read_text()) for file in files]
    return sorted(summaries, key=lambda summary: summary["finished"])


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f} %"


def _resolution(summary: dict[str, Any]) -> str:
    """Training size (``64→96→128 px`` for a resolution schedule), with the test size when it differs."""
    schedule = summary.get("resolution_schedule")
    train = "→".join(str(size) for _, size in schedule) if schedule else str(summary["image_size"])
    test = summary.get("eval_image_size", summary["image_size"])
    tta = ", flip TTA" if summary.get("hflip_tta") else ""
    if not schedule and test == summary["image_size"]:
        return f"{train} px" + (f" (test{tta[1:]})" if tta else "")
    return f"{train} px (test {test}{tta})"


def _tested(summary: dict[str, Any]) -> str:
    return "last" if summary.get("test_weights") == "last" else "best on val"


def _val(summary: dict[str, Any]) -> float | None:
    """Val top-1 of the tested weights: the final ones (``test_weights=last``) or the best checkpoint's."""
    metrics = summary["metrics"]
    if summary.get("test_weights") == "last" and "val/acc_last" in metrics:
        return metrics["val/acc_last"]
    return metrics.get("val/acc_best", metrics.get("val/acc"))


def table_row(summary: dict[str, Any]) -> list[str]:
    """The results table's cells for one run."""
    metrics = summary["metrics"]
    return [
        summary["experiment"],
        summary["model"],
        f"{summary['params'] / 1e6:.2f} M",
        summary["protocol"],
        _resolution(summary),
        str(summary["epochs"]),
        f"{summary['wall_time_s'] / 60:.1f} min",
        machine_label(summary["machine"]),
        _tested(summary),
        _percent(_val(summary)),
        _percent(metrics.get("test/acc")),
        "-" if "test/f1" not in metrics else f"{metrics['test/f1']:.3f}",
        summary["finished"][:10],
    ]


def experiment_row(summary: dict[str, Any]) -> list[str]:
    """The experiments table's cells for one run: what it changed and what it reached."""
    overrides = " ".join(f"`{override}`" for override in summary.get("overrides") or []) or "-"
    return [
        summary["experiment"],
        overrides,
        summary["protocol"],
        _resolution(summary),
        str(summary["epochs"]),
        f"{summary['wall_time_s'] / 60:.1f} min",
        _tested(summary),
        _percent(_val(summary)),
        _percent(summary["metrics"].get("test/acc")),
        summary["finished"][:10],
    ]


def markdown_table(
    summaries: Sequence[dict[str, Any]],
    columns: Sequence[str] = COLUMNS,
    row: Callable[[dict[str, Any]], list[str]] = table_row,
) -> str:
    """A GitHub markdown table, one row per run (``row(summary)`` gives the cells of ``columns``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row(summary)) + " |" for summary in summaries]
    return "\n".join(lines) + "\n"


def plot_results(summaries: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Test top-1 against parameters and against batch-1 latency, one labelled point per run."""
    from matplotlib.figure import Figure  # imported on use: matplotlib is slow to import; no pyplot, no backend

    figure = Figure(figsize=(12, 4.2))
    axes = figure.subplots(1, 2, sharey=True)
    for axis, key, label in (
        (axes[0], "params", "parameters (millions)"),
        (axes[1], "latency_ms", "batch-1 latency, fast path (ms)"),
    ):
        for summary in summaries:
            x = summary[key] / 1e6 if key == "params" else summary[key]
            y = 100 * summary["metrics"].get("test/acc", float("nan"))
            axis.scatter(x, y, s=40)
            axis.annotate(
                f"{summary['experiment']} ({summary['protocol']})\n"
                f"{summary['model']} @ {_resolution(summary)}",
                (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7,
            )  # fmt: skip
        axis.margins(x=0.35, y=0.15)  # room for the labels
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 (%)")
    machines = sorted({machine_label(summary["machine"]) for summary in summaries})
    dates = sorted(summary["finished"][:10] for summary in summaries)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]}..{dates[-1]}"
    figure.suptitle(f"Flowers-102 runs, {when}, measured on {'; '.join(machines)}", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _run_label(summary: dict[str, Any]) -> str:
    return f"{summary['experiment']}: {summary['model']} @ {_resolution(summary)} ({summary['finished'][:10]})"


def plot_time_to_accuracy(summaries: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Validation top-1 against training wall-clock minutes, one line per run (runs without a record are left out)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5))
    axis = figure.subplots()
    drawn = 0
    for summary in summaries:
        points = summary.get("time_to_accuracy") or []
        if not points:
            continue
        minutes = [point["seconds"] / 60 for point in points]
        accuracy = [100 * point.get("val/acc", float("nan")) for point in points]
        axis.plot(minutes, accuracy, marker="o", markersize=3, label=_run_label(summary))
        drawn += 1
    if not drawn:
        raise UserInputError("None of the runs has a time-to-accuracy record (summary.json 'time_to_accuracy').")
    axis.set_xlabel("training wall-clock time (min)")
    axis.set_ylabel("val top-1 (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    machines = sorted({machine_label(summary["machine"]) for summary in summaries})
    axis.set_title(f"Time to accuracy, measured on {'; '.join(machines)}", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Collect finished train.py runs into a results table and plot.")
    parser.add_argument("runs", nargs="+", help="run directories or folders containing runs (searched recursively)")
    parser.add_argument("--output", type=Path, default=None, help="write the markdown table here (default: print)")
    parser.add_argument("--plot", type=Path, default=Path("results.png"), help="accuracy plot (PNG)")
    parser.add_argument("--time-plot", type=Path, default=None, help="val accuracy against wall-clock time (PNG)")
    parser.add_argument("--experiments", type=Path, default=None, help="write the experiments table (with each "
                        "run's overrides) here")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        summaries = find_summaries(args.runs)
        time_plot = plot_time_to_accuracy(summaries, args.time_plot) if args.time_plot else None
    except UserInputError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    table = markdown_table(summaries)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    print(table, end="")
    if args.experiments:
        args.experiments.parent.mkdir(parents=True, exist_ok=True)
        args.experiments.write_text(markdown_table(summaries, EXPERIMENT_COLUMNS, experiment_row))
        print(f"Experiments table: {args.experiments}")
    print(f"Plot: {plot_results(summaries, args.plot)}")
    if time_plot:
        print(f"Time-to-accuracy plot: {time_plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
