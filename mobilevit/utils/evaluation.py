"""Classification metrics over a whole split, their files (metrics.json, per_class.csv, confusion_matrix.png)
and the confusion views shared by evaluate.py and the training reports callback."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from mobilevit.errors import UserInputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class ClassificationReport:
    """Metrics of one split: summary numbers, per-class scores and the confusion matrix (rows = true class)."""

    top1: float
    top5: float
    top_k: int
    macro_f1: float
    loss: float
    num_images: int
    class_names: list[str]
    support: list[int]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    confusion: torch.Tensor

    def summary(self) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "top_k": self.top_k,
            "macro_f1": self.macro_f1,
            "loss": self.loss,
            "num_images": self.num_images,
            "num_classes": len(self.class_names),
        }


def classification_report(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> ClassificationReport:
    """Top-1, top-k (k = min(5, classes)) accuracy, macro F1, cross-entropy and per-class scores."""
    num_classes = len(class_names)
    logits, targets = logits.float(), targets.long()
    top_k = min(5, num_classes)

    def per_class(fn: Any) -> list[float]:
        return fn(logits, targets, num_classes=num_classes, average="none").tolist()

    return ClassificationReport(
        top1=multiclass_accuracy(logits, targets, num_classes=num_classes, average="micro").item(),
        top5=multiclass_accuracy(logits, targets, num_classes=num_classes, top_k=top_k, average="micro").item(),
        top_k=top_k,
        macro_f1=multiclass_f1_score(logits, targets, num_classes=num_classes, average="macro").item(),
        loss=F.cross_entropy(logits, targets).item(),
        num_images=int(targets.numel()),
        class_names=list(class_names),
        support=torch.bincount(targets, minlength=num_classes).tolist(),
        precision=per_class(multiclass_precision),
        recall=per_class(multiclass_recall),
        f1=per_class(multiclass_f1_score),
        confusion=multiclass_confusion_matrix(logits, targets, num_classes=num_classes),
    )


def write_metrics_json(report: ClassificationReport, path: Path, **extra: Any) -> None:
    path.write_text(json.dumps({**report.summary(), **extra}, indent=2) + "\n")


def write_per_class_csv(report: ClassificationReport, path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class_index", "class_name", "support", "precision", "recall", "f1"])
        rows = zip(report.class_names, report.support, report.precision, report.recall, report.f1, strict=True)
        for index, (name, support, precision, recall, f1) in enumerate(rows):
            writer.writerow([index, name, support, f"{precision:.4f}", f"{recall:.4f}", f"{f1:.4f}"])


CONFUSION_ORDERS: tuple[str, ...] = ("index", "recall")


def class_order(report: ClassificationReport, order: str = "index") -> list[int]:
    """Class indices in display order: ``index`` (label order) or ``recall`` (lowest recall first)."""
    if order == "index":
        return list(range(len(report.class_names)))
    if order == "recall":
        return sorted(range(len(report.class_names)), key=lambda i: (report.recall[i], i))
    raise UserInputError(f"Unknown confusion-matrix order {order!r}; valid choices: {list(CONFUSION_ORDERS)}.")


@dataclass(frozen=True)
class ConfusedPair:
    """``count`` images of class ``true`` predicted as ``predicted`` (``share`` of the true class's images)."""

    true: str
    predicted: str
    count: int
    share: float


def most_confused_pairs(report: ClassificationReport, limit: int = 20) -> list[ConfusedPair]:
    """The ``limit`` largest off-diagonal cells of the confusion matrix, most images first."""
    num_classes = len(report.class_names)
    off_diagonal = report.confusion.long() * (1 - torch.eye(num_classes, dtype=torch.long))
    cells = [(int(off_diagonal[t, p]), t, p) for t, p in off_diagonal.nonzero().tolist()]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))  # most images first; ties in label order
    return [
        ConfusedPair(report.class_names[t], report.class_names[p], count, count / report.support[t])
        for count, t, p in cells[:limit]
    ]


def confused_pairs_markdown(pairs: list[ConfusedPair]) -> str:
    """A markdown table of confused pairs (TensorBoard's text tab renders it)."""
    if not pairs:
        return "No misclassified images."
    lines = ["| # | true class | predicted as | images | share of true class |", "|---:|---|---|---:|---:|"]
    for rank, pair in enumerate(pairs, start=1):
        lines.append(f"| {rank} | {pair.true} | {pair.predicted} | {pair.count} | {pair.share:.0%} |")
    return "\n".join(lines)


def confusion_matrix_figure(report: ClassificationReport, title: str = "", order: str = "index") -> Figure:
    """Row-normalised confusion matrix (each row sums to 1: recall on the diagonal), sized to stay legible.

    ``order="recall"`` puts the lowest-recall classes first (top rows, left columns), where errors gather.
    """
    from matplotlib.colors import PowerNorm  # imported on use: matplotlib is slow to import
    from matplotlib.figure import Figure

    positions = class_order(report, order)
    num_classes = len(positions)
    counts = report.confusion.double()[positions][:, positions]
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
    names = [f"{report.class_names[i]} ({i})" for i in positions]
    ax.set_xticks(ticks, names, rotation=90, fontsize=font)
    if order == "recall":  # the sort key next to each row's name
        names = [f"{name}  {report.recall[i]:.2f}" for name, i in zip(names, positions, strict=True)]
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


def plot_confusion_matrix(report: ClassificationReport, path: Path, title: str = "", order: str = "index") -> None:
    """Write :func:`confusion_matrix_figure` to ``path``."""
    confusion_matrix_figure(report, title=title, order=order).savefig(path)
