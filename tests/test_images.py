"""mobilevit/data/images.py: the scan decodes as the loader does, and very large JPEGs are read reduced while other
formats that large are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import damaged_png
from PIL import Image

from mobilevit.data import check_image, load_image, scan_images
from mobilevit.data.images import UnreadableImageError


def test_scan_decodes_like_the_loader(tmp_path: Path) -> None:
    """A PNG with valid chunk checksums but damaged compressed data is found by the scan (the loader fails on it)."""
    damaged_png(tmp_path / "damaged.png")
    with pytest.raises(UnreadableImageError, match="broken data stream"):
        load_image(tmp_path / "damaged.png")
    assert "broken data stream" in (check_image(tmp_path / "damaged.png") or "")
    assert list(scan_images([tmp_path / "damaged.png"], threads=1)) == [tmp_path / "damaged.png"]


def test_jpegs_above_the_decompression_bomb_limit_are_read_reduced(tmp_path: Path, monkeypatch) -> None:
    """Pillow's limit lowered to 4096 px (refusal above 8192): a 200x100 JPEG opens at 1/4 scale, within the limit, in
    the loader and the scan; a PNG that large stays refused as a decompression bomb."""
    pixels = np.random.default_rng(0).integers(0, 255, (100, 200, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "large.jpg", quality=90)
    Image.fromarray(pixels).save(tmp_path / "large.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4096)
    image = load_image(tmp_path / "large.jpg")
    assert image.size == (50, 25) and image.mode == "RGB"  # 1/2 scale would be 5000 px > 4096
    reference = Image.fromarray(pixels).resize((50, 25), Image.Resampling.BOX)
    assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference, dtype=int)).mean() < 40  # the same picture
    assert check_image(tmp_path / "large.jpg") is None
    with pytest.raises(UnreadableImageError, match="DecompressionBombError"):
        load_image(tmp_path / "large.png")
    assert "DecompressionBombError" in (check_image(tmp_path / "large.png") or "")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # even 1/8 scale (25x13 = 325 px) is above: refused
    with pytest.raises(UnreadableImageError, match="even when decoded at 1/8 scale"):
        load_image(tmp_path / "large.jpg")
