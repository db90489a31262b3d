"""Matplotlib figures of evaluation results shared by evaluate.py and the training diagnostics callback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mobilevit.metrics import SplitMetrics, class_order

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def confusion_matrix_figure(metrics: SplitMetrics, title: str = "", order: str = "index") -> Figure:
    """Row-normalised confusion matrix (each row sums to 1: recall on the diagonal), sized to stay legible.

    ``order="recall"`` puts the lowest-recall classes first (top rows, left columns), where errors gather.
    """
    from matplotlib.colors import PowerNorm  # imported on use: matplotlib is slow to import
    from matplotlib.figure import Figure

    positions = class_order(metrics, order)
    num_classes = len(positions)
    counts = metrics.confusion.double()[positions][:, positions]
    normalised = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).numpy()
    side = min(40.0, max(6.0, 0.18 * num_classes + 3.0))
    font = max(4.0, min(10.0, 500.0 / max(num_classes, 1)))
    fig = Figure(figsize=(side, side * 0.92), dpi=150 if num_classes > 30 else 100, layout="constrained")
    ax = fig.subplots()
    # White = 0; the square-root scale makes small confusions (e.g. 1 image of 10) clearly visible.
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    image = ax.imshow(normalised, cmap="Blues", norm=norm, interpolation="nearest")
    ax.set_xticks([i - 0.5 for i in range(1, num_classes)], minor=True)
    ax.set_yticks([i - 0.5 for i in range(1, num_classes)], minor=True)
    ax.grid(which="minor", color="#e4e4e4", linewidth=0.4)  # cell borders to follow rows and columns
    ax.tick_params(which="minor", length=0)
    ticks = range(num_classes)
    names = [f"{metrics.class_names[i]} ({i})" for i in positions]
    ax.set_xticks(ticks, names, rotation=90, fontsize=font)
    if order == "recall":  # the sort key next to each row's name
        names = [f"{name}  {metrics.recall[i]:.2f}" for name, i in zip(names, positions, strict=True)]
    ax.set_yticks(ticks, names, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class" + ("  (recall)" if order == "recall" else ""))
    if num_classes <= 20:  # small matrices: print the counts in the cells
        for row in range(num_classes):
            for col in range(num_classes):
                value = int(counts[row, col])
                if value:
                    colour = "white" if normalised[row, col] > 0.5 else "black"
                    ax.text(col, row, str(value), ha="center", va="center", fontsize=font, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="fraction of the true class")
    ax.set_title(title or "Confusion matrix (rows normalised)", fontsize=10)
    return fig


def plot_confusion_matrix(metrics: SplitMetrics, path: Path, title: str = "", order: str = "index") -> None:
    """Write :func:`confusion_matrix_figure` to ``path``."""
    confusion_matrix_figure(metrics, title=title, order=order).savefig(path)
