"""Learning-rate schedules stepped once per optimizer step."""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """Linear warmup from ``warmup_start_factor * lr`` to ``lr``, then cosine decay to ``min_lr``.

    Meant to be stepped after every optimizer step (Lightning ``interval: "step"``). Only plain numbers are
    kept as state, so checkpoints holding it load with ``torch.load(..., weights_only=True)``.

    Args:
        optimizer: wrapped optimizer; each param group decays from its own initial lr.
        total_steps: optimizer steps of the whole run (e.g. ``trainer.estimated_stepping_batches``).
        steps_per_epoch: optimizer steps per epoch, used to convert ``warmup_epochs`` to steps.
        warmup_epochs: length of the linear warmup in epochs (fractions allowed); 0 disables it.
        min_lr: learning rate reached at the last step (capped at each group's initial lr).
        warmup_start_factor: fraction of the initial lr used at step 0 of the warmup.
        last_epoch: index of the last step, -1 to start fresh.
    """

    _SHAPE_KEYS: tuple[str, ...] = ("total_steps", "warmup_steps", "min_lr", "warmup_start_factor")

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        steps_per_epoch: int = 1,
        warmup_epochs: float = 0.0,
        min_lr: float = 0.0,
        warmup_start_factor: float = 0.01,
        last_epoch: int = -1,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup_epochs < 0 or min_lr < 0 or not 0.0 <= warmup_start_factor <= 1.0:
            raise ValueError(
                "scheduler: need warmup_epochs >= 0, min_lr >= 0 and 0 <= warmup_start_factor <= 1, got "
                f"warmup_epochs={warmup_epochs}, min_lr={min_lr}, warmup_start_factor={warmup_start_factor}"
            )
        self.total_steps = int(total_steps)
        # Keep at least one cosine step so the schedule always ends at min_lr.
        self.warmup_steps = min(int(round(warmup_epochs * max(1, steps_per_epoch))), self.total_steps - 1)
        self.min_lr = float(min_lr)
        self.warmup_start_factor = float(warmup_start_factor)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base_lr: float) -> float:
        """Learning rate after ``step`` optimizer steps for a group whose initial lr is ``base_lr``."""
        if step < self.warmup_steps:
            frac = step / self.warmup_steps
            return base_lr * (self.warmup_start_factor + (1.0 - self.warmup_start_factor) * frac)
        floor = min(self.min_lr, base_lr)
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, float(base_lr)) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position in the schedule; its shape (steps, warmup, min_lr) stays as configured now.

        So a run resumed with a larger ``trainer.max_epochs`` follows the new, longer schedule.
        """
        shape = {key: getattr(self, key) for key in self._SHAPE_KEYS}
        super().load_state_dict(state_dict)
        self.__dict__.update(shape)
