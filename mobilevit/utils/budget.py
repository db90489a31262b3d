"""How much of a run's training budget is spent: the one progress measure of the budget-aware schedules.

A run's budget is whichever of ``trainer.max_epochs``, ``trainer.max_steps`` and ``trainer.max_time`` ends it first, so
the progress is the largest of the three fractions. Following the elapsed time lets a schedule anneal fully by the
time limit on any machine (budgeted training, Li et al., ICLR 2020). Lightning's ``Timer`` (which enforces
``max_time``) keeps its elapsed time in the checkpoint, so a resumed run continues where it stopped.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Timer


def _timer(trainer: L.Trainer) -> Timer | None:
    return next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)


def time_budget_fraction(trainer: L.Trainer) -> float | None:
    """Training time elapsed / ``trainer.max_time`` (rank 0's clock on every rank); None without ``max_time``."""
    timer = _timer(trainer)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is None:  # no max_time
        return None
    elapsed = timer.time_elapsed("train")
    duration = elapsed + remaining  # max_time in seconds, through the Timer's public API
    if trainer.world_size > 1:  # every rank must follow the same schedule
        elapsed = trainer.strategy.broadcast(elapsed, src=0)
    return elapsed / duration if duration > 0 else 1.0


def training_progress(trainer: L.Trainer, within_epoch: bool = True) -> float:
    """Fraction of the training budget spent, in [0, 1]: the largest of the epoch, step and time fractions.

    With ``within_epoch`` the epoch fraction counts the batches done in the current epoch, so it grows smoothly
    even when the number of batches changes between epochs (a resolution schedule scales the batch size);
    without, it is ``current_epoch / max_epochs`` (for decisions taken once per epoch, before its first batch).
    """
    fractions = []
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        batches = trainer.num_training_batches
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        counted = within_epoch and math.isfinite(batches) and batches > 0
        fractions.append((trainer.current_epoch + (min(1.0, done / batches) if counted else 0.0)) / trainer.max_epochs)
    if trainer.max_steps is not None and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    time_fraction = time_budget_fraction(trainer)
    if time_fraction is not None:
        fractions.append(time_fraction)
    return min(1.0, max(fractions, default=0.0))


VALIDATIONS_PER_RUN = 30  # the default validation interval spreads about this many validations over a run


def validation_interval(max_epochs: int | None, open_ended: int = 10) -> int:
    """Default ``trainer.check_val_every_n_epoch``: about :data:`VALIDATIONS_PER_RUN` validations over
    ``max_epochs`` (every epoch up to 30 epochs, every 10th of 300), so validation stays a small share of the
    compute; ``open_ended`` for a run without an epoch budget (``max_epochs`` -1 or null: a time or step budget)."""
    if max_epochs is None or int(max_epochs) <= 0:
        return open_ended
    return max(1, round(int(max_epochs) / VALIDATIONS_PER_RUN))
