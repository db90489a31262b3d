"""Reliability, a run that ends early still ends properly: max_time, max_steps, early stopping, the NaN guard (an
infinite loss), Ctrl-C and SIGTERM each end with the TensorBoard reports of the last validated epoch, a summary.json
that says why and when training stopped, a resumable last.ckpt, and the final test where it makes sense."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from recorders import AtStep, target
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mobilevit.callbacks import NonFiniteLossError
from train import train

# 24 training images in batches of 8: 3 steps per epoch; 3 epochs configured, so no run below ends at max_epochs.
RUN = [
    *TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=tensorboard", "trainer.max_epochs=3",
    "callbacks.reports.every_n_epochs=0", "callbacks.reports.max_images=2",
]  # fmt: skip


def _at(step: int, action: str) -> list[str]:
    return [f"+callbacks.at._target_={target(AtStep)}", f"+callbacks.at.step={step}", f"+callbacks.at.action={action}"]


CASES = {  # reason -> (overrides, exception train() ends with, whether the final test runs)
    "max_steps": (["trainer.max_steps=4"], None, True),
    "max_time": (["trainer.max_time=00:00:00:02", *_at(4, "sleep")], None, True),
    "early_stopping": (
        ["+callbacks.early_stopping._target_=mobilevit.callbacks.early_stopping.DelayedEarlyStopping",
         "+callbacks.early_stopping.monitor=val/loss", "+callbacks.early_stopping.patience=1",
         "+callbacks.early_stopping.min_delta=100"],
        None, True,
    ),
    "non_finite_loss": (_at(4, "infinite_loss"), NonFiniteLossError, True),
    "interrupted": (_at(4, "ctrl_c"), SystemExit, False),
    "sigterm": (_at(4, "sigterm"), SystemExit, False),
}  # fmt: skip


@pytest.fixture
def restore_signals():
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():  # Lightning ignores SIGINT after a Ctrl-C
        signal.signal(sig, handler)


@pytest.mark.parametrize("reason", list(CASES))
def test_run_that_stops_early_ends_properly(reason: str, make_cfg, restore_signals) -> None:
    overrides, raised, tested = CASES[reason]
    cfg = make_cfg([*RUN, *overrides])
    run_dir = Path(cfg.paths.output_dir)
    if raised is None:
        train(cfg)
    else:
        with pytest.raises(raised) as error:
            train(cfg)
        if reason == "non_finite_loss":
            assert "Training loss is inf at epoch 1, global step 4" in str(error.value)

    summary = json.loads((run_dir / "summary.json").read_text())
    stopped = summary["stopped"]
    assert stopped["reason"] == reason and stopped["time"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == stopped["global_step"] < 9  # resumable from where it stopped
    assert 0 < stopped["epoch"] < 3 or reason == "max_time"
    assert ("test/acc" in summary["metrics"]) == tested

    # The final report is the last validated epoch's (not only after trainer.max_epochs, as before).
    history = next(v for k, v in last["callbacks"].items() if k.startswith("TrainingDiagnostics"))["history"]
    last_validated = max(history["val/acc"]) + 1  # 1-based
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert len(events.Images("val/confusion_matrix")) == 1
    table = events.Tensors("val/most_confused/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert f"Most confused classes after epoch {last_validated}**" in table
    assert (run_dir / "training_history.png").is_file()


def test_sigterm_run_resumes_to_the_end(make_cfg, restore_signals) -> None:
    first = make_cfg([*RUN, *_at(4, "sigterm")], run_name="preempted")
    with pytest.raises(SystemExit):
        train(first)
    _, objects = train(make_cfg([*RUN, "ckpt_path=last"], run_name="resumed"))
    assert objects["trainer"].global_step == 9 and objects["trainer"].current_epoch == 3
