"""The training budget (mobilevit/utils/budget.py): the progress is the largest of epochs, steps and time, and a
time-limited run anneals its learning rate to ~0 as the time runs out (the schedule: test_lr_scheduler.py)."""

from __future__ import annotations

import time

import lightning as L
import pytest
from lightning.pytorch.callbacks import Timer

from conftest import FAST_TRAIN, TINY_SYNTHETIC
from mobilevit.utils.budget import training_progress
from mobilevit.fit import stop_reason
from train import train


def test_progress_is_the_largest_of_epochs_steps_and_time(monkeypatch) -> None:
    trainer = L.Trainer(max_epochs=10, max_steps=50, max_time={"seconds": 100}, logger=False)
    timer = next(callback for callback in trainer.callbacks if isinstance(callback, Timer))
    monkeypatch.setattr(type(trainer), "num_training_batches", property(lambda self: 4), raising=False)
    trainer.fit_loop.epoch_progress.current.completed = 2  # current_epoch
    trainer.fit_loop.epoch_loop.batch_progress.current.ready = 2
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": 10.0)
    assert training_progress(trainer) == pytest.approx(0.25)  # epochs: (2 + 2/4) / 10
    assert training_progress(trainer, within_epoch=False) == pytest.approx(0.2)
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": 60.0)
    assert training_progress(trainer) == pytest.approx(0.6)  # time dominates
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": 500.0)
    assert training_progress(trainer) == 1.0
    monkeypatch.setattr(timer, "time_elapsed", lambda stage="train": 10.0)
    monkeypatch.setattr(type(trainer), "global_step", property(lambda self: 40))
    assert training_progress(trainer) == pytest.approx(0.8)  # steps dominate: 40 / 50
    assert training_progress(trainer, within_epoch=False) == pytest.approx(0.8)


def test_time_budget_anneals_to_zero_when_the_time_runs_out(make_cfg) -> None:
    """A run limited by trainer.max_time (5 s) with many epochs left: the lr reaches ~0 as the timer stops it."""
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false",
                    "callbacks.reports=null", "scheduler=linear", "scheduler.warmup_epochs=0", "optimizer.lr=0.01",
                    "trainer.max_epochs=10000", "trainer.max_time=00:00:00:05", "trainer.check_val_every_n_epoch=1000"])  # fmt: skip
    _, objects = train(cfg)
    trainer = objects["trainer"]
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.current_epoch < 10000  # stopped by the time limit
    final = scheduler.get_last_lr()[0]
    assert final <= 0.01 * 0.15  # the last step started in the last ~15 % of the time budget
    assert scheduler.decay_start == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("max_epochs", ["-1", "null"])
def test_a_pure_time_budget_trains_until_the_time_runs_out(make_cfg, max_epochs: str) -> None:
    """trainer.max_epochs=-1 or null with trainer.max_time: no epoch or step count, so the learning-rate decay and
    the resolution schedule follow the time alone, and the run stops on time."""
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false",
                    "callbacks.reports=null", "scheduler=linear", "scheduler.warmup_epochs=0", "optimizer.lr=0.01",
                    f"trainer.max_epochs={max_epochs}", "trainer.max_time=00:00:00:06",
                    "data.resolution_schedule=[[0, 32], [0.5, 64]]", "data.source_size=64"])  # fmt: skip
    started = time.monotonic()
    _, objects = train(cfg)
    trainer = objects["trainer"]
    assert time.monotonic() - started < 120
    assert stop_reason(trainer) == "max_time" and trainer.max_epochs == -1
    assert trainer.check_val_every_n_epoch == 10  # the default interval without an epoch budget
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] <= 0.01 * 0.2
    assert trainer.datamodule.train_size() == 64  # the size schedule followed the time to its last size
