"""Time-to-accuracy record: validation accuracy against training wall-clock time and images seen."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class TimeToAccuracy(L.Callback):
    """After every validation, records ``{epoch, step, seconds, images, val_acc}``.

    ``seconds`` is the wall-clock time since training started (validation included), ``images`` the training
    images seen on all ranks. The points are kept in checkpoints, so a resumed run continues the record, and
    ``train.py`` writes them into the run's ``summary.json`` (``python -m mobilevit.report --time-plot`` draws them).

    Args:
        monitor: the accuracy metric recorded.
    """

    def __init__(self, monitor: str = "val/acc") -> None:
        self.monitor = monitor
        self.points: list[dict[str, float]] = []
        self.images_seen = 0
        self._seconds_before = 0.0  # training time of earlier (resumed-from) sessions
        self._started: float | None = None

    def seconds(self) -> float:
        """Training wall-clock seconds so far, earlier sessions of a resumed run included."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._seconds_before + running

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images_seen += len(batch[0]) * trainer.world_size

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or self._started is None:
            return
        self.points.append(
            {
                "epoch": trainer.current_epoch + 1,
                "step": trainer.global_step,
                "seconds": round(self.seconds(), 2),
                "images": self.images_seen,
                self.monitor: float(value),
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points, "images_seen": self.images_seen, "seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.points = list(state_dict["points"])
        self.images_seen = int(state_dict["images_seen"])
        self._seconds_before = float(state_dict["seconds"])
