"""mobilevit/plots.py: the confusion matrix figure."""

from __future__ import annotations

import torch

from mobilevit.metrics import split_metrics
from mobilevit.plots import confusion_matrix_figure


def test_confusion_matrix_with_102_named_classes_stays_legible() -> None:
    names = [f"flower name number {i}" for i in range(102)]
    targets = torch.arange(102).repeat_interleave(2)
    logits = torch.nn.functional.one_hot((targets + (torch.arange(204) % 2)) % 102, 102).float()
    figure = confusion_matrix_figure(split_metrics(logits, targets, names), order="recall")
    width, height = figure.get_size_inches() * figure.dpi
    assert width >= 3000 and height >= 2800  # about 25 px per class at 150 dpi
    labels = figure.axes[0].get_yticklabels()
    assert len(labels) == 102 and labels[0].get_fontsize() >= 4.5
