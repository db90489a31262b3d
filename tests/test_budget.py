"""The training budget (mobilevit/utils/budget.py) and the budget-aware learning-rate schedule
(mobilevit/utils/lr_scheduler.py): decay to ~0 exactly when the budget runs out, and resume where it stopped."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Timer

from conftest import FAST_TRAIN, TINY_SYNTHETIC
from mobilevit.errors import UserInputError
from mobilevit.utils.budget import training_progress
from mobilevit.utils.lr_scheduler import WarmupDecayLR
from mobilevit.fit import stop_reason
from train import train


def _scheduler(progress=None, **kwargs) -> WarmupDecayLR:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = WarmupDecayLR(optimizer, total_steps=100, steps_per_epoch=10, progress=progress, **kwargs)
    optimizer.step()  # as in training: the optimizer steps before its scheduler
    return scheduler


@pytest.mark.parametrize("decay, mid", [("cosine", 0.5), ("linear", 0.5)])
def test_decay_follows_the_budget_fraction(decay: str, mid: float) -> None:
    spent = [0.0]
    scheduler = _scheduler(progress=lambda: spent[0], decay=decay, min_lr=0.0)
    assert scheduler.get_last_lr() == [1.0]
    for fraction, expected in ((0.25, None), (0.5, mid), (1.0, 0.0), (1.7, 0.0)):
        spent[0] = fraction
        scheduler.step()
        if expected is not None:
            assert scheduler.get_last_lr()[0] == pytest.approx(expected, abs=1e-12)
    spent[0] = 0.25
    scheduler.step()
    quarter = scheduler.get_last_lr()[0]
    assert quarter == pytest.approx(0.75 if decay == "linear" else 0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_then_decay_over_the_budget_left() -> None:
    spent = [0.0]
    scheduler = _scheduler(progress=lambda: spent[0], warmup_epochs=1, warmup_start_factor=0.0)
    for step in range(1, 10):  # warmup: 10 steps, lr rises linearly, the budget is ignored
        spent[0] = step / 100
        scheduler.step()
        assert scheduler.get_last_lr()[0] == pytest.approx(step / 10)
    spent[0] = 0.2  # the warmup ends at 20 % of the budget: the decay spans the remaining 80 %
    scheduler.step()
    assert scheduler.decay_start == pytest.approx(0.2) and scheduler.get_last_lr()[0] == pytest.approx(1.0)
    spent[0] = 0.6
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.5)  # halfway through the decay (cosine)


def test_state_is_plain_and_resumes_the_decay() -> None:
    spent = [0.0]
    scheduler = _scheduler(progress=lambda: spent[0], decay="linear")
    spent[0] = 0.4
    scheduler.step()
    state = scheduler.state_dict()
    assert "progress" not in state and state["decay_start"] == 0.0
    torch.save(state, Path("/dev/null"))  # picklable without the callable
    resumed = _scheduler(progress=lambda: 0.7, decay="linear")
    resumed.load_state_dict(state)
    resumed.step()
    assert resumed.get_last_lr()[0] == pytest.approx(0.3)


def test_unknown_decay_names_the_key() -> None:
    with pytest.raises(UserInputError, match="scheduler.decay must be one of"):
        _scheduler(decay="step")


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
