"""mobilevit/callbacks/duration_estimate.py: the run's duration, estimated from measured steps and its budget."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from conftest import FAST_TRAIN, TINY_SYNTHETIC

from mobilevit.callbacks import DurationEstimate
from mobilevit.callbacks.duration_estimate import format_duration
from mobilevit.data.resolution import ResolutionSchedule
from train import train


def _trainer(max_epochs: int, schedule: ResolutionSchedule | None, check_val_every_n_epoch: int = 5) -> SimpleNamespace:
    """What the estimate reads of a Trainer, at the start of epoch 0: 10 batches per epoch, 4 validation batches."""
    progress = SimpleNamespace(current=SimpleNamespace(ready=0))
    return SimpleNamespace(
        datamodule=SimpleNamespace(resolution_schedule=schedule, batch_size=8, eval_image_size=64, image_size=64),
        current_epoch=0, max_epochs=max_epochs, max_steps=-1, global_step=0, num_training_batches=10,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)), callbacks=[],
        check_val_every_n_epoch=check_val_every_n_epoch, enable_validation=True, num_val_batches=[4],
    )  # fmt: skip


def _measured(size: int, seconds_per_image: float, batch: int = 8, steps: int = 4) -> DurationEstimate:
    """An estimate that measured ``steps`` steps of ``batch`` images at ``size`` px after 2 slow warm-up steps."""
    estimate = DurationEstimate(warmup_steps=2)
    estimate._size = size
    estimate._steps = [(100.0, batch)] * 2 + [(batch * seconds_per_image, batch)] * steps
    return estimate


def test_estimate_scales_the_measured_time_by_pixels_over_the_schedule() -> None:
    """0.01 s per image at 32 px; 10 epochs of 80 images, the first half at 32 px, the second at 64 px (4x the
    pixels): 5 x 80 x 0.01 + 5 x 80 x 0.04 = 20 s of training. Validations at epochs 5 and 10 plus the final one,
    each 32 images x a third of a training step at 64 px (0.04 s): 3 x 0.4267 s."""
    schedule = ResolutionSchedule.from_config([[0, 32], [0.5, 64]], 64)
    result = _measured(32, 0.01).estimate(_trainer(10, schedule), SimpleNamespace(hflip_tta=False))
    assert result["limit"] == "epochs"
    assert result["train_s"] == pytest.approx(20.0)
    assert result["val_s"] == pytest.approx(3 * 32 * 0.04 / 3)
    assert result["val_share"] == pytest.approx(result["val_s"] / 20.0)
    tta = _measured(32, 0.01).estimate(_trainer(10, schedule), SimpleNamespace(hflip_tta=True))
    assert tta["val_s"] == pytest.approx(2 * result["val_s"])  # flip TTA: two views per image


def test_estimate_without_a_schedule_and_with_a_step_budget() -> None:
    trainer = _trainer(10, None)
    trainer.max_steps = 30  # 30 steps of 8 images at 0.01 s: 2.4 s, tighter than 10 epochs (8 s)
    result = _measured(32, 0.01).estimate(trainer, SimpleNamespace(hflip_tta=False))
    assert result["limit"] == "steps" and result["train_s"] == pytest.approx(2.4)


@pytest.mark.parametrize(("seconds", "text"), [(40, "40 s"), (14 * 60 + 10, "14 min"), (2 * 3600 + 5 * 60, "2 h 05 min")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_run_logs_its_estimate_and_a_gpu_recipe_on_a_cpu_says_so(make_cfg, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mobilevit.callbacks.duration_estimate")
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false",
                    "callbacks.reports=null", "trainer.max_epochs=2", "meant_for=gpu"])  # fmt: skip
    _, objects = train(cfg)
    messages = [record.getMessage() for record in caplog.records]
    (estimate_line,) = [message for message in messages if message.startswith("Estimated time left")]
    assert "budget: 2 epochs" in estimate_line and "ms per training image at 32 px" in estimate_line
    (warning,) = [message for message in messages if "sized for a GPU" in message]
    assert "python train.py experiment=flowers102_cpu" in warning
    (callback,) = [cb for cb in objects["trainer"].callbacks if isinstance(cb, DurationEstimate)]
    assert callback.estimates[0]["limit"] == "epochs" and callback.estimates[0]["train_s"] > 0


def test_a_cpu_recipe_does_not_warn(make_cfg, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mobilevit.callbacks.duration_estimate")
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false",
                    "callbacks.reports=null", "trainer.max_epochs=1", "meant_for=cpu"])  # fmt: skip
    train(cfg)
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("Estimated time left") for message in messages)
    assert not any("sized for a GPU" in message for message in messages)
