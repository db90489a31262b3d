"""Atomic checkpoint files: a crash or SIGKILL during a save never leaves a partial ``last.ckpt``.

Lightning 2.6 saves through ``lightning.fabric.utilities.cloud_io._atomic_save``: ``torch.save`` into memory, then
an fsspec transaction that writes a temporary file in the *system* temp dir (``tempfile.mkstemp()``) and
``shutil.move``s it over the target. That is a rename only when the temp dir and the run directory share a
filesystem; with a tmpfs ``/tmp`` or run directories on NFS/Lustre the move is a copy that a kill can cut
short, and nothing is fsynced. :class:`AtomicCheckpointIO` writes the temporary file beside the target, fsyncs
it, and renames it into place with ``os.replace`` (atomic on POSIX and Windows within one filesystem). A kill during
the write leaves only a hidden ``.<name>.<random>.tmp`` beside the intact old file; it can be deleted.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that leaves ``path`` either as it was or complete: a temporary file beside it
    (``.<name>.<random>.tmp``), flushed and fsynced, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "xb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic local saves (see the module docstring); remote URLs
    (``s3://`` ...) keep Lightning's fsspec path. Set as a Trainer plugin in ``configs/trainer/default.yaml``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))
