"""Image transforms built from ``torchvision.transforms.v2``.

Every transform takes a PIL image (any mode: grayscale, RGBA, CMYK, palette ... is converted
to RGB) or a uint8 tensor (C, H, W) with 1 or 3 channels, and returns a plain float32 tensor
(3, image_size, image_size) with values in [0, 1]. There is no mean/std normalisation: the
MobileViT reference pipeline feeds [0, 1] images to the network.

Geometric ops run before the conversion to float, so on uint8 / PIL data bicubic overshoot
is clamped and the output stays in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from mobilevit.errors import UserInputError

__all__ = ["basic_augmentation", "eval_resize_size", "eval_transform", "no_augmentation"]

_INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}


def _check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UserInputError(f"image_size must be a positive integer (pixels), got {image_size!r}.")
    return image_size


def _interpolation(name: str) -> v2.InterpolationMode:
    try:
        return _INTERPOLATIONS[name]
    except KeyError:
        raise UserInputError(
            f"Unknown interpolation {name!r}; valid choices: {sorted(_INTERPOLATIONS)}."
        ) from None


def _to_float_tensor() -> list[v2.Transform]:
    # uint8 -> float32 in [0, 1]; ToPureTensor drops the tv_tensors.Image subclass.
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]


def eval_resize_size(image_size: int, crop_pct: float = 0.9) -> int:
    """Shorter-side size the evaluation transform resizes to before its center crop."""
    return int(math.floor(image_size / crop_pct))


def eval_transform(
    image_size: int, crop_pct: float = 0.9, interpolation: str = "bicubic"
) -> v2.Compose:
    """Deterministic evaluation transform.

    Resizes the shorter side to ``floor(image_size / crop_pct)`` (antialiased), center-crops
    ``image_size`` x ``image_size`` and converts to float32 in [0, 1].
    """
    _check_image_size(image_size)
    if not 0.0 < float(crop_pct) <= 1.0:
        raise UserInputError(f"crop_pct must be in (0, 1] (e.g. data.crop_pct=0.9), got {crop_pct!r}.")
    return v2.Compose(
        [
            v2.RGB(),
            v2.Resize(
                eval_resize_size(image_size, float(crop_pct)),
                interpolation=_interpolation(interpolation),
                antialias=True,
            ),
            v2.CenterCrop(image_size),
            *_to_float_tensor(),
        ]
    )


def no_augmentation(image_size: int, crop_pct: float = 0.9) -> v2.Compose:
    """The ``none`` augmentation preset: training images get the evaluation transform."""
    return eval_transform(image_size, crop_pct)


def basic_augmentation(
    image_size: int,
    scale: Sequence[float] = (0.08, 1.0),
    hflip_prob: float = 0.5,
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
) -> v2.Compose:
    """The MobileViT v1 paper's training recipe: random resized crop + random horizontal flip.

    Args:
        image_size: output side length in pixels.
        scale: range of the crop area as a fraction of the image area.
        hflip_prob: probability of a horizontal flip.
        ratio: range of the crop aspect ratio.
        interpolation: resampling used to resize the crop ("bilinear", "bicubic" or "nearest").
    """
    _check_image_size(image_size)
    scale_range = tuple(float(s) for s in scale)
    if len(scale_range) != 2 or not 0.0 < scale_range[0] <= scale_range[1] <= 1.0:
        raise UserInputError(
            f"augmentation.scale must be [min, max] with 0 < min <= max <= 1, got {list(scale)!r}."
        )
    ratio_range = tuple(float(r) for r in ratio)
    if len(ratio_range) != 2 or not 0.0 < ratio_range[0] <= ratio_range[1]:
        raise UserInputError(
            f"augmentation.ratio must be [min, max] with 0 < min <= max, got {list(ratio)!r}."
        )
    if not 0.0 <= float(hflip_prob) <= 1.0:
        raise UserInputError(f"augmentation.hflip_prob must be in [0, 1], got {hflip_prob!r}.")
    return v2.Compose(
        [
            v2.RGB(),
            v2.RandomResizedCrop(
                image_size,
                scale=scale_range,
                ratio=ratio_range,
                interpolation=_interpolation(interpolation),
                antialias=True,
            ),
            v2.RandomHorizontalFlip(p=float(hflip_prob)),
            *_to_float_tensor(),
        ]
    )
