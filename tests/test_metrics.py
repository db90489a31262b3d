"""mobilevit/metrics.py: the metrics of a split (top-k, per-class precision and recall, confusion matrix) and its
views (class order, most confused pairs)."""

from __future__ import annotations

import pytest
import torch

from mobilevit.errors import UserInputError
from mobilevit.metrics import class_order, confused_pairs_markdown, most_confused_pairs, split_metrics
from mobilevit.plots import confusion_matrix_figure


def test_split_metrics_on_known_predictions() -> None:
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 2, 0]), 3).float()
    report = split_metrics(logits, targets, ["a", "b", "c"])
    assert report.top1 == pytest.approx(4 / 6) and report.top5 == 1.0 and report.top_k == 3
    assert report.support == [2, 2, 2]
    assert report.precision == pytest.approx([0.5, 2 / 3, 1.0])
    assert report.recall == pytest.approx([0.5, 1.0, 0.5])
    assert report.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def _known_report() -> object:
    # 3 classes, 4 images each: a is perfect, b loses 1 to c, c loses 3 to b.
    targets = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    predicted = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 1, 1, 1, 2])
    return split_metrics(torch.nn.functional.one_hot(predicted, 3).float(), targets, ["a", "b", "c"])


def test_confusion_views() -> None:
    report = _known_report()
    assert class_order(report, "index") == [0, 1, 2]
    assert class_order(report, "recall") == [2, 1, 0]  # recall 0.25, 0.75, 1.0
    with pytest.raises(UserInputError, match="order"):
        class_order(report, "size")
    pairs = most_confused_pairs(report, limit=5)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [("c", "b", 3), ("b", "c", 1)]
    assert pairs[0].share == pytest.approx(0.75)
    table = confused_pairs_markdown(most_confused_pairs(report, limit=1))
    assert table.splitlines()[2] == "| 1 | c | b | 3 | 75% |" and len(table.splitlines()) == 3

    figure = confusion_matrix_figure(report, title="t", order="recall")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c (2)  0.25", "b (1)  0.75", "a (0)  1.00"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c (2)", "b (1)", "a (0)"]
    assert ax.images[0].get_array()[0, 1] == pytest.approx(0.75)  # row c, column b
