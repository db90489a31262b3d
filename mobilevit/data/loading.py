"""Loader plumbing shared by the data modules: the process's place under DDP, the worker start method, and
images that break after the start-up scan (``data.skip_bad_images``)."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from torch.utils.data import Dataset, default_collate

from mobilevit.data.images import UnreadableImageError
from mobilevit.errors import UserInputError

log = logging.getLogger(__name__)


def distributed_replicas() -> tuple[int, int]:
    """(world size, global rank) of this process in the initialised ``torch.distributed`` process group, else (1, 0).

    Lightning's DDP strategies initialise the group before the data module's ``setup`` and its loaders, so the data
    side learns its shard from torch.distributed alone and never reads the Trainer."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class SkipUnreadable(Dataset):
    """``dataset`` whose items that cannot be decoded when loaded (:class:`UnreadableImageError`: the file changed or
    broke after the start-up scan) become None, each logged with this process's running count
    (``data.skip_bad_images=true``); :class:`DropSkipped` leaves them out of the batch."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.targets = getattr(dataset, "targets", None)
        self.skipped = 0

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.dataset[key]
        except UnreadableImageError as error:
            self.skipped += 1
            log.warning(
                "data.skip_bad_images=true: skipped %s, unreadable when loaded (%s); %d image%s skipped so far in "
                "this process.", error.path, error.reason, self.skipped, "" if self.skipped == 1 else "s",
            )  # fmt: skip
            return None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class DropSkipped:
    """``collate_fn`` that leaves out the samples :class:`SkipUnreadable` replaced by None, then collates the rest
    with ``collate`` (default: ``default_collate``)."""

    def __init__(self, collate: Callable[[list[Any]], Any] | None = None) -> None:
        self.collate = collate or default_collate

    def __call__(self, samples: list[Any]) -> Any:
        kept = [sample for sample in samples if sample is not None]
        if not kept:
            raise UserInputError(
                f"All {len(samples)} images of a batch were unreadable when loaded (data.skip_bad_images=true): the "
                "files under data.root changed after the start-up scan; see the warnings above."
            )
        return self.collate(kept)


PYTHON_START_METHODS = ("fork", "spawn", "forkserver")


def worker_start_method() -> str | None:
    """How DataLoader workers are started: None (Python's current default), except where that default is not one of
    Python's own start methods, as in the loky processes of Hydra's joblib launcher ('loky': the workers fail to
    start); there, the platform's default (``fork`` on Linux up to Python 3.13, ``spawn`` on macOS and Windows)."""
    if multiprocessing.get_start_method(allow_none=True) in (None, *PYTHON_START_METHODS):
        return None
    return next(method for method in multiprocessing.get_all_start_methods() if method in PYTHON_START_METHODS)
