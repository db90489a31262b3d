"""mobilevit/callbacks/checkpoint_io.py: checkpoint files are written atomically (AtomicCheckpointIO, the train
config's plugin), so a kill during a save leaves the previous file readable."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, subprocess_env
from helpers import read_checkpoint
from lightning.fabric.plugins import TorchCheckpointIO

from mobilevit.callbacks import AtomicCheckpointIO, LastCheckpoint
from mobilevit.errors import UserInputError

COMMON = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


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
    assert read_checkpoint(target)["step"] == 1
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
    checkpoint = read_checkpoint(target)  # complete and readable: the first save
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["weights"], torch.ones(1000, 100))


def test_train_config_uses_the_atomic_checkpoint_plugin(make_cfg) -> None:
    import hydra

    cfg = make_cfg(COMMON)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    with pytest.raises(UserInputError, match=r"every_n_train_steps must be null .* or an integer >= 1, got 0"):
        LastCheckpoint(dirpath=str(make_cfg().paths.output_dir), every_n_train_steps=0)
