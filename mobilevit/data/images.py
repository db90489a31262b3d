"""Reading image files: the one loader that training, evaluation and prediction share, and a fast scan that
finds unreadable files before training starts."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".jfif"}
)
# Threads of the scan: Pillow releases the GIL while it decodes, so threads run in parallel.
SCAN_THREADS = min(8, os.cpu_count() or 1)


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has an image extension (case-insensitive); the contents are not read."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _flatten_high_bit_depth(image: Image.Image) -> Image.Image:
    """8-bit grayscale from 16/32-bit integer or float images, scaled instead of clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if pixels.max(initial=0.0) <= 1.0 else 255.0
    else:  # I;16* (16-bit PNG/TIFF) and I (32-bit); values beyond 255 mean a 16-bit range
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0.0) > 255 else 255.0
    return Image.fromarray(np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")


def load_image(path: str | Path) -> Image.Image:
    """``path`` decoded as an upright RGB image: EXIF orientation applied, transparency composited on white.

    Any mode Pillow decodes works: grayscale, palette (with transparency), RGBA, CMYK, 16-bit and float.
    Raises whatever Pillow raises for unreadable or corrupt files.
    """
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _flatten_high_bit_depth(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def check_image(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an image, or None when it can.

    Fast but complete: JPEGs are decoded at 1/8 scale (every byte is still read, so truncation shows), PNGs
    are verified chunk by chunk (CRCs, up to IEND), other formats are decoded in full.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (1, 1))
                image.load()
            elif image.format == "PNG":
                image.verify()
            else:
                image.load()
    except Exception as error:  # noqa: BLE001 - decoders raise many types on corrupt data
        return f"{type(error).__name__}: {error}"
    return None


def scan_images(files: Sequence[str | Path], threads: int = SCAN_THREADS) -> dict[Path, str]:
    """The unreadable files among ``files``, each with the reason (see :func:`check_image`), in input order."""
    paths = [Path(file) for file in files]
    if threads > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            reasons = list(pool.map(check_image, paths, chunksize=64))
    else:
        reasons = [check_image(path) for path in paths]
    return {path: reason for path, reason in zip(paths, reasons, strict=True) if reason is not None}


def non_image_files(folders: Iterable[Path]) -> list[Path]:
    """Visible files without an image extension anywhere under ``folders`` (sorted): the files that an image
    folder dataset leaves out."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if path.is_file() and not hidden and not is_image_file(path):
                found.append(path)
    return sorted(found)
