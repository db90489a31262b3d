"""Exponential moving average of the weights (config: ``callbacks.ema``), plain weights until the average starts."""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA


class EMAWeightAveraging(LightningEMA):
    """Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging`, except that until the first update
    (``update_starting_at_step`` / ``update_starting_at_epoch``) the average *is* the current weights.

    Lightning's average holds the weights of the first step until then, so validation, checkpoints and, when training
    ends before the start, the final weights were the untrained ones. Here they are the plain weights, and the average
    starts from the plain weights of its first update (``torch.optim.swa_utils.AveragedModel`` copies them).
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        average = self._average_model
        if average is not None and int(average.n_averaged) == 0:  # not started: follow the plain weights
            tensors = itertools.chain(average.module.parameters(), average.module.buffers())
            current = itertools.chain(pl_module.parameters(), pl_module.buffers())
            for kept, value in zip(tensors, current, strict=True):
                kept.detach().copy_(value.detach())
