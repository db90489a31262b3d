"""Helpers shared by several test files (imported as ``from helpers import ...``, like conftest's constants): small
image folders, a tiny synthetic data module and image checks. The callbacks that Hydra instantiates by class path
are in recorders.py."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mobilevit.data import SyntheticDataModule


def synthetic_datamodule(root: Path, **kwargs) -> SyntheticDataModule:
    args = dict(num_classes=4, train_per_class=6, val_per_class=3, test_per_class=2, source_size=48)
    args.update(image_size=32, batch_size=5, num_workers=0)
    args.update(kwargs)
    return SyntheticDataModule(root, **args)


def make_image_folder(root: Path, splits: dict[str, list[str]], per_class: int = 2) -> None:
    for split, classes in splits.items():
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                mode = ("RGB", "L", "RGBA")[k % 3]
                Image.new(mode, (40 + 8 * k, 36), 30 * index).save(folder / f"img{k}.png")


def check_image_tensor(x: torch.Tensor, size: int) -> None:
    assert type(x) is torch.Tensor  # plain tensor, not a tv_tensors subclass
    assert x.shape == (3, size, size)
    assert x.dtype == torch.float32
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0


def damaged_png(path: Path) -> None:
    """A PNG whose compressed image data is scrambled while every chunk checksum is valid: ``verify()`` passes it,
    decoding fails with "broken data stream"."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    chunk = bytes(byte ^ 0x5A if index >= 2 else byte for index, byte in enumerate(data[start : start + length]))
    data[start : start + length] = chunk
    data[start + length : start + length + 4] = zlib.crc32(b"IDAT" + chunk).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    with Image.open(path) as image:
        image.verify()  # the chunk checks pass: only decoding shows the damage


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint file as saved, on the CPU (``torch.load`` with ``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


# A tiny training budget for recipe tests: XXS, 2 epochs of 2 steps, no logger.
TINY_BUDGET = ["model=mobilevit_xxs", "trainer.max_epochs=2", "+trainer.limit_train_batches=2", "logger=none"]
