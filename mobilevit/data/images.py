"""Reading image files: the one loader that training, evaluation and prediction share, and a fast scan that
finds unreadable files before training starts."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, ImageOps, JpegImagePlugin

from mobilevit.errors import UserInputError

log = logging.getLogger(__name__)

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


class UnreadableImageError(OSError):
    """An image file that cannot be decoded: ``path`` and ``reason`` (the decoder's error)."""

    def __init__(self, path: str | Path, reason: str = "") -> None:  # one argument: rebuilt from its message
        super().__init__(f"{path}: {reason}" if reason else str(path))
        self.path = Path(path)
        self.reason = reason


def _jpeg_scale_within_limit(size: tuple[int, int]) -> int | None:
    """The smallest JPEG draft scale (2, 4 or 8) at which an image of ``size`` has at most Pillow's
    ``Image.MAX_IMAGE_PIXELS`` pixels; None when even 1/8 has more."""
    limit = Image.MAX_IMAGE_PIXELS or math.inf
    return next((scale for scale in (2, 4, 8) if math.ceil(size[0] / scale) * math.ceil(size[1] / scale) <= limit), None)


def _open_image(path: str | Path) -> Image.Image:
    """``Image.open(path)``; a JPEG above Pillow's decompression-bomb limit is opened reduced instead (JPEG draft
    mode decodes at 1/2, 1/4 or 1/8 scale, the smallest reduction that fits ``Image.MAX_IMAGE_PIXELS``). Other
    formats above the limit are refused (``DecompressionBombError``): the limit is Pillow's guard, kept on purpose."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        with open(path, "rb") as file:
            if file.read(3) != b"\xff\xd8\xff":  # not a JPEG: no reduced decode, the refusal stands
                raise
    image = JpegImagePlugin.JpegImageFile(str(path))  # the plugin itself: no bomb check, nothing decoded yet
    scale = _jpeg_scale_within_limit(image.size)
    if scale is None:
        image.close()
        raise Image.DecompressionBombError(
            f"{image.size[0]}x{image.size[1]} px: more than Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels even "
            "when decoded at 1/8 scale"
        )
    image.draft("RGB", (image.size[0] // scale, image.size[1] // scale))
    return image


def _decode(path: str | Path, reduced: bool = False) -> Image.Image:
    """``path`` decoded as upright RGB (see :func:`load_image`); ``reduced``: JPEGs at 1/8 scale (every byte is still
    read and entropy-decoded, so damaged data shows as it would at full scale)."""
    with _open_image(path) as opened:
        if reduced and opened.format == "JPEG":
            opened.draft("RGB", (1, 1))  # no effect on a JPEG already opened reduced: that one is decoded as loaded
        opened.load()
        image = ImageOps.exif_transpose(opened)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _flatten_high_bit_depth(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """``path`` decoded as an upright RGB image: EXIF orientation applied, transparency composited on white.

    Any mode Pillow decodes works: grayscale, palette (with transparency), RGBA, CMYK, 16-bit and float. A JPEG
    larger than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS`` x 2, about 179 megapixels) is
    read reduced (1/2, 1/4 or 1/8 scale, the smallest reduction within ``MAX_IMAGE_PIXELS``); other formats that
    large are refused. Raises :class:`UnreadableImageError` (an ``OSError``) for files that cannot be decoded.
    """
    try:
        return _decode(path)
    except Exception as error:  # noqa: BLE001 - decoders raise many types on corrupt data
        raise UnreadableImageError(path, f"{type(error).__name__}: {error}") from error


def check_image(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an image, or None when it can.

    Decodes the file as :func:`load_image` does (same opening, decoding and conversions), JPEGs at 1/8 scale.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        _decode(path, reduced=True)
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


def file_listing(files: dict[Path, str] | Iterable[Path], root: str | Path) -> str:
    """One indented line per file, relative to ``root`` where it lies under it, with its reason when ``files`` maps
    files to reasons (for the messages that list bad or left-out files)."""
    reasons = files if isinstance(files, dict) else dict.fromkeys(files, "")
    return "\n".join(f"  {_relative(path, root)}{': ' + reason if reason else ''}" for path, reason in reasons.items())


@rank_zero_only
def warn_scan_result(message: str) -> None:
    """Log what the start-up scan left out (unreadable or non-image files), once: on global rank 0 under DDP."""
    log.warning(message)


def unreadable_summary(bad: dict[Path, str], root: str | Path) -> str:
    """"N unreadable image file(s) under data.root=<root>" (the head of the messages about ``bad``)."""
    return f"{len(bad)} unreadable image file{'s' if len(bad) != 1 else ''} under data.root={root}"


def _relative(path: Path, root: str | Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def non_image_files(folders: Iterable[Path]) -> list[Path]:
    """Visible files without an image extension anywhere under ``folders`` (sorted): the files that an image
    folder dataset leaves out."""
    found = []
    for folder in folders:
        for path in walk_files(folder):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if not hidden and not is_image_file(path):
                found.append(path)
    return sorted(found)


def walk_files(folder: str | Path) -> Iterator[Path]:
    """Every file under ``folder`` the way the datasets find them (torchvision's ``ImageFolder``: ``os.walk`` with
    ``followlinks=True``, sorted): symlinked folders are followed, each real folder once (no loops)."""
    seen: set[str] = set()
    for top, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders.sort()
        for name in sorted(files):
            yield Path(top, name)


def printable_name(path: str | Path) -> str:
    """``path`` as text that any output can hold: bytes that are not UTF-8 written as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def require_utf8_names(paths: Iterable[str | Path], root: str | Path | None = None, limit: int = 10) -> None:
    """Refuse (one :class:`UserInputError` line) paths whose names are not valid UTF-8 (below ``root``, if given):
    class names and file names go into CSV, JSON, TensorBoard and plots, which hold UTF-8 text only."""
    bad = []
    for path in paths:
        name = os.path.relpath(path, root) if root is not None else str(path)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(printable_name(name))
    if bad:
        shown = ", ".join(bad[:limit]) + (f" and {len(bad) - limit} more" if len(bad) > limit else "")
        where = f" under {printable_name(root)}" if root is not None else ""
        raise UserInputError(
            f"{len(bad)} name{'s are' if len(bad) != 1 else ' is'} not valid UTF-8{where} (results are written as "
            f"UTF-8 text: CSV, JSON, TensorBoard, plots); rename {'them' if len(bad) != 1 else 'it'}: {shown}"
        )
