"""Training batches that BatchNorm cannot use (one value per channel): the rule, the start-up refusal, and the
batches dropped at the end of an epoch, of a multi-scale epoch and of a DDP rank's shard."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from mobilevit.data import MultiScaleBatchSampler, SyntheticDataModule, base
from mobilevit.data.batchnorm import min_train_batch_size, trains_batchnorm
from mobilevit.errors import UserInputError
from mobilevit.models import create_model
from train import train

CASES = [(1, 32, 32), (1, 33, 33), (2, 32, 32), (1, 32, 64), (1, 64, 64), (3, 20, 20)]


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_rule_predicts_what_pytorch_batchnorm_accepts(name: str) -> None:
    model = create_model(name, num_classes=3).train()
    for batch, height, width in CASES:
        try:
            model(torch.rand(batch, 3, height, width))
            trained = True
        except ValueError as error:
            assert "more than 1 value per channel" in str(error)
            trained = False
        assert trained == trains_batchnorm(batch, height, width), (batch, height, width)
    assert [min_train_batch_size(size) for size in (32, 33, 64)] == [2, 1, 1]


def test_batch_of_one_at_32px_is_refused_at_start_up(make_cfg) -> None:
    # The command: experiment=quickstart data.image_size=32 data.batch_size=1 (it crashed in BatchNorm).
    cfg = make_cfg(["experiment=quickstart", "data.image_size=32", "data.batch_size=1", "trainer.max_epochs=1"])
    with pytest.raises(UserInputError) as info:
        train(cfg)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "data.batch_size=1" in message and "data.image_size=32" in message and "BatchNorm" in message
    assert not Path(cfg.paths.output_dir, "checkpoints").exists()  # refused before training


def _synthetic(root: Path, train_per_class: int, **kwargs) -> SyntheticDataModule:
    data = SyntheticDataModule(
        root, num_classes=2, train_per_class=train_per_class, val_per_class=1, test_per_class=1, source_size=48,
        **{"image_size": 32, "batch_size": 4, **kwargs},
    )  # fmt: skip
    data.prepare_data()
    return data


def test_multiscale_size_whose_scaled_batch_is_one_is_refused(tmp_path: Path) -> None:
    # Base batch 1 at 40 px is fine, but at 32 px it scales to floor(1 * 40^2 / 32^2) = 1 image of 1x1 px maps.
    data = SyntheticDataModule(tmp_path, image_size=40, batch_size=1, multiscale=True, multiscale_sizes=[32, 64])
    with pytest.raises(UserInputError, match=r"batches of 1 at 32 px \(data.multiscale_sizes"):
        data.check_train_batch_sizes()
    SyntheticDataModule(tmp_path, image_size=40, batch_size=2, multiscale=True).check_train_batch_sizes()


def test_scheduled_size_whose_scaled_batch_is_one_is_refused(tmp_path: Path) -> None:
    # The schedule ends at 32 px, where data.batch_size=1 at 40 px scales to one image of 1x1 px maps.
    pixels = dict(batch_size=1, resolution_schedule_batch="pixels")  # batches scaled to hold the pixels
    data = SyntheticDataModule(tmp_path, image_size=40, resolution_schedule=[[0, 40], [0.5, 32]], **pixels)
    assert data.size_plan.batch_shapes() == [(32, 1), (40, 1)]
    with pytest.raises(UserInputError, match=r"batches of 1 at 32 px .*data.resolution_schedule"):
        data.check_train_batch_sizes()
    # 1 image at 64 px holds the pixels of 4 at 32 px: trainable.
    SyntheticDataModule(tmp_path, image_size=64, resolution_schedule=[[0, 32], [0.5, 64]], **pixels).check_train_batch_sizes()
    fixed = SyntheticDataModule(tmp_path, image_size=64, batch_size=1, resolution_schedule=[[0, 32], [0.5, 64]])
    with pytest.raises(UserInputError, match=r"batches of 1 at 32 px"):  # the default, fixed: 1 image at every size
        fixed.check_train_batch_sizes()


def test_last_batch_is_dropped_only_when_batchnorm_cannot_train_on_it(tmp_path: Path, caplog) -> None:
    data = _synthetic(tmp_path / "a", train_per_class=5)  # 10 images, batches of 4: a last batch of 2 trains
    assert [len(targets) for _, targets in data.train_dataloader()] == [4, 4, 2]
    data = _synthetic(tmp_path / "b", train_per_class=3, image_size=32, batch_size=5)  # 6 images: 1 left at 32 px
    with caplog.at_level(logging.WARNING, logger="mobilevit.data.batchnorm"):
        assert [len(targets) for _, targets in data.train_dataloader()] == [5]
    assert "Dropping the last training batch of every epoch: 1 image of the 6 training images at 32 px" in caplog.text
    data = _synthetic(tmp_path / "c", train_per_class=3, image_size=48, batch_size=5)  # 48 px: a batch of 1 trains
    assert [len(targets) for _, targets in data.train_dataloader()] == [5, 1]


def test_ddp_rank_shard_drops_its_untrainable_last_batch(tmp_path: Path, monkeypatch, caplog) -> None:
    # 8 images over 2 ranks: 4 each; batches of 3 leave one image per rank (8 % 3 = 2 would not show it).
    data = _synthetic(tmp_path, train_per_class=4, batch_size=3)
    shards = []
    for rank in (0, 1):  # the data module shards its training loader itself, from torch.distributed's place
        monkeypatch.setattr(base, "distributed_replicas", lambda: (2, rank))
        with caplog.at_level(logging.WARNING, logger="mobilevit.data.batchnorm"):
            loader = data.dataloader("train")
        assert "each of 2 processes' 4 training images" in caplog.text
        assert isinstance(loader.sampler, DistributedSampler)
        assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, rank)
        shards.append(list(loader.sampler))
        assert [len(targets) for _, targets in loader] == [3]
    assert sorted(shards[0] + shards[1]) == list(range(8))  # disjoint shards that cover the split


def test_multiscale_plan_drops_untrainable_leftovers_and_counts_them() -> None:
    shard = DistributedSampler(range(18), num_replicas=2, rank=1, shuffle=False)  # 9 per rank
    sampler = MultiScaleBatchSampler(shard, [32], 32, 4)
    assert [len(batch) for batch in sampler] == [4, 4] and (sampler.dropped, sampler.dropped_size) == (1, 32)
    sampler = MultiScaleBatchSampler(shard, [48], 48, 4)  # a single 48 px image trains: kept
    assert sorted(len(batch) for batch in sampler) == [1, 4, 4] and sampler.dropped == 0
    with pytest.raises(UserInputError, match="1 image"):
        MultiScaleBatchSampler(DistributedSampler(range(2), num_replicas=2, rank=0), [32], 32, 4)
