"""Stop training at the first non-finite loss, before it reaches the weights or a checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from mobilevit.errors import UserInputError


class NonFiniteLossError(UserInputError):
    """The training loss became NaN or infinite. The usual fixes are settings (a lower ``optimizer.lr``,
    ``trainer.gradient_clip_val``, ``trainer.precision=32-true``), so train.py reports it like a config error:
    one line, exit code 2."""


class NonFiniteLossGuard(Callback):
    """Raise :class:`NonFiniteLossError` (with epoch, step and the checkpoint to resume from) as soon as a training
    loss is NaN or infinite.

    The check runs before ``backward``, so the bad loss never produces gradients and no optimizer step uses it: the
    weights, and ``last.ckpt`` (also written when the error stops training), keep the last good state. Under DDP the decision is shared, so
    every process stops at the same step.
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            finite = not trainer.strategy.reduce_boolean_decision(not finite, all=False)
        if not finite:
            raise NonFiniteLossError(self._message(trainer, loss))

    @staticmethod
    def _message(trainer: L.Trainer, loss: torch.Tensor) -> str:
        value = loss.detach().float().flatten()[0].item() if loss.numel() else float("nan")
        batch = trainer.fit_loop.epoch_loop.batch_idx
        where = f"epoch {trainer.current_epoch}, global step {trainer.global_step} (batch {batch} of the epoch)"
        resume = _last_checkpoint(trainer)
        advice = f"Resume from the last good checkpoint with ckpt_path={resume} after fixing: " if resume else "Try "
        return (
            f"Training loss is {value} at {where}: stopped before updating the weights. {advice}"
            "a lower optimizer.lr, trainer.gradient_clip_val=1.0, or trainer.precision=32-true."
        )


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    """The most recently written checkpoint of the run, if any."""
    paths = [
        Path(path)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint)
        for path in (callback.best_model_path, callback.last_model_path)
        if path
    ]
    existing = [path for path in paths if path.is_file()]
    return str(max(existing, key=lambda path: path.stat().st_mtime)) if existing else None
