"""The model summary printed when fit starts: the network's layers with their FLOPs at the training resolution,
without the metric modules (torchmetrics) that Lightning would list as if they were layers."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch import nn
from torchmetrics import Metric, MetricCollection


class _LayersOnly(ModelSummary):
    """Lightning's summary over every sub-module except metrics and their children."""

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        metrics = [name for name, module in self._model.named_modules() if isinstance(module, (Metric, MetricCollection))]
        return [
            (name, module)
            for name, module in super().named_modules
            if not any(name == metric or name.startswith(metric + ".") for metric in metrics)
        ]

    def _forward_example_input(self) -> None:
        """One plain forward pass: FLOPs and sizes per image, without flip TTA's second pass in eval mode."""
        hflip_tta = getattr(self._model, "hflip_tta", False)
        self._model.hflip_tta = False
        try:
            super()._forward_example_input()
        finally:
            self._model.hflip_tta = hflip_tta


class NetworkSummary(RichModelSummary):
    """:class:`~lightning.pytorch.callbacks.RichModelSummary` of the network's layers only.

    FLOPs (MACs x 2, as torch's FlopCounterMode counts them) show when the module has an ``example_input_array``:
    :class:`~mobilevit.module.ImageClassifier` sets one at the training resolution when fit starts.
    """

    def _summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> ModelSummary:
        return _LayersOnly(pl_module, max_depth=self._max_depth)
