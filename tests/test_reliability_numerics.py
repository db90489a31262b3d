"""Reliability, numerical faults: a non-finite loss stops the run with its epoch and step while the last good
checkpoint stays intact; gradient clipping (trainer.gradient_clip_val / gradient_clip_algorithm) takes effect."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from lightning.pytorch.callbacks import Callback

from mobilevit.callbacks import NonFiniteLossError
from mobilevit.utils import exit_on_user_error
from train import train

COMMON = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


class InjectNaN(Callback):
    """Turns the images of the batch at global step ``at_step`` into NaN, so that step's loss is NaN."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.at_step:
            batch[0].fill_(float("nan"))


class RecordGradients(Callback):
    """Records the global L2 norm and the largest absolute value of the gradients that every optimizer step used
    (after Lightning clipped them; they are zeroed only at the start of the next step)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.max_abs: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        self.max_abs.append(max(float(g.abs().max()) for g in grads))


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(make_cfg, capsys) -> None:
    cfg = make_cfg(
        [
            *COMMON, "trainer.max_epochs=3", "callbacks.last_checkpoint.every_n_train_steps=1",
            f"+callbacks.inject._target_={__name__}.InjectNaN", "+callbacks.inject.at_step=4",
        ]
    )  # fmt: skip
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        train(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "Error: Training loss is nan at epoch 1, global step 4 (batch 1 of the epoch): stopped before updating the "
        f"weights. Resume from the last good checkpoint with ckpt_path={last}"
    ), err
    assert "gradient_clip_val" in err and len(err.splitlines()) == 1 and "Traceback" not in err

    checkpoint = torch.load(last, map_location="cpu", weights_only=True)  # loadable: intact
    assert checkpoint["global_step"] == 4 and checkpoint["epoch"] == 1  # the step before the NaN
    tensors = list(checkpoint["state_dict"].values())
    tensors += [value for state in checkpoint["optimizer_states"][0]["state"].values() for value in state.values()]
    assert all(torch.isfinite(tensor.float()).all() for tensor in tensors if tensor.is_floating_point())


def test_nan_guard_is_a_default_callback(make_cfg) -> None:
    from mobilevit.callbacks import NonFiniteLossGuard
    from mobilevit.utils import instantiate_callbacks

    assert any(isinstance(c, NonFiniteLossGuard) for c in instantiate_callbacks(make_cfg().callbacks))
    assert issubclass(NonFiniteLossError, ValueError)  # a UserInputError: one line, exit code 2


def _gradients(make_cfg, *overrides: str) -> RecordGradients:
    cfg = make_cfg(
        [*COMMON, "+trainer.fast_dev_run=2", f"+callbacks.grads._target_={__name__}.RecordGradients", *overrides]
    )
    _, objects = train(cfg)
    (recorder,) = [c for c in objects["trainer"].callbacks if isinstance(c, RecordGradients)]
    assert len(recorder.norms) == 2
    return recorder


def test_gradient_clipping_takes_effect(make_cfg) -> None:
    """Without clipping the gradient norm exceeds 0.05; with trainer.gradient_clip_val=0.05 (norm) it never does,
    and with gradient_clip_algorithm=value no element exceeds 1e-4."""
    plain = _gradients(make_cfg)
    assert min(plain.norms) > 0.05 and max(plain.max_abs) > 1e-4
    by_norm = _gradients(make_cfg, "trainer.gradient_clip_val=0.05")
    assert max(by_norm.norms) <= 0.05 * (1 + 1e-4)
    by_value = _gradients(make_cfg, "trainer.gradient_clip_val=1e-4", "trainer.gradient_clip_algorithm=value")
    assert max(by_value.max_abs) <= 1e-4 * (1 + 1e-6)
    print(f"grad norm unclipped {plain.norms}, clipped to 0.05: {by_norm.norms}")
