"""Decoded-image cache: every image decoded once, held as uint8 pixels in shared memory (``data.cache_images``).

Small-data speedruns (airbench, hlb-CIFAR10) keep the dataset decoded in memory so that the cores go to the model.
Here each image is decoded once with :func:`mobilevit.data.load_image` (the same pixels as without the cache),
shrunk so that its shorter side is at most ``max_short_side`` (never enlarged), and stored in one flat uint8
tensor in shared memory. DataLoader workers (forked or spawned) then read pixels without decoding: only the
per-sample augmentation is left to them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

# Pillow releases the GIL while it decodes and resizes, so threads decode in parallel.
DECODE_THREADS = min(8, os.cpu_count() or 1)


def shrink_to_short_side(image: Image.Image, max_short_side: int | None) -> Image.Image:
    """``image`` resized (antialiased bicubic, aspect ratio kept) so its shorter side is ``max_short_side``;
    unchanged when it is already that small or ``max_short_side`` is None."""
    width, height = image.size
    short = min(width, height)
    if max_short_side is None or short <= max_short_side:
        return image
    scale = max_short_side / short
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


class DecodedImageCache(Dataset):
    """``dataset`` (returning PIL images) decoded once: ``self[i]`` = (uint8 tensor (3, H, W), target).

    Args:
        dataset: a dataset of ``(PIL image, target)`` with a ``targets`` list (no transform).
        max_short_side: shorter side of the cached images in pixels (larger images are shrunk); None keeps
            every image at its decoded size.
        threads: decoding threads.

    The memory used is logged: about ``3 x H x W`` bytes per image (6500 Flowers-102 images with a 160 px
    shorter side: about 0.6 GB).
    """

    def __init__(self, dataset: Dataset, max_short_side: int | None, threads: int = DECODE_THREADS) -> None:
        self.targets: list[int] = list(dataset.targets)  # type: ignore[attr-defined]
        self.max_short_side = max_short_side

        def decode(index: int) -> np.ndarray:
            image, _ = dataset[index]
            return np.asarray(shrink_to_short_side(image.convert("RGB"), max_short_side), dtype=np.uint8)

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            arrays: Sequence[np.ndarray] = list(pool.map(decode, range(len(self.targets))))
        self.shapes = torch.tensor([array.shape[:2] for array in arrays], dtype=torch.int64).reshape(-1, 2)
        sizes = self.shapes.prod(dim=1) * 3
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
        self.pixels = torch.empty(int(self.offsets[-1]), dtype=torch.uint8).share_memory_()
        flat = self.pixels.numpy()
        for index, array in enumerate(arrays):
            flat[self.offsets[index] : self.offsets[index + 1]] = array.reshape(-1)
        log.info(
            "Cached %d decoded images (shorter side <= %s px): %.0f MB of shared memory.",
            len(arrays), max_short_side, self.pixels.numel() / 1e6,
        )  # fmt: skip

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` as a uint8 tensor (3, H, W), copied out of the shared buffer."""
        height, width = self.shapes[index].tolist()
        flat = self.pixels[self.offsets[index] : self.offsets[index + 1]]
        return flat.view(height, width, 3).permute(2, 0, 1).contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        return self.image(index), self.targets[index]

    def __len__(self) -> int:
        return len(self.targets)


class TransformedDataset(Dataset):
    """``dataset`` with ``transform`` applied to every image; keeps its ``targets``."""

    def __init__(self, dataset: Dataset, transform: Any) -> None:
        self.dataset = dataset
        self.transform = transform
        self.targets = dataset.targets  # type: ignore[attr-defined]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.dataset[index]
        return self.transform(image), target

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]
