"""Learning-rate schedules stepped once per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from mobilevit.errors import UserInputError


DECAYS: tuple[str, ...] = ("cosine", "linear")  # scheduler.decay


class WarmupDecayLR(LRScheduler):
    """Linear warmup from ``warmup_start_factor * lr`` to ``lr``, then cosine or linear decay to ``min_lr``.

    The decay ends exactly at the end of the training budget. Without ``progress`` the budget is
    ``total_steps``. With ``progress`` (the fraction of the run's budget spent, see
    :func:`mobilevit.utils.budget.training_progress`) the decay follows it instead, so a run limited by
    ``trainer.max_time`` anneals fully by its time limit on a slower or faster machine (budgeted training,
    Li et al., ICLR 2020; FFCV decays linearly to zero at the end of the budget).

    Meant to be stepped after every optimizer step (Lightning ``interval: "step"``). Only plain numbers are
    kept as state, so checkpoints holding it load with ``torch.load(..., weights_only=True)``, and a resumed
    run continues from the budget already spent (Lightning's ``Timer`` restores the elapsed time).

    Args:
        optimizer: wrapped optimizer; each param group decays from its own initial lr.
        total_steps: optimizer steps of the whole run (e.g. ``trainer.estimated_stepping_batches``); None for a
            run without a step count (a pure time budget), which then needs ``progress``.
        steps_per_epoch: optimizer steps per epoch, used to convert ``warmup_epochs`` to steps.
        warmup_epochs: length of the linear warmup in epochs (fractions allowed); 0 disables it.
        min_lr: learning rate reached at the end of the budget (capped at each group's initial lr).
        warmup_start_factor: fraction of the initial lr used at step 0 of the warmup.
        decay: ``"cosine"`` (half a cosine period) or ``"linear"``.
        progress: optional ``() -> fraction of the training budget spent (0..1)``; the decay spans the budget
            left when the warmup ends.
        last_epoch: index of the last step, -1 to start fresh.
    """

    _SHAPE_KEYS: tuple[str, ...] = ("total_steps", "warmup_steps", "min_lr", "warmup_start_factor", "decay")

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None,
        steps_per_epoch: int = 1,
        warmup_epochs: float = 0.0,
        min_lr: float = 0.0,
        warmup_start_factor: float = 0.01,
        decay: str = "cosine",
        progress: Callable[[], float] | None = None,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None and progress is None:
            raise ValueError("total_steps=None (an open-ended run) needs progress (the fraction of the budget spent)")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup_epochs < 0 or min_lr < 0 or not 0.0 <= warmup_start_factor <= 1.0:
            raise ValueError(
                "scheduler: need warmup_epochs >= 0, min_lr >= 0 and 0 <= warmup_start_factor <= 1, got "
                f"warmup_epochs={warmup_epochs}, min_lr={min_lr}, warmup_start_factor={warmup_start_factor}"
            )
        if decay not in DECAYS:
            raise UserInputError(f"scheduler.decay must be one of {list(DECAYS)}, got {decay!r}.")
        self.total_steps = None if total_steps is None else int(total_steps)
        self.warmup_steps = int(round(warmup_epochs * max(1, steps_per_epoch)))
        if self.total_steps is not None:  # keep at least one decay step so the schedule always ends at min_lr
            self.warmup_steps = min(self.warmup_steps, self.total_steps - 1)
        self.min_lr = float(min_lr)
        self.warmup_start_factor = float(warmup_start_factor)
        self.decay = decay
        self.progress = progress
        self.decay_start: float | None = None  # budget fraction spent when the warmup ended (with ``progress``)
        super().__init__(optimizer, last_epoch)

    def decay_fraction(self, step: int) -> float:
        """Fraction of the decay phase done after ``step`` optimizer steps (0 during the warmup)."""
        if step < self.warmup_steps:
            return 0.0
        if self.progress is None:
            return min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        spent = self.progress()
        if self.decay_start is None:
            self.decay_start = min(spent, 1.0 - 1e-9)
        return min(1.0, max(0.0, (spent - self.decay_start) / (1.0 - self.decay_start)))

    def lr_at(self, step: int, base_lr: float, decay_fraction: float | None = None) -> float:
        """Learning rate after ``step`` optimizer steps for a group whose initial lr is ``base_lr``;
        ``decay_fraction`` defaults to the step-based one."""
        if step < self.warmup_steps:
            frac = step / self.warmup_steps
            return base_lr * (self.warmup_start_factor + (1.0 - self.warmup_start_factor) * frac)
        done = self.decay_fraction(step) if decay_fraction is None else decay_fraction
        floor = min(self.min_lr, base_lr)
        remaining = 0.5 * (1.0 + math.cos(math.pi * done)) if self.decay == "cosine" else 1.0 - done
        return floor + (base_lr - floor) * remaining

    def get_lr(self) -> list[float]:
        done = self.decay_fraction(self.last_epoch)
        return [self.lr_at(self.last_epoch, float(base_lr), done) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's plain-number state (the ``progress`` callable is left out)."""
        return {key: value for key, value in super().state_dict().items() if key != "progress"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position in the schedule; its shape (steps, warmup, min_lr, decay) stays as configured now.

        So a run resumed with a larger ``trainer.max_epochs`` follows the new, longer schedule.
        """
        keep = {key: getattr(self, key) for key in (*self._SHAPE_KEYS, "progress")}
        super().load_state_dict(state_dict)
        self.__dict__.update(keep)


# The name of earlier releases, kept so that their checkpoints' stored configs still instantiate.
WarmupCosineLR = WarmupDecayLR
