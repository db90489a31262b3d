"""Reliability, crash and resume end to end: train.py killed with SIGKILL mid-epoch then ``ckpt_path=last``, and a
bit-exact resume at an epoch boundary. The atomic checkpoint files are tested in test_checkpoint_io.py, the whole
run's best checkpoint in test_best_checkpoint.py, last.ckpt's epochs in test_last_checkpoint.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, subprocess_env
from helpers import read_checkpoint
from recorders import CountSteps, PauseAtBatchStart, StopAfterEpoch, target

from train import train

# 3 classes x 8 training images in batches of 8: 3 optimizer steps per epoch.
STEPS_PER_EPOCH = 3
COMMON = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


# ----------------------------------------------------------------------------- kill and resume


def test_sigkill_mid_epoch_then_resume_last_finishes(make_cfg, tmp_path: Path, shared_data_dir: Path) -> None:
    """train.py killed with SIGKILL in epoch 1 (last.ckpt every step) resumes with ckpt_path=last and finishes all
    3 epochs: global step 9, with only the steps after the checkpoint run again."""
    progress = tmp_path / "progress.txt"
    env = subprocess_env()
    env["PYTHONPATH"] = str(ROOT / "tests")
    process = subprocess.Popen(
        [
            sys.executable, "train.py", *COMMON, "trainer.max_epochs=3",
            "callbacks.last_checkpoint.every_n_train_steps=1",
            f"+callbacks.pause._target_={target(PauseAtBatchStart)}", f"+callbacks.pause.progress_file={progress}",
            f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={shared_data_dir}",
        ],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (progress.is_file() and progress.read_text().strip() and int(progress.read_text()) >= 4):
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "training did not reach step 4"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # epoch 1, batch 1: in the middle of an epoch
        process.wait(timeout=30)
    finally:
        process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    (last,) = (tmp_path / "logs" / "train" / "runs").glob("*/checkpoints/last.ckpt")
    killed = read_checkpoint(last)
    assert killed["global_step"] == 4 and killed["epoch"] == 1  # written mid-epoch by every_n_train_steps=1

    cfg = make_cfg(
        [*COMMON, "trainer.max_epochs=3", "ckpt_path=last", f"+callbacks.count._target_={target(CountSteps)}"],
        run_name="resumed",
    )
    _, objects = train(cfg)
    trainer = objects["trainer"]
    assert trainer.global_step == 3 * STEPS_PER_EPOCH and trainer.current_epoch == 3
    (counter,) = [callback for callback in trainer.callbacks if isinstance(callback, CountSteps)]
    assert counter.steps == list(range(5, 10))  # steps 5..9: continued from step 4, nothing repeated
    assert read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["global_step"] == 9


def test_resume_at_epoch_boundary_is_bit_exact(make_cfg) -> None:
    """Interrupted after epoch 0 and resumed (trainer.deterministic=true, CPU) gives the same weights, buffers and
    optimizer state as the uninterrupted 2-epoch run: shuffling, augmentation and dropout draw the same numbers
    (callbacks.rng_state restores the RNG states)."""
    run = [*COMMON, "trainer.max_epochs=2", "trainer.deterministic=true"]
    _, uninterrupted = train(make_cfg(run, run_name="uninterrupted"))
    first_cfg = make_cfg([*run, f"+callbacks.stop._target_={target(StopAfterEpoch)}"], run_name="interrupted")
    _, first = train(first_cfg)
    assert first["trainer"].current_epoch == 1 and first["trainer"].global_step == STEPS_PER_EPOCH
    resume_from = Path(first_cfg.paths.output_dir)
    _, resumed = train(make_cfg([*run, f"ckpt_path={resume_from}"], run_name="resumed"))
    assert resumed["trainer"].global_step == uninterrupted["trainer"].global_step == 2 * STEPS_PER_EPOCH

    expected, actual = uninterrupted["model"].state_dict(), resumed["model"].state_dict()
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"
    optimizers = [objects["trainer"].optimizers[0].state_dict()["state"] for objects in (uninterrupted, resumed)]
    assert all(torch.equal(optimizers[0][k]["exp_avg"], optimizers[1][k]["exp_avg"]) for k in optimizers[0])
    assert os.path.isfile(resume_from / "checkpoints" / "last.ckpt")
