"""Reliability, crash and resume: atomic checkpoint files, SIGKILL mid-epoch then ckpt_path=last, bit-exact resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, subprocess_env
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from mobilevit.callbacks import AtomicCheckpointIO, LastCheckpoint
from mobilevit.errors import UserInputError
from train import train

# 3 classes x 8 training images in batches of 8: 3 optimizer steps per epoch.
STEPS_PER_EPOCH = 3
COMMON = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


class PauseAtBatchStart(Callback):
    """Writes the global step to ``progress_file`` at every training batch start, then sleeps: a slow step that a
    test can kill the process in. By then every checkpoint of the previous step is complete."""

    def __init__(self, progress_file: str, seconds: float = 1.0) -> None:
        self.progress_file = Path(progress_file)
        self.seconds = seconds

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.progress_file.write_text(str(trainer.global_step))
        time.sleep(self.seconds)


class CountSteps(Callback):
    """Counts the optimizer steps this process ran."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.steps.append(trainer.global_step)


class StopAfterEpoch(Callback):
    """Ends fit after epoch ``epoch`` (0-based), after its checkpoint was written: an interruption at an epoch
    boundary, with the run configured for more epochs (so the learning-rate schedule is the full run's)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- atomic checkpoint files


def test_lightning_default_save_stages_in_the_system_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why AtomicCheckpointIO exists: Lightning's own save (``_atomic_save``, an fsspec transaction) writes its
    temporary file into the system temp dir and then moves it over the target. That move is an atomic rename only
    on the same filesystem; across filesystems (tmpfs /tmp, NFS run dirs) it is a copy that a kill can cut short."""
    staged: list[Path] = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        staged.append(Path(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    target = tmp_path / "run" / "last.ckpt"
    target.parent.mkdir()
    TorchCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, target)
    assert _load(target)["step"] == 1
    assert staged and all(path.parent == Path(tempfile.gettempdir()) for path in staged)
    assert all(path.parent != target.parent for path in staged)  # not beside the target: no same-fs guarantee


ATOMIC_SAVE_THEN_HANG = textwrap.dedent(
    """
    import io, sys, time
    import torch
    from mobilevit.callbacks import AtomicCheckpointIO

    path = sys.argv[1]
    io_plugin = AtomicCheckpointIO()
    io_plugin.save_checkpoint({"step": torch.tensor(1), "weights": torch.ones(1000, 100)}, path)
    real_save = torch.save

    def half_then_hang(obj, file, *args, **kwargs):  # the second save stops halfway through writing
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        file.flush()
        print("HALFWAY", flush=True)
        time.sleep(60)

    torch.save = half_then_hang
    io_plugin.save_checkpoint({"step": torch.tensor(2), "weights": torch.zeros(1000, 100)}, path)
    """
)


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    """A process killed (SIGKILL) halfway through writing a checkpoint leaves the previous last.ckpt complete."""
    target = tmp_path / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-c", ATOMIC_SAVE_THEN_HANG, str(target)],
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout.readline().strip() == "HALFWAY", process.stderr.read()
        partial = [path for path in target.parent.iterdir() if path != target]
        assert len(partial) == 1 and partial[0].name.startswith(".last.ckpt.") and partial[0].stat().st_size > 0
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    checkpoint = _load(target)  # complete and readable: the first save
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["weights"], torch.ones(1000, 100))


def test_train_config_uses_the_atomic_checkpoint_plugin(make_cfg) -> None:
    import hydra

    cfg = make_cfg(COMMON)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    with pytest.raises(UserInputError, match=r"every_n_train_steps must be null .* or an integer >= 1, got 0"):
        LastCheckpoint(dirpath=str(make_cfg().paths.output_dir), every_n_train_steps=0)


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
            f"+callbacks.pause._target_={__name__}.PauseAtBatchStart", f"+callbacks.pause.progress_file={progress}",
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
    killed = _load(last)
    assert killed["global_step"] == 4 and killed["epoch"] == 1  # written mid-epoch by every_n_train_steps=1

    cfg = make_cfg(
        [*COMMON, "trainer.max_epochs=3", "ckpt_path=last", f"+callbacks.count._target_={__name__}.CountSteps"],
        run_name="resumed",
    )
    _, objects = train(cfg)
    trainer = objects["trainer"]
    assert trainer.global_step == 3 * STEPS_PER_EPOCH and trainer.current_epoch == 3
    (counter,) = [callback for callback in trainer.callbacks if isinstance(callback, CountSteps)]
    assert counter.steps == list(range(5, 10))  # steps 5..9: continued from step 4, nothing repeated
    assert _load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["global_step"] == 9


def test_resume_at_epoch_boundary_is_bit_exact(make_cfg) -> None:
    """Interrupted after epoch 0 and resumed (trainer.deterministic=true, CPU) gives the same weights, buffers and
    optimizer state as the uninterrupted 2-epoch run: shuffling, augmentation and dropout draw the same numbers
    (callbacks.rng_state restores the RNG states)."""
    run = [*COMMON, "trainer.max_epochs=2", "trainer.deterministic=true"]
    _, uninterrupted = train(make_cfg(run, run_name="uninterrupted"))
    first_cfg = make_cfg([*run, f"+callbacks.stop._target_={__name__}.StopAfterEpoch"], run_name="interrupted")
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


