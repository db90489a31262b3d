"""``checkpoints/last.ckpt``: the state to resume from, after every epoch and optionally every N steps."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from mobilevit.errors import UserInputError


def validates_after_epoch(trainer: L.Trainer) -> bool:
    """Whether a validation follows the current training epoch (``check_val_every_n_epoch``, validation batches)."""
    every = trainer.check_val_every_n_epoch
    has_batches = trainer.limit_val_batches != 0 and trainer.enable_validation
    return bool(has_batches and (every is None or (trainer.current_epoch + 1) % every == 0))


class LastCheckpoint(ModelCheckpoint):
    """A :class:`ModelCheckpoint` that keeps one file (``filename``, e.g. ``last``), rewritten after every epoch
    (after its validation, or at its end when no validation follows it) and, with ``every_n_train_steps=N``, also after every N-th optimizer step, so a crash
    loses at most N steps of work.

    Lightning's own ``every_n_train_steps`` replaces the per-epoch save instead of adding to it; here both
    happen (the step save is skipped on the last batch of an epoch, whose epoch-end save follows at once). The file
    is also written when training ends between two saves (``max_steps``/``max_time``) and, with
    ``save_on_exception=True``, when an exception stops it (NaN guard, Ctrl-C, SIGTERM): always resumable.
    Other arguments: :class:`ModelCheckpoint`'s.
    """

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        steps = every_n_train_steps
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise UserInputError(
                "callbacks.last_checkpoint.every_n_train_steps must be null (after every epoch only) or an integer "
                f">= 1, got {every_n_train_steps!r}."
            )
        self.save_every_n_train_steps: int = every_n_train_steps or 0

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Resuming into a new run directory: nothing to carry over (this run writes its own last.ckpt), so skip
        # Lightning's warning that the previous run's paths are not reloaded.
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Training can end between two saves (max_steps or max_time in the middle of an epoch): save its end state.
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning saves after validation; an epoch without one (check_val_every_n_epoch > 1) is saved here, so a
        # crash never loses more than an epoch.
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer) and not validates_after_epoch(trainer):
            if not self._should_skip_saving_checkpoint(trainer):
                self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self.save_every_n_train_steps
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        due = every and trainer.global_step % every == 0 and not last_batch
        if due and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
