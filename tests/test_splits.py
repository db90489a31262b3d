"""Flowers-102 split protocols: the stratified splitting function, the data module on a fake copy, and the real data."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from mobilevit.data import FLOWERS102_CLASSES, Flowers102DataModule, stratified_split
from mobilevit.data.splits import SPLIT_FILE_NAME
from mobilevit.errors import UserInputError

PAPER_SIZES = {"train": 6500, "val": 689, "test": 1000}


def _flowers_like_labels() -> np.ndarray:
    """8189 labels of 102 classes with 40..~240 images each, like Flowers-102's."""
    rng = np.random.default_rng(123)
    extra = rng.multinomial(8189 - 102 * 40, rng.dirichlet(np.ones(102)))
    return np.repeat(np.arange(102), 40 + extra)


def _check_split(splits: dict[str, np.ndarray], labels: np.ndarray, sizes: dict[str, int]) -> None:
    assert {name: len(positions) for name, positions in splits.items()} == sizes
    everything = np.concatenate(list(splits.values()))
    assert len(np.unique(everything)) == len(everything)  # disjoint
    num_classes = labels.max() + 1
    for name, positions in splits.items():
        per_class = np.bincount(labels[positions], minlength=num_classes)
        assert per_class.min() >= 1, f"a class is missing from {name}"
        # Proportional: within one image of the class's share (largest-remainder rounding).
        quota = np.bincount(labels, minlength=num_classes) * sizes[name] / len(labels)
        if name != "train":
            assert np.abs(per_class - quota).max() < 1 + 1e-9


def test_stratified_split_exact_sizes_every_class_deterministic() -> None:
    labels = _flowers_like_labels()
    splits = stratified_split(labels, PAPER_SIZES, seed=0)
    _check_split(splits, labels, PAPER_SIZES)
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(8189))  # all images used
    again = stratified_split(labels.tolist(), PAPER_SIZES, seed=0)
    assert all(np.array_equal(splits[name], again[name]) for name in PAPER_SIZES)
    other = stratified_split(labels, PAPER_SIZES, seed=1)
    _check_split(other, labels, PAPER_SIZES)
    assert not np.array_equal(splits["val"], other["val"]) and not np.array_equal(splits["test"], other["test"])
    # Pinned: the split for a seed must not change across machines or library versions.
    assert splits["val"][:5].tolist() == [5, 31, 39, 45, 49] and splits["test"][:5].tolist() == [14, 29, 33, 41, 54]


def test_stratified_split_subset_and_errors() -> None:
    labels = _flowers_like_labels()
    sizes = {"train": 1000, "val": 300, "test": 500}
    splits = stratified_split(labels, sizes, seed=3)
    _check_split(splits, labels, sizes)  # fewer than all images: the rest is unused
    with pytest.raises(UserInputError, match="at most the 8189 images"):
        stratified_split(labels, {"train": 8000, "val": 689, "test": 1000}, seed=0)
    with pytest.raises(UserInputError, match=r"data.stratified_sizes.val=50 is smaller than the number of classes"):
        stratified_split(labels, {"train": 6500, "val": 50, "test": 1000}, seed=0)
    with pytest.raises(UserInputError, match=r"Classes \[1\] have fewer images"):
        stratified_split([0, 0, 0, 1, 1, 2, 2, 2], {"train": 3, "val": 3, "test": 2}, seed=0)


# ----------------------------------------------------------------------------- data module on a fake copy


