"""Reliability, load: 3 epochs with 2 persistent dataloader workers leak no file descriptors or processes, and
memory (RSS of the main process plus its workers) stays flat after the first epoch."""

from __future__ import annotations

import gc
import os
import time

from conftest import FAST_TRAIN, TINY_SYNTHETIC
from recorders import RecordMemory, child_pids, target

from train import train

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


def test_three_epochs_with_persistent_workers_leak_nothing(make_cfg) -> None:
    cfg = make_cfg(
        [
            *TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=csv", "test=true",
            "data.num_workers=2", "data.persistent_workers=true", "trainer.max_epochs=3",
            f"+callbacks.memory._target_={target(RecordMemory)}",
        ]
    )  # fmt: skip
    gc.collect()
    fds_before, children_before = _open_fds(), child_pids()
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
        leaked_children = child_pids() - children_before
        leaked_fds = _open_fds() - fds_before
        if (not leaked_children and not leaked_fds) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(f"fds before {len(fds_before)}, after {len(_open_fds())}; children before {len(children_before)}")
    assert not leaked_children, f"worker processes still alive: {leaked_children}"
    assert not leaked_fds, f"file descriptors left open: {sorted(leaked_fds)}"