# ----------------------------------------------------------------------------- resume keeps the whole run's best


class ScriptedValAccuracy(Callback):
    """Makes validation accuracy follow ``schedule[epoch]`` exactly: the module's logits of every validation batch
    are replaced by ones that are right for that fraction of its images (training and test are untouched)."""

    def __init__(self, schedule: dict[int, float]) -> None:
        self.schedule = {int(epoch): float(value) for epoch, value in schedule.items()}
        self._targets: torch.Tensor | None = None
        self._hook = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._hook = pl_module.register_forward_hook(self._scripted(self.schedule[trainer.current_epoch]))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._targets = batch[1]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _scripted(self, accuracy: float):
        def hook(module, args, output: torch.Tensor) -> torch.Tensor:
            targets, rows = self._targets, torch.arange(len(self._targets))
            predicted = torch.where(rows < round(accuracy * len(rows)), targets, (targets + 1) % output.shape[1])
            logits = torch.zeros_like(output)
            logits[rows, predicted] = 10.0
            return logits

        return hook


def test_resume_into_a_new_run_keeps_the_whole_runs_best(make_cfg) -> None:
    """Val accuracy 0.5, 0.75, 0.25 over 3 epochs, interrupted after epoch 1 (the best) and resumed into a new
    run directory: the resumed run tests the epoch-1 checkpoint and ends exactly as the uninterrupted run."""
    import json

    schedule = "{0: 0.5, 1: 0.75, 2: 0.25}"
    run = [
        *TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=true", "trainer.max_epochs=3",
        "trainer.deterministic=true", "test_weights=best",
        f"+callbacks.script._target_={__name__}.ScriptedValAccuracy", f"+callbacks.script.schedule={schedule}",
    ]  # fmt: skip
    metrics, uninterrupted = train(make_cfg(run, run_name="uninterrupted"))
    first_cfg = make_cfg([*run, f"+callbacks.stop._target_={__name__}.StopAfterEpoch", "+callbacks.stop.epoch=1"],
                         run_name="interrupted")  # fmt: skip
    train(first_cfg)
    resumed_cfg = make_cfg([*run, "ckpt_path=last"], run_name="resumed")
    resumed_metrics, resumed = train(resumed_cfg)

    assert metrics["val/acc_best"] == resumed_metrics["val/acc_best"] == 0.75  # not 0.25 (the best after the resume)
    assert resumed_metrics["val/acc"] == 0.25
    for objects in (uninterrupted, resumed):
        assert Path(objects["best_ckpt"]).name == "epoch_001.ckpt"
        assert Path(objects["best_ckpt"]).parent == Path(objects["cfg"].paths.output_dir) / "checkpoints"
        assert float(objects["trainer"].checkpoint_callback.best_model_score) == 0.75
    assert Path(first_cfg.paths.output_dir, "checkpoints", "epoch_001.ckpt").is_file()  # the old run keeps its file
    best = [_load(objects["best_ckpt"])["state_dict"] for objects in (uninterrupted, resumed)]
    assert all(torch.equal(best[0][name], best[1][name]) for name in best[0])  # the same weights were tested
    assert {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))} == {
        k: v for k, v in resumed_metrics.items() if k.startswith(("test/", "val/"))
    }
    histories = [  # what training_history.png plots, as each run's final last.ckpt holds it
        next(v for k, v in _load(Path(objects["cfg"].paths.output_dir, "checkpoints", "last.ckpt"))["callbacks"].items()
             if k.startswith("TrainingDiagnostics"))["history"]
        for objects in (uninterrupted, resumed)
    ]  # fmt: skip
    assert histories[0] == histories[1] and sorted(histories[1]["val/acc"]) == [0, 1, 2]  # all epochs
    assert Path(resumed_cfg.paths.output_dir, "training_history.png").is_file()
    summaries = [
        json.loads(Path(objects["cfg"].paths.output_dir, "summary.json").read_text()) for objects in (uninterrupted, resumed)
    ]
    assert summaries[0]["metrics"] == summaries[1]["metrics"] and summaries[0]["epochs"] == summaries[1]["epochs"] == 3


class RecordLastCheckpointEpoch(Callback):
    """At the start of every epoch, the completed epochs that checkpoints/last.ckpt holds (None: no file yet)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.epochs: list[int | None] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(_load(self.path)["epoch"] if self.path.is_file() else None)


def test_last_checkpoint_is_written_after_every_epoch_when_validation_is_less_frequent(make_cfg) -> None:
    """check_val_every_n_epoch=3: last.ckpt still holds every finished epoch (a crash loses at most one)."""
    cfg = make_cfg([*COMMON, "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=3"])
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    cfg = make_cfg([*COMMON, "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=3",
                    f"+callbacks.record._target_={__name__}.RecordLastCheckpointEpoch", f"+callbacks.record.path={last}"])  # fmt: skip
    _, objects = train(cfg)
    (recorder,) = [cb for cb in objects["trainer"].callbacks if isinstance(cb, RecordLastCheckpointEpoch)]
    assert recorder.epochs == [None, 0, 1, 2]
