"""mobilevit/data/loading.py: the process's place under DDP, images that break after the start-up scan
(data.skip_bad_images), and the DataLoader workers' start method. End-to-end: test_reliability_images.py and
test_reliability_ddp.py."""

from __future__ import annotations

import logging
import multiprocessing

import pytest
import torch

from mobilevit.data import loading
from mobilevit.data.images import UnreadableImageError
from mobilevit.data.loading import DropSkipped, SkipUnreadable, distributed_replicas, worker_start_method
from mobilevit.errors import UserInputError


def test_the_shard_is_read_from_torch_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed_replicas() == (1, 0)  # no process group
    monkeypatch.setattr(loading.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(loading.dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(loading.dist, "get_rank", lambda: 2)
    assert distributed_replicas() == (4, 2)


class BrokenAt(torch.utils.data.Dataset):
    """(image, label) items, of which those at ``broken`` fail to decode as a changed file would."""

    def __init__(self, size: int, broken: set[int]) -> None:
        self.size, self.broken, self.targets = size, broken, list(range(size))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index in self.broken:
            raise UnreadableImageError(f"img_{index}.jpg", "truncated")
        return torch.full((3, 2, 2), float(index)), index

    def __len__(self) -> int:
        return self.size


def test_unreadable_items_are_counted_logged_and_left_out_of_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    dataset = SkipUnreadable(BrokenAt(4, broken={1, 3}))
    assert len(dataset) == 4 and dataset.targets == [0, 1, 2, 3]
    with caplog.at_level(logging.WARNING, logger="mobilevit.data.loading"):
        samples = [dataset[index] for index in range(4)]
    assert samples[1] is None and samples[3] is None and dataset.skipped == 2
    assert "skipped img_1.jpg, unreadable when loaded (truncated); 1 image skipped so far" in caplog.text
    assert "skipped img_3.jpg, unreadable when loaded (truncated); 2 images skipped so far" in caplog.text
    images, labels = DropSkipped()(samples)
    assert images.shape == (2, 3, 2, 2) and labels.tolist() == [0, 2]


def test_a_batch_with_no_readable_image_is_one_clear_error() -> None:
    with pytest.raises(UserInputError, match=r"All 2 images of a batch were unreadable .*data.skip_bad_images=true"):
        DropSkipped()([None, None])


def test_workers_start_with_pythons_default_except_under_a_foreign_start_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert worker_start_method() is None  # Python's own default: left to DataLoader
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "loky")  # Hydra's joblib
    platform_default = next(m for m in multiprocessing.get_all_start_methods() if m in ("fork", "spawn", "forkserver"))
    assert worker_start_method() == platform_default
