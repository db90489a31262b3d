"""Multi-scale variable-batch training: sizes, pixel budget, DDP sharding, and a real 2-process gloo run."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, TINY_SYNTHETIC, train_two_ddp_processes
from recorders import RecordBatches, target
from torch.utils.data import DistributedSampler

from mobilevit.data import (
    MultiScaleBatchSampler,
    MultiScaleDataset,
    SyntheticDataModule,
    basic_augmentation,
)
from mobilevit.data import base as data_base
from mobilevit.data.sampler import default_multiscale_sizes, resolve_multiscale_sizes, scaled_batch_size
from mobilevit.errors import UserInputError
from train import train

SIZES = [160, 192, 256, 288, 320]


def _sampler(num_samples: int, world_size: int = 1, rank: int = 0, seed: int = 0) -> MultiScaleBatchSampler:
    indices = DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    return MultiScaleBatchSampler(indices, SIZES, base_size=256, base_batch_size=64, seed=seed)


def test_default_sizes_scale_with_image_size() -> None:
    assert default_multiscale_sizes(256) == SIZES  # the paper's set for 256 px
    assert default_multiscale_sizes(224) == [128, 160, 224, 256, 288]
    assert default_multiscale_sizes(64) == [32, 64, 96]
    assert resolve_multiscale_sizes(256, [320, 160, 160]) == [160, 320]
    for bad in ([], [16, 64], "256", [64.5]):
        with pytest.raises(UserInputError, match="data.multiscale_sizes"):
            resolve_multiscale_sizes(256, bad)


def test_batch_size_scales_inversely_with_area() -> None:
    assert [scaled_batch_size(64, 256, size) for size in SIZES] == [163, 113, 64, 50, 40]
    sampler = _sampler(2000)
    base_pixels = 64 * 256**2
    sizes_seen, partial = Counter(), []
    for batch in sampler:
        (size,) = {s for _, s in batch}  # one resolution per batch
        if len(batch) < sampler.batch_sizes[size]:
            partial.append(batch)  # the epoch's remainder
            continue
        sizes_seen[size] += 1
        assert 0.93 * base_pixels <= len(batch) * size**2 <= base_pixels  # ~constant pixels, never more
    assert len(partial) <= 1
    assert set(sizes_seen) == set(SIZES)
    assert max(sizes_seen.values()) - min(sizes_seen.values()) <= 1  # sizes used equally often


def test_epoch_covers_every_index_once_and_reshuffles() -> None:
    sampler = _sampler(1001)
    assert len(sampler) == len(list(sampler))
    first = [index for batch in sampler for index, _ in batch]
    assert sorted(first) == list(range(1001))
    sizes_0 = sampler.step_sizes()
    assert [batch[0][1] for batch in sampler] == sizes_0
    assert list(sampler) == list(sampler)  # deterministic within an epoch
    sampler.set_epoch(1)
    second = [index for batch in sampler for index, _ in batch]
    assert sorted(second) == list(range(1001)) and second != first
    assert sampler.step_sizes() != sizes_0 and sorted(sampler.step_sizes()) == sorted(sizes_0)
    assert len(sampler) == len(list(sampler))  # same number of steps every epoch


def test_single_leftover_sample_is_dropped() -> None:
    sampler = MultiScaleBatchSampler(DistributedSampler(range(9), num_replicas=1, rank=0), [32], 32, 4)
    assert [len(batch) for batch in sampler] == [4, 4]  # not a batch of one (BatchNorm)


def test_two_ranks_disjoint_cover_and_same_sizes() -> None:
    for epoch in (0, 3):
        ranks = [_sampler(1000, world_size=2, rank=rank, seed=5) for rank in (0, 1)]
        for sampler in ranks:
            sampler.set_epoch(epoch)
        batches = [list(sampler) for sampler in ranks]
        assert len(batches[0]) == len(batches[1]) == len(ranks[0])
        indices = [{index for batch in rank for index, _ in batch} for rank in batches]
        assert not indices[0] & indices[1] and indices[0] | indices[1] == set(range(1000))
        sizes = [[batch[0][1] for batch in rank] for rank in batches]
        assert sizes[0] == sizes[1] and len(set(sizes[0])) == len(SIZES)


def test_datamodule_multiscale_loaders(tmp_path: Path) -> None:
    dm = SyntheticDataModule(
        tmp_path / "synthetic", num_classes=3, train_per_class=12, val_per_class=4, test_per_class=2,
        source_size=48, image_size=48, batch_size=4, multiscale=True, multiscale_sizes=[32, 48, 64],
        augmentation=basic_augmentation,
    )  # fmt: skip
    assert dm.multiscale and dm.multiscale_sizes == [32, 48, 64]
    dm.setup("fit")
    assert isinstance(dm.dataset("train"), MultiScaleDataset)
    loader = dm.train_dataloader()
    assert isinstance(loader.batch_sampler, MultiScaleBatchSampler)
    expected = loader.batch_sampler.step_sizes()
    shapes = [tuple(images.shape) for images, _ in loader]
    assert [shape[-1] for shape in shapes] == expected and {shape[-2] for shape in shapes} == {32, 48, 64}
    # Batch sizes 4 x (48 / size)^2 rounded down: 9 at 32 px, 4 at 48, 2 at 64; round-robin over 36 images.
    assert sorted((shape[-1], shape[0]) for shape in shapes) == sorted([(32, 9), (48, 4), (64, 2)] * 2 + [(32, 6)])
    for images, targets in dm.val_dataloader():
        assert images.shape[-2:] == (48, 48) and targets.dtype == torch.int64  # validation at the base size
    assert len(dm.dataset("train")._transforms) == 3  # one cached transform per size


def test_eval_loaders_sharded_by_the_datamodule_under_ddp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data module shards val/test itself (unshuffled), from torch.distributed's place (Lightning's sampler
    injection is off)."""
    seen = []
    for rank in (0, 1):
        dm = SyntheticDataModule(
            tmp_path / "synthetic", num_classes=2, train_per_class=4, val_per_class=5, test_per_class=2,
            source_size=32, image_size=32, batch_size=4, multiscale=True,
        )  # fmt: skip
        monkeypatch.setattr(data_base, "distributed_replicas", lambda rank=rank: (2, rank))
        loader = dm.val_dataloader()
        assert isinstance(loader.sampler, DistributedSampler) and not loader.sampler.shuffle
        assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, rank)
        seen.append(list(loader.sampler))
        assert sum(len(images) for images, _ in loader) == 5
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(10))


