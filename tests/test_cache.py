"""Decoded-image cache (mobilevit/data/cache.py, data.cache_images): cached images equal uncached ones."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevit.data import SyntheticDataModule, load_image
from mobilevit.data.cache import DecodedImageCache, shrink_to_short_side
from mobilevit.data.flowers102 import ImageList


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    files = []
    for index, (width, height) in enumerate([(120, 80), (64, 200), (300, 300)]):
        path = root / f"image_{index}.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=90)
        files.append(path)
    return files


def test_cached_pixels_equal_the_decoded_file(jpegs: list[Path]) -> None:
    cache = DecodedImageCache(ImageList(jpegs, [0, 1, 2]), max_short_side=100, threads=2)
    assert cache.targets == [0, 1, 2] and len(cache) == 3
    for index, path in enumerate(jpegs):
        image, target = cache[index]
        expected = np.asarray(shrink_to_short_side(load_image(path), 100)).transpose(2, 0, 1)
        assert image.dtype == torch.uint8 and target == index
        assert torch.equal(image, torch.from_numpy(expected.copy()))  # the same decoder: identical pixels
    assert tuple(cache[0][0].shape) == (3, 80, 120)  # small images are never enlarged
    assert tuple(cache[2][0].shape) == (3, 100, 100)  # the 300 px image shrank to a 100 px shorter side
    # ... by antialiased bicubic resampling (Pillow's own, computed here independently of the module).
    bicubic = np.asarray(load_image(jpegs[2]).resize((100, 100), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert np.abs(cache[2][0].numpy().astype(int) - bicubic.astype(int)).max() <= 1
    assert cache.pixels.is_shared()
    clone = pickle.loads(pickle.dumps(cache))  # what a spawned dataloader worker receives
    assert torch.equal(clone[1][0], cache[1][0])


@pytest.mark.parametrize("augmentation", [None, "basic"])
def test_cached_batches_match_uncached_ones(tmp_path: Path, augmentation) -> None:
    """Same evaluation batches within decoder/resampling tolerance (tensor vs PIL resize), same training shapes."""
    from mobilevit.data import basic_augmentation

    args = dict(num_classes=3, train_per_class=4, val_per_class=2, test_per_class=2, source_size=72,
                image_size=32, batch_size=6, num_workers=0)  # fmt: skip
    preset = basic_augmentation if augmentation else None
    plain = SyntheticDataModule(tmp_path, augmentation=preset, **args)
    plain.prepare_data()
    cached = SyntheticDataModule(tmp_path, augmentation=preset, cache_images=True, **args)
    assert cached.cache_short_side() == 64  # twice the training size, above the eval resize (35 px)
    plain.setup("fit")
    cached.setup("fit")
    for split in ("val", "test"):
        expected = torch.cat([images for images, _ in plain.dataloader(split)])
        got = torch.cat([images for images, _ in cached.dataloader(split)])
        assert got.shape == expected.shape
        # 72 -> 64 px cache, then the same resize to 35 and crop: measured 0.0016 (nearest-neighbour caching: 0.03)
        assert (got - expected).abs().mean() < 0.004
    images, targets = next(iter(cached.train_dataloader()))
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32 and targets.dtype == torch.int64
    assert isinstance(cached.raw_dataset("train"), DecodedImageCache)
