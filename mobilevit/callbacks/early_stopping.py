"""Early stopping that ignores the first epochs (Keras' ``EarlyStopping(start_from_epoch=...)``)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping

from mobilevit.errors import UserInputError


class DelayedEarlyStopping(EarlyStopping):
    """Lightning's :class:`EarlyStopping` that starts monitoring at epoch ``start_epoch`` (0-based).

    Epochs before it neither set the best score nor count towards ``patience``, so a noisy warm-up cannot stop
    training early. All other arguments are :class:`EarlyStopping`'s (``monitor``, ``patience``, ``min_delta``, ...).
    """

    def __init__(self, *args: Any, start_epoch: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if start_epoch < 0:
            raise UserInputError(f"callbacks.early_stopping.start_epoch must be >= 0, got {start_epoch}.")
        self.start_epoch = start_epoch

    def _started(self, trainer: L.Trainer) -> bool:
        return trainer.current_epoch >= self.start_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started(trainer):
            super().on_validation_end(trainer, pl_module)
