"""Image transforms and training augmentation presets built from ``torchvision.transforms.v2``.

Every per-image transform takes a PIL image (any mode: grayscale, RGBA, CMYK, palette ... is
converted to RGB) or a uint8 tensor (C, H, W) with 1 or 3 channels, and returns a plain float32
tensor (3, S, S) with values in [0, 1]. There is no mean/std normalisation: the MobileViT
reference pipeline feeds [0, 1] images to the network.

Geometric and colour ops run before the conversion to float, so on uint8 / PIL data bicubic
overshoot is clamped and the output stays in [0, 1].

Each ``configs/augmentation/*.yaml`` is a size-free preset: a partial of one of the preset functions
below (``none``, ``basic``, ``crop_flip_jitter``, ``strong``; ``crop_flip_trivialaugment`` is ``strong`` with its options) with its options bound. The data module, which owns
every image size, calls it per size (``preset(image_size) -> Augmentation``), as torchvision's reference
``ClassificationPresetTrain(crop_size=...)`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2

from mobilevit.errors import UserInputError, require_int

__all__ = [
    "AUTO_AUGMENT",
    "Augmentation",
    "AugmentationPreset",
    "BatchTransform",
    "BatchTransformCollate",
    "ImageTransform",
    "MixUpCutMixSettings",
    "MixUpOrCutMix",
    "Preprocessing",
    "basic_augmentation",
    "check_augmentation_preset",
    "eval_resize_size",
    "eval_transform",
    "no_augmentation",
    "crop_flip_jitter_augmentation",
    "seed_augmentation",
    "strong_augmentation",
]

ImageTransform = Callable[[Any], torch.Tensor]
# (images (B, 3, H, W) float, targets (B,) int64) -> (images, targets (B, num_classes) float probabilities)
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}
AUTO_AUGMENT: tuple[str, ...] = ("trivialaugment", "randaugment", "none")  # augmentation.auto_augment


MIN_IMAGE_SIZE = 32  # the networks' output stride: smaller images have no 1x1 last feature map

# ----------------------------------------------------------------------------- argument checks


def check_image_size(image_size: int, key: str = "data.image_size", why: str = " (MobileViT downsamples by 32)") -> int:
    """``image_size`` if it is an integer >= 32 (pixels), else a UserInputError naming config ``key``."""
    return require_int(image_size, key, MIN_IMAGE_SIZE, why=why)


def _interpolation(name: str) -> v2.InterpolationMode:
    try:
        return _INTERPOLATIONS[name]
    except KeyError:
        raise UserInputError(
            f"Unknown interpolation {name!r}; valid choices: {sorted(_INTERPOLATIONS)}."
        ) from None


def _probability(value: float, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UserInputError(f"{key} must be a number in [0, 1], got {value!r}.")
    return float(value)


def _non_negative(value: float, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0.0:
        raise UserInputError(f"{key} must be a number >= 0, got {value!r}.")
    return float(value)


def _range(
    values: Sequence[float], key: str, low: float, high: float, include_low: bool = False
) -> tuple[float, float]:
    """``values`` as a (min, max) pair with ``low < min <= max <= high`` (``low <= min`` if include_low)."""
    try:
        pair = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        pair = ()
    above_low = len(pair) == 2 and (pair[0] >= low if include_low else pair[0] > low)
    if not above_low or not pair[0] <= pair[1] <= high:
        bound = f"{low} <= min" if include_low else f"{low} < min"
        raise UserInputError(f"{key} must be [min, max] with {bound} <= max <= {high}, got {values!r}.")
    return pair  # type: ignore[return-value]


def _to_float_tensor() -> list[v2.Transform]:
    # uint8 -> float32 in [0, 1]; ToPureTensor drops the tv_tensors.Image subclass.
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]


# ----------------------------------------------------------------------------- per-image transforms


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
    check_image_size(image_size)
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


@dataclass(frozen=True)
class Preprocessing:
    """How a network's input was prepared when its weights were trained, and so how to evaluate it.

    Like timm's ``pretrained_cfg`` and the transforms of torchvision's ``Weights``: the evaluation side length
    ``image_size`` (px), the resize ratio ``crop_pct`` (shorter side to ``image_size / crop_pct``, then center
    crop), the resize ``interpolation``, per-channel ``mean``/``std`` applied to [0, 1] values (MobileViT: none,
    i.e. 0 and 1), and the ``channel_order`` ("RGB" or "BGR") the weights were trained on. Weights trained on
    BGR have the flip folded into their stem when loaded, so the built network always takes RGB.
    """

    image_size: int = 256
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"

    @classmethod
    def from_data_config(cls, data_cfg: dict[str, Any]) -> Preprocessing:
        """The evaluation preprocessing of a run's ``data`` config (``eval_image_size``, else ``image_size``); the
        data modules resize with :func:`eval_transform`'s default interpolation, so this does too."""
        return cls(
            image_size=int(data_cfg.get("eval_image_size") or data_cfg["image_size"]),
            crop_pct=float(data_cfg.get("crop_pct", 0.9)),
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict` (as stored in checkpoints); unknown keys are ignored."""
        known = {key: values[key] for key in cls.__dataclass_fields__ if key in values}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only, so that ``torch.load(weights_only=True)`` reads it back."""
        return {**self.__dict__, "mean": list(self.mean), "std": list(self.std)}

    def eval_transform(self) -> v2.Compose:
        """The deterministic evaluation transform: PIL image or uint8 tensor → float32 (3, S, S), RGB."""
        transform = eval_transform(self.image_size, self.crop_pct, self.interpolation)
        if self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0):
            transform = v2.Compose([*transform.transforms, v2.Normalize(list(self.mean), list(self.std))])
        return transform


def _random_resized_crop(
    image_size: int, scale: Sequence[float], ratio: Sequence[float], interpolation: str
) -> v2.RandomResizedCrop:
    return v2.RandomResizedCrop(
        image_size,
        scale=_range(scale, "augmentation.scale", 0.0, 1.0),
        ratio=_range(ratio, "augmentation.ratio", 0.0, math.inf),
        interpolation=_interpolation(interpolation),
        antialias=True,
    )


# ----------------------------------------------------------------------------- batch transforms


class MixUpOrCutMix:
    """Batch transform: with probability ``prob`` mixes the batch with MixUp or CutMix (picked at random
    per batch, CutMix with probability ``cutmix_prob``); otherwise one-hot encodes the targets. Either
    way the targets come out as float probabilities (B, num_classes), so every batch has the same type."""

    def __init__(
        self, num_classes: int, mixup_alpha: float, cutmix_alpha: float, prob: float, cutmix_prob: float
    ) -> None:
        self.num_classes = num_classes
        self.prob = prob
        choices = []
        if mixup_alpha > 0:
            choices.append((v2.MixUp(alpha=mixup_alpha, num_classes=num_classes), 1.0 - cutmix_prob))
        if cutmix_alpha > 0:
            choices.append((v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes), cutmix_prob))
        choices = [(op, weight) for op, weight in choices if weight > 0]
        self.mix: Callable | None
        if len(choices) > 1:
            self.mix = v2.RandomChoice([op for op, _ in choices], p=[weight for _, weight in choices])
        else:
            self.mix = choices[0][0] if choices else None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is not None and self.prob > 0 and torch.rand(()).item() < self.prob:
            return self.mix(images, targets)
        return images, torch.nn.functional.one_hot(targets, self.num_classes).to(images.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, prob={self.prob}, mix={self.mix})"


@dataclass(frozen=True)
class MixUpCutMixSettings:
    """Settings of batch-level MixUp / CutMix; calling it with the class count builds the batch
    transform (:class:`MixUpOrCutMix`). An alpha of 0 disables that method.

    Args:
        mixup_alpha: MixUp's Beta(alpha, alpha) parameter (v2 paper: 0.2).
        cutmix_alpha: CutMix's Beta(alpha, alpha) parameter (v2 paper: 1.0).
        prob: probability that a batch is mixed at all.
        cutmix_prob: probability of CutMix (instead of MixUp) when both are enabled.
    """

    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    cutmix_prob: float = 0.5

    def __post_init__(self) -> None:
        _non_negative(self.mixup_alpha, "augmentation.mixup_alpha")
        _non_negative(self.cutmix_alpha, "augmentation.cutmix_alpha")
        _probability(self.prob, "augmentation.mix_prob")
        _probability(self.cutmix_prob, "augmentation.cutmix_prob")

    @property
    def mixes(self) -> bool:
        """Whether any batch can be mixed: a probability above 0 and a method with an alpha above 0 and a weight."""
        methods = (self.mixup_alpha > 0 and self.cutmix_prob < 1) or (self.cutmix_alpha > 0 and self.cutmix_prob > 0)
        return self.prob > 0 and bool(methods)

    def __call__(self, num_classes: int) -> MixUpOrCutMix:
        return MixUpOrCutMix(num_classes, self.mixup_alpha, self.cutmix_alpha, self.prob, self.cutmix_prob)


class BatchTransformCollate:
    """``collate_fn`` that stacks the samples (``default_collate``), then applies a batch transform."""

    def __init__(self, transform: BatchTransform) -> None:
        self.transform = transform

    def __call__(self, samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = default_collate(samples)
        return self.transform(images, targets)


# ----------------------------------------------------------------------------- presets


class Augmentation:
    """A training augmentation preset built for one image size: what ``preset(image_size)`` returns.

    Attributes:
        image: per-sample transform, image -> float32 (3, image_size, image_size) in [0, 1].
        batch: optional factory ``num_classes -> batch transform``. The data module binds its class
            count and applies the result to every collated training batch ``(images, targets)``,
            which turns int64 targets (B,) into float probabilities (B, num_classes) (MixUp/CutMix).

    Calling it applies ``image``, so it also works wherever a plain transform is expected.
    """

    __slots__ = ("batch", "image")

    def __init__(self, image: ImageTransform, batch: Callable[[int], BatchTransform] | None = None) -> None:
        self.image = image
        self.batch = batch

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image={self.image!r}, batch={self.batch!r})"

    def __call__(self, image: Any) -> torch.Tensor:
        return self.image(image)


# A size-free preset: ``configs/augmentation/*.yaml`` (``_partial_: true``) with its options bound.
AugmentationPreset = Callable[[int], Augmentation]


def check_augmentation_preset(preset: Any, image_size: int) -> Augmentation:
    """``preset(image_size)``, refusing anything that is not a configs/augmentation preset with one line.

    Building it once also checks the preset's options, before any dataloader worker starts.
    """
    built = preset(image_size) if callable(preset) and not isinstance(preset, Augmentation) else None
    if not isinstance(built, Augmentation):
        raise UserInputError(
            "augmentation must be a configs/augmentation preset (a partial of a preset function in "
            f"mobilevit.data.transforms returning an Augmentation), got {type(preset).__name__}."
        )
    return built


def augmentation_image(preset: AugmentationPreset, size: int) -> ImageTransform:
    """The per-sample transform of ``preset`` at ``size`` (picklable as a partial, for dataloader workers)."""
    return preset(size).image


def no_augmentation(image_size: int, crop_pct: float = 0.9) -> Augmentation:
    """The ``none`` preset: training images get the evaluation transform (resize + center crop)."""
    return Augmentation(image=eval_transform(image_size, crop_pct))


def basic_augmentation(
    image_size: int,
    scale: Sequence[float] = (0.08, 1.0),
    hflip_prob: float = 0.5,
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
) -> Augmentation:
    """The ``basic`` preset, the MobileViT v1 paper's recipe: random resized crop + horizontal flip.

    Args:
        image_size: output side length in pixels.
        scale: range of the crop area as a fraction of the image area.
        hflip_prob: probability of a horizontal flip.
        ratio: range of the crop aspect ratio.
        interpolation: resampling used to resize the crop ("bilinear", "bicubic" or "nearest").
    """
    check_image_size(image_size)
    image = v2.Compose(
        [
            v2.RGB(),
            _random_resized_crop(image_size, scale, ratio, interpolation),
            v2.RandomHorizontalFlip(p=_probability(hflip_prob, "augmentation.hflip_prob")),
            *_to_float_tensor(),
        ]
    )
    return Augmentation(image=image)


def crop_flip_jitter_augmentation(
    image_size: int,
    rescale: Sequence[float] = (1.0, 1.25),
    hflip_prob: float = 0.5,
    vflip_prob: float = 0.5,
    brightness: float = 0.1,
    contrast: Sequence[float] = (0.9, 1.1),
    saturation: Sequence[float] = (0.95, 1.05),
    hue: float = 0.05,
    interpolation: str = "bilinear",
) -> Augmentation:
    """The ``crop_flip_jitter`` preset, the original Keras experiment's recipe.

    Args:
        image_size: output side length in pixels.
        rescale: the shorter side is resized to a random ``[min, max] x image_size`` (min >= 1), then a
            random ``image_size`` square is cropped.
        hflip_prob, vflip_prob: probabilities of a horizontal / vertical flip.
        brightness: brightness factor drawn from ``[1 - brightness, 1 + brightness]``.
        contrast, saturation: ranges of the contrast / saturation factors.
        hue: hue shift drawn from ``[-hue, hue]`` (fraction of the hue circle, <= 0.5).
        interpolation: resampling of the rescale.
    """
    check_image_size(image_size)
    low, high = _range(rescale, "augmentation.rescale", 1.0, 4.0, include_low=True)
    if not 0.0 <= float(hue) <= 0.5:
        raise UserInputError(f"augmentation.hue must be in [0, 0.5], got {hue!r}.")
    image = v2.Compose(
        [
            v2.RGB(),
            # Shorter side to a random integer in [low, high] x image_size (max_size is exclusive).
            v2.RandomResize(
                math.ceil(low * image_size),
                math.floor(high * image_size) + 1,
                interpolation=_interpolation(interpolation),
                antialias=True,
            ),
            v2.RandomCrop(image_size),
            v2.RandomHorizontalFlip(p=_probability(hflip_prob, "augmentation.hflip_prob")),
            v2.RandomVerticalFlip(p=_probability(vflip_prob, "augmentation.vflip_prob")),
            v2.ColorJitter(
                brightness=_non_negative(brightness, "augmentation.brightness"),
                contrast=_range(contrast, "augmentation.contrast", 0.0, math.inf, include_low=True),
                saturation=_range(saturation, "augmentation.saturation", 0.0, math.inf, include_low=True),
                hue=float(hue),
            ),
            *_to_float_tensor(),
        ]
    )
    return Augmentation(image=image)


# Deprecated name of crop_flip_jitter_augmentation (configs written before the rename); removed in 0.2.0.
seed_augmentation = crop_flip_jitter_augmentation


def strong_augmentation(
    image_size: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    hflip_prob: float = 0.5,
    interpolation: str = "bilinear",
    auto_augment: str = "trivialaugment",
    randaugment_num_ops: int = 2,
    randaugment_magnitude: int = 9,
    random_erase_prob: float = 0.25,
    mixup_alpha: float = 0.2,
    cutmix_alpha: float = 1.0,
    mix_prob: float = 1.0,
    cutmix_prob: float = 0.5,
) -> Augmentation:
    """The ``strong`` preset, the MobileViT v2 paper's recipe.

    Per image: random resized crop, horizontal flip, ``auto_augment`` ("trivialaugment":
    TrivialAugmentWide, "randaugment": RandAugment(randaugment_num_ops, randaugment_magnitude), or
    "none") on uint8, then RandomErasing with probability ``random_erase_prob`` on the float tensor.
    Per training batch: MixUp (``mixup_alpha``) or CutMix (``cutmix_alpha``), see :class:`MixUpCutMixSettings`
    (``mix_prob`` is its ``prob``).
    """
    check_image_size(image_size)
    mode = _interpolation(interpolation)
    if auto_augment == "trivialaugment":
        policy = [v2.TrivialAugmentWide(interpolation=mode)]
    elif auto_augment == "randaugment":
        policy = [v2.RandAugment(num_ops=int(randaugment_num_ops), magnitude=int(randaugment_magnitude), interpolation=mode)]
    elif auto_augment in ("none", None):
        policy = []
    else:
        raise UserInputError(f"augmentation.auto_augment must be one of {list(AUTO_AUGMENT)}, got {auto_augment!r}.")
    image = v2.Compose(
        [
            v2.RGB(),
            _random_resized_crop(image_size, scale, ratio, interpolation),
            v2.RandomHorizontalFlip(p=_probability(hflip_prob, "augmentation.hflip_prob")),
            v2.ToImage(),  # uint8 tensor: the auto-augment policies are defined on [0, 255]
            *policy,
            v2.ToDtype(torch.float32, scale=True),
            # Erased pixels become 0 (black), so the output stays in [0, 1].
            v2.RandomErasing(p=_probability(random_erase_prob, "augmentation.random_erase_prob"), value=0.0),
            v2.ToPureTensor(),
        ]
    )
    mixing = MixUpCutMixSettings(mixup_alpha, cutmix_alpha, mix_prob, cutmix_prob)
    # No batch is ever mixed: no batch transform, so the targets stay class indices (no one-hot collate).
    return Augmentation(image=image, batch=mixing if mixing.mixes else None)
