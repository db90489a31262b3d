"""The training loop's side of progressive resizing: which image size the coming epoch trains at.

The data module holds the schedule's sizes and builds loaders for the size it is given
(:meth:`~mobilevit.data.base.ImageClassificationDataModule.set_train_image_size`); this callback decides the size from
the training progress (:func:`mobilevit.utils.budget.training_progress`: epochs, steps or ``max_time``, rank 0's clock
on every rank) and sets it before Lightning builds the epoch's training loader. The data side never reads the Trainer.
"""

from __future__ import annotations

import lightning as L

from mobilevit.utils.budget import training_progress


class ResolutionScheduler(L.Callback):
    """Sets the data module's training image size from its resolution schedule, once per epoch.

    The size of epoch ``e`` is the schedule's size at the progress when ``e`` starts: set at the start of fit (after
    a resume has restored the epoch and the clock) and at the end of each training epoch for the next one, so the
    loader Lightning reloads at the next epoch start (``reload_dataloaders_every_n_epochs=1``, set here) has it.
    Without a schedule it does nothing.
    """

    @staticmethod
    def _schedule(trainer: L.Trainer):
        datamodule = trainer.datamodule
        return getattr(datamodule, "resolution_schedule", None), datamodule

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and getattr(trainer.datamodule, "reloads_train_dataloader", False):
            trainer.reload_dataloaders_every_n_epochs = 1  # one loader per size: the data module reuses it

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule, datamodule = self._schedule(trainer)
        if schedule is not None:
            datamodule.set_train_image_size(schedule.size_at(training_progress(trainer, within_epoch=False)))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule, datamodule = self._schedule(trainer)
        if schedule is not None:  # the epoch is complete: its progress is that of the next epoch's start
            datamodule.set_train_image_size(schedule.size_at(training_progress(trainer, within_epoch=True)))
