"""Classification metrics over a whole split, and their files: metrics.json, per_class.csv, confusion_matrix.png."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


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


def plot_confusion_matrix(report: ClassificationReport, path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (each row sums to 1: recall on the diagonal), sized to stay legible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_classes = len(report.class_names)
    counts = report.confusion.double()
    normalised = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).numpy()
    side = min(40.0, max(6.0, 0.18 * num_classes + 3.0))
    font = max(4.0, min(10.0, 500.0 / max(num_classes, 1)))
    fig, ax = plt.subplots(figsize=(side, side * 0.92), dpi=150 if num_classes > 30 else 100)
    image = ax.imshow(normalised, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ticks = range(num_classes)
    labels = [f"{name} ({i})" for i, name in enumerate(report.class_names)]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if num_classes <= 20:  # small matrices: print the counts in the cells
        for row in range(num_classes):
            for col in range(num_classes):
                value = int(counts[row, col])
                if value:
                    colour = "black" if normalised[row, col] > 0.5 else "white"
                    ax.text(col, row, str(value), ha="center", va="center", fontsize=font, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="fraction of the true class")
    ax.set_title(title or "Confusion matrix (rows normalised)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
