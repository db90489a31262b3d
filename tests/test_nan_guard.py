"""mobilevit/callbacks/nan_guard.py: a non-finite loss stops the run with its epoch and step while the last good
checkpoint stays intact; the guard is a default callback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from recorders import InjectNaN, target

from mobilevit.callbacks import NonFiniteLossError
from mobilevit.utils import exit_on_user_error
from train import train

COMMON = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(make_cfg, capsys) -> None:
    cfg = make_cfg(
        [
            *COMMON, "trainer.max_epochs=3", "callbacks.last_checkpoint.every_n_train_steps=1",
            f"+callbacks.inject._target_={target(InjectNaN)}", "+callbacks.inject.at_step=4",
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
