"""How long a run will take, logged within its first minute from the measured step time and its budget."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_only

from mobilevit.errors import require_choice

log = logging.getLogger(__name__)

MEANT_FOR: tuple[str, ...] = ("any", "cpu", "gpu")  # meant_for: the hardware a recipe is sized for
# A forward pass costs about a third of a training step (forward + backward) per image at the same size.
FORWARD_SHARE = 1 / 3


def _timer(trainer: L.Trainer) -> Timer | None:
    """Lightning's Timer, which enforces ``trainer.max_time``."""
    return next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)


def format_duration(seconds: float) -> str:
    """``seconds`` as ``2 h 05 min``, ``14 min`` or ``40 s``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class DurationEstimate(L.Callback):
    """Logs the run's estimated duration once the first steps are measured, and again after each change of the
    training size (progressive resizing).

    The time per training image is measured over the steps after ``warmup_steps`` at the current size, until
    ``measure_seconds`` have passed (or ``measure_steps`` steps, or the epoch ends), and scaled by the pixel count to the sizes the
    resolution schedule still has to come (compute grows with the image area). The budget is the tightest of
    ``trainer.max_epochs``, ``max_steps`` and ``max_time``. Validations are counted from
    ``check_val_every_n_epoch``; their time is measured once one has run, else estimated as a forward pass
    (a third of a training step) per validation image and view (two with flip TTA).

    Args:
        meant_for: the hardware the recipe is sized for (``any``, ``cpu``, ``gpu``). A ``gpu`` recipe started
            without a GPU says so in one line with the estimate, and names ``cpu_recipe``.
        cpu_recipe: the command-line option of the CPU recipe to suggest.
        warmup_steps: first steps of each size left out of the measurement (allocation, kernel selection).
        measure_seconds: measure for this long before logging (so the estimate is logged within a minute).
        measure_steps: or for this many steps, whichever comes first.
    """

    def __init__(
        self,
        meant_for: str = "any",
        cpu_recipe: str = "experiment=flowers102_cpu",
        warmup_steps: int = 2,
        measure_seconds: float = 20.0,
        measure_steps: int = 50,
    ) -> None:
        self.meant_for = require_choice(meant_for, "meant_for", MEANT_FOR)
        self.cpu_recipe = cpu_recipe
        self.warmup_steps = warmup_steps
        self.measure_seconds = measure_seconds
        self.measure_steps = measure_steps
        self.estimates: list[dict[str, Any]] = []  # every estimate logged, for tests and reports
        self._size: int | None = None
        self._steps: list[tuple[float, int]] = []  # (seconds, images) of each step at the current size
        self._step_started = 0.0
        self._logged_size: int | None = None
        self._val_started: float | None = None
        self._val_seconds: float | None = None
        self._train_seconds_at_val = 0.0

    # ------------------------------------------------------------------ measuring
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        size = int(batch[0].shape[-1])
        if size != self._size:  # a new size: measure again
            self._size, self._steps = size, []
        self._step_started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._steps.append((time.perf_counter() - self._step_started, len(batch[0])))
        steady = self._steps[self.warmup_steps :]
        enough = sum(seconds for seconds, _ in steady) >= self.measure_seconds or len(steady) >= self.measure_steps
        last_batch = batch_idx + 1 >= trainer.num_training_batches  # a short run: estimate from what there is
        if self._logged_size != self._size and (enough or last_batch):
            self._logged_size = self._size
            self._report(trainer, pl_module)

    def _measured(self) -> list[tuple[float, int]]:
        """(seconds, images) of the steps measured at the current size: those after the warm-up, if any."""
        return self._steps[self.warmup_steps :] or self._steps

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.training:
            self._val_started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_started is not None and self._val_seconds is None:
            self._val_seconds = time.perf_counter() - self._val_started
        self._val_started = None

    # ------------------------------------------------------------------ estimating
    def seconds_per_image(self, size: int) -> float:
        """Measured training seconds per image, scaled from the measured size to ``size`` by the pixel count."""
        measured = self._measured()
        assert self._size is not None and measured
        seconds, images = (sum(values) for values in zip(*measured))
        return seconds / images * (size / self._size) ** 2

    def estimate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The remaining training and validation seconds by the current measurement, and what limits the run."""
        datamodule = trainer.datamodule
        schedule = getattr(datamodule, "resolution_schedule", None)
        images_per_epoch = self._images_per_epoch(trainer)
        epoch, max_epochs = trainer.current_epoch, trainer.max_epochs
        epoch_done = trainer.fit_loop.epoch_loop.batch_progress.current.ready / max(1, trainer.num_training_batches)
        epoch_seconds = images_per_epoch * self.seconds_per_image(self._size)  # at the current size
        limits: dict[str, tuple[float, float]] = {}  # budget -> (training seconds left, epochs left)
        if max_epochs is not None and max_epochs > 0:
            seconds = 0.0
            for index in range(epoch, max_epochs):
                size = schedule.size_at(index / max_epochs) if schedule is not None else self._size
                share = 1.0 - epoch_done if index == epoch else 1.0
                seconds += share * images_per_epoch * self.seconds_per_image(size)
            limits["epochs"] = (seconds, max_epochs - epoch - epoch_done)
        if trainer.max_steps is not None and trainer.max_steps > 0:
            steps_left = trainer.max_steps - trainer.global_step
            limits["steps"] = (steps_left * self._batch_images(trainer) * self.seconds_per_image(self._size),
                               steps_left / max(1, trainer.num_training_batches))  # fmt: skip
        timer = _timer(trainer)
        if timer is not None and timer.time_remaining("train") is not None:
            seconds = max(0.0, timer.time_remaining("train"))
            limits["time"] = (seconds, seconds / max(1e-9, epoch_seconds))
        limit = min(limits, key=lambda name: limits[name][0]) if limits else "none"
        remaining, epochs_left = limits.get(limit, (float("inf"), 0.0))
        validations = self._validations_left(trainer, epochs_left)
        val_seconds = validations * self._seconds_per_validation(trainer, pl_module)
        if limit == "time":  # validation runs inside the time budget
            remaining, val_seconds = remaining - min(val_seconds, remaining), min(val_seconds, remaining)
        return {
            "size": self._size,
            "limit": limit,
            "train_s": remaining,
            "val_s": val_seconds,
            "total_s": remaining + val_seconds,
            "val_share": val_seconds / remaining if remaining > 0 else 0.0,
            "seconds_per_image": self.seconds_per_image(self._size),
            "sizes": list(schedule.sizes) if schedule is not None else [self._size],
        }

    def _images_per_epoch(self, trainer: L.Trainer) -> float:
        return trainer.num_training_batches * self._batch_images(trainer)

    def _batch_images(self, trainer: L.Trainer) -> float:
        measured = self._measured()
        return sum(images for _, images in measured) / len(measured)

    def _validations_left(self, trainer: L.Trainer, epochs_left: float) -> int:
        every = trainer.check_val_every_n_epoch
        if not trainer.enable_validation or every is None or not trainer.num_val_batches:
            return 0
        first, last = trainer.current_epoch, trainer.current_epoch + int(round(epochs_left))
        return sum(1 for epoch in range(first, last) if (epoch + 1) % every == 0) + 1  # + the final validation

    def _seconds_per_validation(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        if self._val_seconds is not None:
            return self._val_seconds
        datamodule = trainer.datamodule
        images = sum(trainer.num_val_batches) * getattr(datamodule, "batch_size", self._batch_images(trainer))
        eval_size = getattr(datamodule, "eval_image_size", None) or getattr(datamodule, "image_size", self._size)
        views = 2 if getattr(pl_module, "hflip_tta", False) else 1
        return images * views * FORWARD_SHARE * self.seconds_per_image(int(eval_size))

    @rank_zero_only
    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        estimate = self.estimate(trainer, pl_module)
        self.estimates.append(estimate)
        if estimate["limit"] == "none":
            return
        ends = datetime.now() + timedelta(seconds=estimate["total_s"])
        sizes = " -> ".join(f"{size}" for size in estimate["sizes"])
        log.info(
            "Estimated time left: %s (training %s, validation %s = %.0f %% of training), ending about %s; measured "
            "%.1f ms per training image at %d px (sizes %s px), budget: %s.",
            format_duration(estimate["total_s"]), format_duration(estimate["train_s"]),
            format_duration(estimate["val_s"]), 100 * estimate["val_share"], ends.strftime("%a %H:%M"),
            1000 * estimate["seconds_per_image"], estimate["size"], sizes, self._budget(trainer),
        )  # fmt: skip
        on_gpu = trainer.strategy.root_device.type == "cuda"
        if self.meant_for == "gpu" and not on_gpu and len(self.estimates) == 1:
            log.warning(
                "This recipe is sized for a GPU; on this machine's %s it would take about %s. For a CPU, use the "
                "CPU recipe: python train.py %s",
                trainer.strategy.root_device.type.upper(), format_duration(estimate["total_s"]), self.cpu_recipe,
            )  # fmt: skip

    @staticmethod
    def _budget(trainer: L.Trainer) -> str:
        parts = []
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            parts.append(f"{trainer.max_epochs} epochs")
        if trainer.max_steps is not None and trainer.max_steps > 0:
            parts.append(f"{trainer.max_steps} steps")
        timer = _timer(trainer)
        if timer is not None and timer.time_remaining("train") is not None:
            parts.append(f"max_time {format_duration(timer.time_elapsed('train') + timer.time_remaining('train'))}")
        return ", ".join(parts) + " (whichever ends first)" if len(parts) > 1 else (parts[0] if parts else "none")