def test_augmentation_must_be_a_size_free_preset(tmp_path: Path) -> None:
    built = basic_augmentation(32)  # an Augmentation built at one size, not the preset itself
    with pytest.raises(UserInputError, match="augmentation must be a configs/augmentation preset"):
        SyntheticDataModule(tmp_path, multiscale=True, augmentation=built)
    with pytest.raises(UserInputError, match="data.shuffle_seed"):
        SyntheticDataModule(tmp_path, multiscale=True, shuffle_seed=-1)


def test_the_deprecated_multiscale_seed_still_seeds_the_shuffle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mobilevit.data.base"):
        dm = SyntheticDataModule(tmp_path, multiscale=True, shuffle_seed=1, multiscale_seed=3)
    assert dm.shuffle_seed == 3
    assert "data.multiscale_seed is deprecated (removed in 0.2.0): use data.shuffle_seed=3." in caplog.text
    with pytest.raises(UserInputError, match="data.multiscale_seed"):
        SyntheticDataModule(tmp_path, multiscale=True, multiscale_seed=-1)


# ----------------------------------------------------------------------------- real DDP run


def test_ddp_two_processes_same_sizes_disjoint_shards(tmp_path: Path) -> None:
    """train.py with 2 CPU processes (gloo): per step both ranks use the same size; shards are disjoint."""
    records = tmp_path / "records"
    multiscale = ["data.image_size=48", "data.batch_size=4", "data.multiscale=true", "data.multiscale_sizes=[32,48,64]"]
    train_two_ddp_processes(tmp_path, multiscale, target(RecordBatches), records)
    ranks = [json.loads((records / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(rank["world_size"] == 2 for rank in ranks)
    steps = [rank["steps"] for rank in ranks]
    assert len(steps[0]) == len(steps[1]) > 0
    for step_0, step_1 in zip(*steps):
        assert step_0["epoch"] == step_1["epoch"] and step_0["size"] == step_1["size"]  # same resolution per step
    for rank_steps in steps:
        assert all(s["sampler"] == "MultiScaleBatchSampler" for s in rank_steps)  # not replaced by Lightning
        assert all(s["size"] == s["planned_size"] and s["batch"] == len(s["indices"]) for s in rank_steps)
    assert {s["size"] for s in steps[0]} == {32, 48, 64}
    for epoch in (0, 1):
        shards = [[i for s in rank_steps if s["epoch"] == epoch for i in s["indices"]] for rank_steps in steps]
        assert not set(shards[0]) & set(shards[1])  # disjoint shards
        assert sorted(shards[0] + shards[1]) == list(range(36))  # together: every training image once
    order = [[i for s in steps[0] if s["epoch"] == epoch for i in s["indices"]] for epoch in (0, 1)]
    assert order[0] != order[1]  # set_epoch reached the sampler: a new shuffle in epoch 1


def test_train_single_process_multiscale_with_strong_augmentation(make_cfg) -> None:
    """train.py end to end: multi-scale batches with MixUp/CutMix soft targets; validation at the base size."""
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "augmentation=strong",
                    "data.multiscale=true", "data.multiscale_sizes=[32,64]", "logger=none", "test=false",
                    "+trainer.fast_dev_run=2"])  # fmt: skip
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 2 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert isinstance(objects["trainer"].train_dataloader.batch_sampler, MultiScaleBatchSampler)
    images, targets = next(iter(objects["datamodule"].train_dataloader()))
    assert targets.shape == (len(images), 3) and targets.dtype == torch.float32