@pytest.fixture(scope="module")
def fake_flowers(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A tiny Flowers-102 look-alike: 102 classes x 4-6 images (8 px JPEGs), official split 1/1/rest per class."""
    root = tmp_path_factory.mktemp("fake_flowers")
    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    labels = np.repeat(np.arange(102), 4 + np.arange(102) % 3)
    for image_id, label in enumerate(labels, start=1):
        Image.new("RGB", (12, 8), (2 * int(label), 0, 0)).save(base / "jpg" / f"image_{image_id:05d}.jpg")
    ids = np.arange(1, len(labels) + 1)
    first = np.searchsorted(labels, np.arange(102))
    train_ids, val_ids = ids[first], ids[first + 1]
    test_ids = np.setdiff1d(ids, np.concatenate([train_ids, val_ids]))
    savemat(base / "imagelabels.mat", {"labels": (labels + 1)[None, :]})
    savemat(base / "setid.mat", {"trnid": train_ids[None, :], "valid": val_ids[None, :], "tstid": test_ids[None, :]})
    return root, labels


def _flowers(root: Path, **kwargs) -> Flowers102DataModule:
    return Flowers102DataModule(root, download=False, image_size=32, batch_size=32, num_workers=0, **kwargs)


def test_official_protocol_reads_setid(fake_flowers, tmp_path: Path) -> None:
    root, labels = fake_flowers
    dm = _flowers(root, split_dir=tmp_path / "run")
    dm.setup("fit")
    assert [len(dm.dataset(split)) for split in ("train", "val")] == [102, 102]
    assert dm.class_counts().tolist() == [1] * 102
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (32, 3, 32, 32) and targets.tolist() == list(range(32))
    record = json.loads((tmp_path / "run" / SPLIT_FILE_NAME).read_text())
    assert record["protocol"] == "official" and record["seed"] is None
    assert record["sizes"] == {"train": 102, "val": 102, "test": len(labels) - 204}
    assert record["files"]["train"][:2] == ["image_00001.jpg", "image_00005.jpg"]


def test_official_trainval_protocol_trains_on_train_and_val(fake_flowers, tmp_path: Path) -> None:
    root, labels = fake_flowers
    official, trainval = _flowers(root), _flowers(root, split_protocol="official_trainval", split_dir=tmp_path)
    ids, both = official.split_image_ids, trainval.split_image_ids
    assert both["train"].tolist() == ids["train"].tolist() + ids["val"].tolist()
    assert both["val"].tolist() == ids["val"].tolist() and both["test"].tolist() == ids["test"].tolist()
    trainval.setup("fit")
    assert len(trainval.dataset("train")) == 204 and trainval.class_counts().tolist() == [2] * 102
    assert json.loads((tmp_path / SPLIT_FILE_NAME).read_text())["protocol"] == "official_trainval"


def test_stratified_protocol_on_fake_copy(fake_flowers, tmp_path: Path) -> None:
    root, labels = fake_flowers
    sizes = {"train": 204, "val": 102, "test": len(labels) - 306}
    dm = _flowers(root, split_protocol="stratified", split_seed=4, stratified_sizes=sizes, split_dir=tmp_path / "a")
    dm.setup("test")
    assert not (tmp_path / "a").exists()  # evaluation does not (re)write the split
    dm.setup("fit")
    assert {split: len(dm.dataset(split)) for split in sizes} == sizes
    counts = dm.class_counts()
    assert counts.dtype == torch.int64 and counts.shape == (102,) and counts.min() >= 1 and counts.sum() == 204
    for split in sizes:
        assert set(dm.dataset(split).targets) == set(range(102))  # every class in every split
    # The dataset reads the files named in split.json, with their labels.
    record = json.loads((tmp_path / "a" / SPLIT_FILE_NAME).read_text())
    assert record["protocol"] == "stratified" and record["seed"] == 4 and record["sizes"] == sizes
    val = dm.dataset("val")
    assert [path.name for path in val.files] == record["files"]["val"]
    assert val.targets == [int(labels[int(name[6:11]) - 1]) for name in record["files"]["val"]]
    image, target = val[0]
    assert image.shape == (3, 32, 32) and target == val.targets[0]

    same = _flowers(root, split_protocol="stratified", split_seed=4, stratified_sizes=sizes, split_dir=tmp_path / "b")
    same.setup("fit")
    assert (tmp_path / "b" / SPLIT_FILE_NAME).read_text() == (tmp_path / "a" / SPLIT_FILE_NAME).read_text()
    other = _flowers(root, split_protocol="stratified", split_seed=5, stratified_sizes=sizes)
    assert other.split_image_ids["val"].tolist() != dm.split_image_ids["val"].tolist()


def test_split_config_errors(fake_flowers) -> None:
    root, _ = fake_flowers
    with pytest.raises(UserInputError, match="data.split_protocol must be one of"):
        _flowers(root, split_protocol="random")
    with pytest.raises(UserInputError, match="data.split_seed"):
        _flowers(root, split_seed=-1)
    with pytest.raises(UserInputError, match="data.stratified_sizes must map train, val and test"):
        _flowers(root, stratified_sizes={"train": 10, "val": 5})
    with pytest.raises(UserInputError, match="data.stratified_sizes.test"):
        _flowers(root, stratified_sizes={"train": 10, "val": 5, "test": 0})
    too_many = _flowers(root, split_protocol="stratified")  # 8189 images requested from a small copy
    with pytest.raises(UserInputError, match="data.stratified_sizes"):
        too_many.setup("fit")


def test_yaml_writes_split_into_the_run_dir(fake_flowers, make_cfg) -> None:
    root, labels = fake_flowers
    sizes = f"{{train: 204, val: 102, test: {len(labels) - 306}}}"
    cfg = make_cfg(["data=flowers102", f"data.root={root}", "data.split_protocol=stratified",
                    "data.split_seed=2", f"data.stratified_sizes={sizes}", "data.num_workers=0"])  # fmt: skip
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.split_dir == Path(cfg.paths.output_dir)
    dm.setup("fit")
    record = json.loads((Path(cfg.paths.output_dir) / SPLIT_FILE_NAME).read_text())
    assert record["seed"] == 2 and record["sizes"]["val"] == 102


# ----------------------------------------------------------------------------- real Flowers-102


def test_real_official_split_matches_torchvision(flowers_root: Path) -> None:
    from torchvision.datasets import Flowers102

    dm = _flowers(flowers_root)
    for split, size in (("train", 1020), ("val", 1020), ("test", 6149)):
        ours = dm.dataset(split)
        reference = Flowers102(str(flowers_root), split=split, download=False)
        assert len(ours) == size
        # torchvision keeps the file list and labels in private attributes: compare against them.
        assert [str(path) for path in ours.files] == [str(path) for path in reference._image_files]
        assert ours.targets == list(reference._labels)
    assert dm.class_counts().tolist() == [10] * 102


def test_real_stratified_split(flowers_root: Path, tmp_path: Path) -> None:
    dm = _flowers(flowers_root, split_protocol="stratified", split_seed=0, split_dir=tmp_path)
    dm.setup("fit")
    sizes = {split: len(dm.dataset(split)) for split in ("train", "val", "test")}
    assert sizes == PAPER_SIZES
    assert all(set(dm.dataset(split).targets) == set(range(102)) for split in sizes)
    assert dm.class_counts().sum() == 6500 and len(dm.class_names) == len(FLOWERS102_CLASSES)
    record = json.loads((tmp_path / SPLIT_FILE_NAME).read_text())
    assert record["sizes"] == PAPER_SIZES and record["seed"] == 0
    every_file = sorted(name for names in record["files"].values() for name in names)
    assert every_file == [f"image_{i:05d}.jpg" for i in range(1, 8190)]
    again = _flowers(flowers_root, split_protocol="stratified", split_seed=0)
    assert all(np.array_equal(again.split_image_ids[s], dm.split_image_ids[s]) for s in sizes)
    other = _flowers(flowers_root, split_protocol="stratified", split_seed=1)
    assert not np.array_equal(other.split_image_ids["test"], dm.split_image_ids["test"])
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (32, 3, 32, 32) and targets.dtype == torch.int64


def test_evaluate_rebuilds_the_stratified_split_of_the_checkpoint(fake_flowers, make_cfg) -> None:
    """evaluate.py on a checkpoint trained with a seeded stratified split tests the same images as train.py did."""
    from evaluate import evaluate
    from mobilevit.checkpoint import datamodule_from_weights, read_trained
    from train import train

    root, labels = fake_flowers
    sizes = f"{{train: 204, val: 102, test: {len(labels) - 306}}}"
    train_cfg = make_cfg(
        ["data=flowers102", f"data.root={root}", "data.split_protocol=stratified", "data.split_seed=7",
         f"data.stratified_sizes={sizes}", "data.download=false", "data.num_workers=0", "data.image_size=32",
         "data.batch_size=64", "model=mobilevit_xxs", "trainer=cpu", "trainer.precision=32-true", "logger=none",
         "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "callbacks.reports=null",
         "trainer.enable_progress_bar=false"],
        run_name="trained",
    )  # fmt: skip
    metrics, objects = train(train_cfg)
    trained_test = json.loads((Path(train_cfg.paths.output_dir) / SPLIT_FILE_NAME).read_text())["files"]["test"]

    rebuilt = datamodule_from_weights(read_trained(objects["best_ckpt"]), {})
    assert [path.name for path in rebuilt.image_files("test")] == trained_test  # same files, same order
    other_seed = _flowers(root, split_protocol="stratified", split_seed=8, stratified_sizes=rebuilt.stratified_sizes)
    assert [path.name for path in other_seed.image_files("test")] != trained_test  # the seed matters

    cfg = make_cfg([f"ckpt_path={objects['best_ckpt']}", "trainer=cpu", "trainer.precision=32-true"],
                   config_name="eval", run_name="eval")  # fmt: skip
    result = evaluate(cfg)
    assert result["num_images"] == len(trained_test) == len(labels) - 306
    assert result["top1"] == pytest.approx(metrics["test/acc"], abs=1e-6)
