"""Shared LightningDataModule for image classification datasets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from mobilevit.data.transforms import eval_transform
from mobilevit.errors import UserInputError

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Splits that test_dataloader() may serve (config key ``data.split``).
EVAL_SPLITS: tuple[str, ...] = ("test", "val")

Transform = Callable[[Any], torch.Tensor]


def require_int(value: Any, key: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an int in [minimum, maximum], else a UserInputError naming config ``key``."""
    valid = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not valid or (maximum is not None and value > maximum):
        bounds = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise UserInputError(f"{key} must be an integer {bounds}, got {value!r}.")
    return value


class ImageClassificationDataModule(L.LightningDataModule, ABC):
    """Base data module: shared arguments, transforms and dataloaders.

    Subclasses set ``self.class_names`` in ``__init__`` (cheap: no image decoding) and
    implement :meth:`_make_dataset`.

    Args:
        root: dataset folder.
        image_size: side length of the square images fed to the model.
        batch_size: images per batch.
        num_workers: dataloader worker processes (0 = load in the main process).
        pin_memory: pin host memory for faster GPU transfer (only used when CUDA is available).
        persistent_workers: keep workers alive between epochs (only effective if num_workers > 0).
        split: split served by ``test_dataloader()``: "test" or "val".
        crop_pct: evaluation resize ratio; images are resized to image_size / crop_pct, then
            center-cropped.
        train_transform: transform for training images; None uses the evaluation transform.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 256,
        batch_size: int = 64,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        split: str = "test",
        crop_pct: float = 0.9,
        train_transform: Transform | None = None,
    ) -> None:
        super().__init__()
        if root is None or str(root) in ("", "???"):
            raise UserInputError(
                "data.root is required: set it to the dataset folder, e.g. data.root=/path/to/data."
            )
        if split not in EVAL_SPLITS:
            raise UserInputError(f"data.split must be one of {list(EVAL_SPLITS)}, got {split!r}.")
        require_int(batch_size, "data.batch_size", 1)
        require_int(num_workers, "data.num_workers", 0)
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.split = split
        self.crop_pct = crop_pct
        self.eval_transform: Transform = eval_transform(image_size, crop_pct)
        self.train_transform: Transform = (
            train_transform if train_transform is not None else self.eval_transform
        )
        self.class_names: list[str] = []
        self._datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``class_names``)."""
        return len(self.class_names)

    @abstractmethod
    def _make_dataset(self, split: str, transform: Transform) -> Dataset:
        """Build the dataset of one split ("train", "val" or "test")."""

    def _check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise UserInputError(f"Unknown split {split!r}; valid splits: {list(SPLITS)}.")
        return split

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (built once, then cached); training split uses the train transform."""
        self._check_split(split)
        if split not in self._datasets:
            transform = self.train_transform if split == "train" else self.eval_transform
            self._datasets[split] = self._make_dataset(split, transform)
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets needed for ``stage`` ("fit", "validate", "test", "predict" or None)."""
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": (self.split,),
            "predict": (self.split,),
            None: ("train", "val", self.split),
        }.get(stage, ())
        for split in needed:
            self.dataset(split)

    def dataloader(self, split: str, shuffle: bool | None = None) -> DataLoader:
        """DataLoader over ``split``; shuffles only the training split unless ``shuffle`` says otherwise."""
        dataset = self.dataset(split)
        is_train = split == "train"
        shuffle = is_train if shuffle is None else shuffle
        # A final training batch of one sample breaks BatchNorm in train mode: drop it.
        drop_last = is_train and len(dataset) > self.batch_size and len(dataset) % self.batch_size == 1
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """Serves the split named by ``data.split`` ("test" or "val")."""
        return self.dataloader(self.split)

    def predict_dataloader(self) -> DataLoader:
        return self.dataloader(self.split)

    def __repr__(self) -> str:
        # Cheap summary; LightningDataModule.__str__ would build every dataloader.
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, batch_size={self.batch_size}, split={self.split!r})"
        )

    __str__ = __repr__
