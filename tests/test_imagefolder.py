"""mobilevit/data/imagefolder.py: a train/val/test folder of class folders, its label order and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_image_folder

from mobilevit.data import ImageFolderDataModule
from mobilevit.errors import UserInputError


def test_imagefolder_loads_and_keeps_train_label_order(tmp_path: Path) -> None:
    # val lacks "b": its labels must still follow train's numbering.
    make_image_folder(tmp_path, {"train": ["a", "b", "c"], "val": ["a", "c"], "test": ["c"]}, per_class=3)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    dm = ImageFolderDataModule(tmp_path, image_size=32, batch_size=4, num_workers=0, split="val")
    assert dm.class_names == ["a", "b", "c"] and dm.num_classes == 3
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert sorted(label for _, label in dm.dataset("val").samples) == [0, 0, 0, 2, 2, 2]
    assert {label for _, label in dm.dataset("test").samples} == {2}
    assert len(dm.test_dataloader().dataset) == 6  # split="val" serves val


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not a folder"):
        ImageFolderDataModule(tmp_path / "nope")

    make_image_folder(tmp_path / "no_val", {"train": ["a", "b"]})
    with pytest.raises(UserInputError, match=r"Missing val folder .*no_val.*val"):
        ImageFolderDataModule(tmp_path / "no_val")

    make_image_folder(tmp_path / "extra", {"train": ["a", "b"], "val": ["a", "b", "zebra"]})
    with pytest.raises(UserInputError, match=r"lacks: \['zebra'\]"):
        ImageFolderDataModule(tmp_path / "extra")

    make_image_folder(tmp_path / "no_test", {"train": ["a", "b"], "val": ["a", "b"]})
    dm = ImageFolderDataModule(tmp_path / "no_test", image_size=32, num_workers=0)  # split=test
    dm.setup("fit")  # training works without test/
    expected = r"No test split.*no_test.*data.split=val.*'train', 'val', 'test'"
    with pytest.raises(UserInputError, match=expected):
        dm.setup("test")
    with pytest.raises(UserInputError, match="data.split must be one of"):
        ImageFolderDataModule(tmp_path / "no_test", split="train")
    with pytest.raises(UserInputError, match="Unknown split"):
        dm.dataloader("holdout")

    make_image_folder(tmp_path / "empty_class", {"train": ["a", "b"], "val": ["a"]})
    for image in (tmp_path / "empty_class" / "train" / "b").iterdir():
        image.unlink()
    with pytest.raises(UserInputError, match="Could not read the train images"):
        ImageFolderDataModule(tmp_path / "empty_class", num_workers=0).setup("fit")
