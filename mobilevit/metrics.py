"""Classification metrics of a whole split (:class:`SplitMetrics`), their files (metrics.json, per_class.csv) and
the confusion views shared by evaluate.py and the training diagnostics callback (plots: :mod:`mobilevit.plots`)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from mobilevit.errors import UserInputError


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 and top-k (k = min(5, num_classes)) accuracy and macro F1, keyed ``{prefix}acc`` etc."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro"),
            "f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
        },
        prefix=prefix,
        # Off: sharing states between metrics ("compute groups") mis-merged top-5 accuracy and macro F1.
        compute_groups=False,
    )


@dataclass
class SplitMetrics:
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


def split_metrics(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> SplitMetrics:
    """Top-1, top-k (k = min(5, classes)) accuracy, macro F1, cross-entropy and per-class scores."""
    num_classes = len(class_names)
    logits, targets = logits.float(), targets.long()
    top_k = min(5, num_classes)

    def per_class(fn: Any) -> list[float]:
        return fn(logits, targets, num_classes=num_classes, average="none").tolist()

    summary = classification_metrics(num_classes, "")(logits, targets)  # the numbers training logs, over the split

    return SplitMetrics(
        top1=summary["acc"].item(),
        top5=summary["acc_top5"].item(),
        top_k=top_k,
        macro_f1=summary["f1"].item(),
        loss=F.cross_entropy(logits, targets).item(),
        num_images=int(targets.numel()),
        class_names=list(class_names),
        support=torch.bincount(targets, minlength=num_classes).tolist(),
        precision=per_class(multiclass_precision),
        recall=per_class(multiclass_recall),
        f1=per_class(multiclass_f1_score),
        confusion=multiclass_confusion_matrix(logits, targets, num_classes=num_classes),
    )


def write_metrics_json(metrics: SplitMetrics, path: Path, **extra: Any) -> None:
    path.write_text(json.dumps({**metrics.summary(), **extra}, indent=2) + "\n")


def write_per_class_csv(metrics: SplitMetrics, path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class_index", "class_name", "support", "precision", "recall", "f1"])
        rows = zip(metrics.class_names, metrics.support, metrics.precision, metrics.recall, metrics.f1, strict=True)
        for index, (name, support, precision, recall, f1) in enumerate(rows):
            writer.writerow([index, name, support, f"{precision:.4f}", f"{recall:.4f}", f"{f1:.4f}"])


CONFUSION_ORDERS: tuple[str, ...] = ("index", "recall")


def class_order(metrics: SplitMetrics, order: str = "index") -> list[int]:
    """Class indices in display order: ``index`` (label order) or ``recall`` (lowest recall first)."""
    if order == "index":
        return list(range(len(metrics.class_names)))
    if order == "recall":
        return sorted(range(len(metrics.class_names)), key=lambda i: (metrics.recall[i], i))
    raise UserInputError(f"Unknown confusion-matrix order {order!r}; valid choices: {list(CONFUSION_ORDERS)}.")


@dataclass(frozen=True)
class ConfusedPair:
    """``count`` images of class ``true`` predicted as ``predicted`` (``share`` of the true class's images)."""

    true: str
    predicted: str
    count: int
    share: float


def most_confused_pairs(metrics: SplitMetrics, limit: int = 20) -> list[ConfusedPair]:
    """The ``limit`` largest off-diagonal cells of the confusion matrix, most images first."""
    num_classes = len(metrics.class_names)
    off_diagonal = metrics.confusion.long() * (1 - torch.eye(num_classes, dtype=torch.long))
    cells = [(int(off_diagonal[t, p]), t, p) for t, p in off_diagonal.nonzero().tolist()]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))  # most images first; ties in label order
    return [
        ConfusedPair(metrics.class_names[t], metrics.class_names[p], count, count / metrics.support[t])
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
