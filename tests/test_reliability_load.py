"""Reliability, load: 3 epochs with 2 persistent dataloader workers leak no file descriptors or processes, and
memory (RSS of the main process plus its workers) stays flat after the first epoch."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import lightning as L
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from lightning.pytorch.callbacks import Callback

from train import train

PAGE = os.sysconf("SC_PAGE_SIZE")
RSS_MARGIN_MB = 40.0  # allowed growth of (main + workers) RSS from the end of epoch 1 to the end of epoch 3


def _open_fds() -> set[str]:
    """Open file descriptors of this process, as ``fd -> target`` strings. Font files that matplotlib opens once
    and keeps in its process-wide font cache (for the training history plot) are not counted."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
        if not ("matplotlib" in target and "/fonts/" in target):
            fds.add(f"{fd} -> {target}")
    return fds


def _children(pid: int | None = None) -> set[int]:
    """Live child processes of ``pid`` (default: this process), from /proc."""
    pid = pid or os.getpid()
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found.update(int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def _rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except FileNotFoundError:
        return 0.0


class RecordMemory(Callback):
    """At the end of every training epoch: RSS of the main process and of its (dataloader worker) children."""

    def __init__(self) -> None:
        self.main_mb: list[float] = []
        self.workers_mb: list[float] = []
        self.worker_pids: list[set[int]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        children = _children()
        self.main_mb.append(_rss_mb(os.getpid()))
        self.workers_mb.append(sum(_rss_mb(pid) for pid in children))
        self.worker_pids.append(children)


def test_three_epochs_with_persistent_workers_leak_nothing(make_cfg) -> None:
    cfg = make_cfg(
        [
            *TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=csv", "test=true",
            "data.num_workers=2", "data.persistent_workers=true", "trainer.max_epochs=3",
            f"+callbacks.memory._target_={__name__}.RecordMemory",
        ]
    )  # fmt: skip
    gc.collect()
    fds_before, children_before = _open_fds(), _children()
    _, objects = train(cfg)
    (memory,) = [c for c in objects["trainer"].callbacks if isinstance(c, RecordMemory)]
    assert objects["trainer"].current_epoch == 3
    # Persistent workers: the same two training workers in every epoch (validation has its own two).
    assert len(memory.worker_pids[0]) >= 2 and memory.worker_pids[0] == memory.worker_pids[1] == memory.worker_pids[2]
    total = [main + workers for main, workers in zip(memory.main_mb, memory.workers_mb, strict=True)]
    growth = max(total[1:]) - total[0]
    print(f"RSS main {memory.main_mb} MB, workers {memory.workers_mb} MB, growth after epoch 1: {growth:.1f} MB")
    assert growth < RSS_MARGIN_MB, (memory.main_mb, memory.workers_mb)

    del objects, memory
    deadline = time.monotonic() + 20
    while True:  # workers exit once their loaders are garbage; give them a moment
        gc.collect()
        leaked_children = _children() - children_before
        leaked_fds = _open_fds() - fds_before
        if (not leaked_children and not leaked_fds) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(f"fds before {len(fds_before)}, after {len(_open_fds())}; children before {len(children_before)}")
    assert not leaked_children, f"worker processes still alive: {leaked_children}"
    assert not leaked_fds, f"file descriptors left open: {sorted(leaked_fds)}"
