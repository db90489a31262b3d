"""mobilevit/data/transforms.py: single transforms (eval, none, basic), the augmentation presets (none, basic,
crop_flip_jitter, crop_flip_trivialaugment, strong), batch MixUp/CutMix, and how they reach the loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import check_image_tensor
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import default_collate

from mobilevit.data import (
    Augmentation,
    AugmentationPreset,
    MixUpCutMixSettings,
    SyntheticDataModule,
    basic_augmentation,
    eval_transform,
    no_augmentation,
    crop_flip_jitter_augmentation,
    seed_augmentation,
    strong_augmentation,
)
from mobilevit.errors import UserInputError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = {
    "none": lambda size: no_augmentation(size),
    "basic": lambda size: basic_augmentation(size),
    "crop_flip_jitter": lambda size: seed_augmentation(size),
    "strong": lambda size: strong_augmentation(size),
    "strong-randaugment": lambda size: strong_augmentation(size, auto_augment="randaugment", random_erase_prob=1.0),
    "strong-no-policy": lambda size: strong_augmentation(size, auto_augment="none"),
}


def _preset_from_yaml(name: str, image_size: int, **overrides) -> Augmentation:
    preset = OmegaConf.load(CONFIGS / "augmentation" / f"{name}.yaml")
    preset.merge_with(overrides)
    root = OmegaConf.create({"data": {"image_size": image_size, "crop_pct": 0.9}, "augmentation": preset})
    return instantiate(root.augmentation)(image_size)


def _check(x: torch.Tensor, size: int) -> None:
    assert type(x) is torch.Tensor and x.shape == (3, size, size) and x.dtype == torch.float32
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_output_shape_dtype_range(name: str) -> None:
    torch.manual_seed(0)
    preset = PRESETS[name](32)
    assert isinstance(preset, Augmentation)
    images = [
        Image.new("RGB", (80, 50), (255, 0, 0)),
        Image.new("L", (50, 80), 128),
        Image.new("RGBA", (60, 60), (0, 0, 255, 100)),
        torch.randint(0, 256, (3, 40, 70), dtype=torch.uint8),
        torch.randint(0, 256, (1, 50, 50), dtype=torch.uint8),
    ]
    for image in images:
        for _ in range(3):
            _check(preset(image), 32)
        _check(PRESETS[name](48)(image), 48)  # multi-scale builds the same recipe at another size


def test_yaml_presets_match_the_recipes() -> None:
    assert _preset_from_yaml("none", 32).batch is None and _preset_from_yaml("basic", 32).batch is None
    seed = _preset_from_yaml("crop_flip_jitter", 32).image
    names = [type(t).__name__ for t in seed.transforms]
    expected = ["RGB", "RandomResize", "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "ColorJitter"]
    assert names[:6] == expected
    resize, jitter = seed.transforms[1], seed.transforms[5]
    assert (resize.min_size, resize.max_size) == (32, 41)  # shorter side in [32, 40] = [1, 1.25] x 32
    assert jitter.brightness == (0.9, 1.1) and jitter.contrast == (0.9, 1.1)
    assert jitter.saturation == (0.95, 1.05) and jitter.hue == (-0.05, 0.05)

    strong = _preset_from_yaml("strong", 32)
    names = [type(t).__name__ for t in strong.image.transforms]
    order = [names.index(name) for name in ("ToImage", "TrivialAugmentWide", "ToDtype", "RandomErasing")]
    assert order == sorted(order)  # the policy on uint8, erasing on floats
    erasing = strong.image.transforms[names.index("RandomErasing")]
    assert erasing.p == 0.25
    mix = strong.batch(7)
    assert [type(op).__name__ for op in mix.mix.transforms] == ["MixUp", "CutMix"] and mix.mix.p == [0.5, 0.5]
    assert [op.alpha for op in mix.mix.transforms] == [0.2, 1.0] and mix.prob == 1.0 and mix.num_classes == 7
    randaugment = _preset_from_yaml("strong", 32, auto_augment="randaugment", randaugment_num_ops=3,
                                    randaugment_magnitude=5)  # fmt: skip
    (policy,) = [t for t in randaugment.image.transforms if type(t).__name__ == "RandAugment"]
    assert policy.num_ops == 3 and policy.magnitude == 5


def test_seed_rescale_range() -> None:
    """A centred white square grows by the random rescale factor, which spans [1, 1.25]."""
    torch.manual_seed(0)
    size, side = 64, 16
    image = Image.new("L", (size, size), 0)
    image.paste(255, ((size - side) // 2, (size - side) // 2, (size + side) // 2, (size + side) // 2))
    preset = seed_augmentation(size, hflip_prob=0.0, vflip_prob=0.0)
    factors = []
    for _ in range(60):
        out = preset(image)
        factors.append(((out[0] > 0.5).sum().item() ** 0.5) / side)  # side of the square after scaling
    assert 0.95 <= min(factors) < 1.06 and 1.18 < max(factors) <= 1.3, (min(factors), max(factors))
    identity = seed_augmentation(size, rescale=(1.0, 1.0), hflip_prob=0.0, vflip_prob=0.0, brightness=0.0,
                                 contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)  # fmt: skip
    torch.testing.assert_close(identity(image), eval_transform(size, crop_pct=1.0)(image))


def test_seed_flips_vary() -> None:
    """A white top-left quadrant ends up in every corner: horizontal and vertical flips both happen."""
    torch.manual_seed(0)
    image = Image.new("L", (64, 64), 0)
    image.paste(255, (0, 0, 32, 32))
    preset = seed_augmentation(64)
    corners = set()
    for _ in range(40):
        out = preset(image)[0]
        bright = {name: out[rows, cols].mean() > 0.5 for name, rows, cols in (
            ("top-left", slice(0, 8), slice(0, 8)), ("top-right", slice(0, 8), slice(-8, None)),
            ("bottom-left", slice(-8, None), slice(0, 8)), ("bottom-right", slice(-8, None), slice(-8, None)),
        )}  # fmt: skip
        assert sum(bright.values()) == 1
        corners |= {name for name, is_bright in bright.items() if is_bright}
    assert corners == {"top-left", "top-right", "bottom-left", "bottom-right"}
    no_flips = seed_augmentation(64, hflip_prob=0.0, vflip_prob=0.0)
    assert all(no_flips(image)[0, :8, :8].mean() > 0.5 for _ in range(10))


def test_seed_colour_jitter_within_bounds() -> None:
    torch.manual_seed(0)
    gray = Image.new("RGB", (40, 40), (128, 128, 128))
    means = torch.stack([seed_augmentation(32)(gray).mean() for _ in range(30)])
    assert means.std() > 0.005  # brightness changes the image ...
    # ... by a brightness factor in [0.9, 1.1]
    assert means.min() >= 0.9 * 128 / 255 - 0.01 and means.max() <= 1.1 * 128 / 255 + 0.01
    red = Image.new("RGB", (40, 40), (200, 40, 40))
    hues = {tuple((seed_augmentation(32)(red)[:, 0, 0] * 255).round().tolist()) for _ in range(10)}
    assert len(hues) > 5


def test_strong_random_erasing_and_policies_vary() -> None:
    torch.manual_seed(0)
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    erase = strong_augmentation(32, auto_augment="none", scale=(1.0, 1.0), ratio=(1.0, 1.0), random_erase_prob=1.0)
    assert all((erase(white) == 0).any() for _ in range(5))  # an erased (black) rectangle every time
    keep = strong_augmentation(32, auto_augment="none", scale=(1.0, 1.0), ratio=(1.0, 1.0), random_erase_prob=0.0)
    assert all((keep(white) == 1).all() for _ in range(5))
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    for policy in ("trivialaugment", "randaugment"):
        preset = strong_augmentation(32, auto_augment=policy, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                     hflip_prob=0.0, random_erase_prob=0.0)  # fmt: skip
        outputs = torch.stack([preset(image) for _ in range(12)])
        assert (outputs != outputs[0]).flatten(1).any(1).sum() >= 6, policy  # the policy changes most images


def test_mixup_cutmix_soft_targets() -> None:
    torch.manual_seed(0)
    images, targets = torch.rand(8, 3, 16, 16), torch.arange(8) % 5
    for settings in (MixUpCutMixSettings(), MixUpCutMixSettings(cutmix_alpha=0.0), MixUpCutMixSettings(mixup_alpha=0.0, cutmix_prob=1.0)):
        mixed_any = False
        for _ in range(5):
            out_images, soft = settings(5)(images, targets)
            assert out_images.shape == images.shape and soft.shape == (8, 5) and soft.dtype == torch.float32
            torch.testing.assert_close(soft.sum(1), torch.ones(8))
            mixed_any |= bool((soft.max(1).values < 1).any())
        assert mixed_any
    # prob 0: never mixed, but still probabilities (one-hot), so every batch has the same target type.
    out_images, soft = MixUpCutMixSettings(prob=0.0)(5)(images, targets)
    assert torch.equal(out_images, images) and torch.equal(soft.argmax(1), targets) and soft.max() == 1


def test_a_preset_that_never_mixes_has_no_batch_transform() -> None:
    """mix_prob 0 (or no method left) builds no batch transform: the collate does not one-hot encode every batch."""
    assert MixUpCutMixSettings().mixes and MixUpCutMixSettings(cutmix_alpha=0.0).mixes
    assert not MixUpCutMixSettings(prob=0.0).mixes
    assert not MixUpCutMixSettings(mixup_alpha=0.0, cutmix_alpha=0.0).mixes
    assert not MixUpCutMixSettings(mixup_alpha=0.0, cutmix_prob=0.0).mixes  # CutMix only, never chosen
    assert strong_augmentation(32).batch is not None and strong_augmentation(32, mix_prob=0.0).batch is None
    assert _preset_from_yaml("crop_flip_trivialaugment", 32).batch is None


def test_deprecated_preset_name_is_the_renamed_function() -> None:
    assert seed_augmentation is crop_flip_jitter_augmentation


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: strong_augmentation(32, auto_augment="autoaugment"), "augmentation.auto_augment"),
        (lambda: strong_augmentation(32, random_erase_prob=1.5), "augmentation.random_erase_prob"),
        (lambda: strong_augmentation(32, mixup_alpha=-1.0), "augmentation.mixup_alpha"),
        (lambda: strong_augmentation(32, cutmix_prob=2.0), "augmentation.cutmix_prob"),
        (lambda: strong_augmentation(32, mix_prob=-0.1), "augmentation.mix_prob"),
        (lambda: seed_augmentation(32, rescale=(0.8, 1.2)), "augmentation.rescale"),
        (lambda: seed_augmentation(32, vflip_prob=3), "augmentation.vflip_prob"),
        (lambda: seed_augmentation(32, hue=0.7), "augmentation.hue"),
        (lambda: seed_augmentation(32, contrast=(1.2, 0.9)), "augmentation.contrast"),
        (lambda: basic_augmentation(32, ratio=(2.0, 1.0)), "augmentation.ratio"),
    ],
)
def test_bad_settings_name_the_config_key(make, key: str) -> None:
    with pytest.raises(UserInputError, match=key.replace(".", r"\.")):
        make()


# ----------------------------------------------------------------------------- single transforms


def _pil_images() -> dict[str, Image.Image]:
    return {
        "RGB": Image.new("RGB", (80, 50), (255, 0, 0)),
        "L": Image.new("L", (50, 80), 128),
        "RGBA": Image.new("RGBA", (60, 60), (0, 0, 255, 100)),
        "CMYK": Image.new("CMYK", (40, 70), (0, 255, 0, 0)),
        "P": Image.new("RGB", (45, 45), (0, 200, 0)).convert("P"),
    }


@pytest.mark.parametrize(
    "make_transform",
    [
        lambda: eval_transform(32),
        lambda: no_augmentation(32, crop_pct=0.875),
        lambda: basic_augmentation(32),
        lambda: basic_augmentation(32, scale=[0.5, 1.0], hflip_prob=1.0),
        lambda: seed_augmentation(32),
        lambda: strong_augmentation(32),
        lambda: strong_augmentation(32, auto_augment="randaugment", random_erase_prob=1.0),
    ],
    ids=["eval", "none", "basic", "basic-custom", "seed", "strong", "strong-randaugment"],
)
def test_transforms_shape_dtype_range(make_transform) -> None:
    transform = make_transform()
    for image in _pil_images().values():
        out = transform(image)
        check_image_tensor(out, 32)
    # uint8 tensors, RGB and single channel
    check_image_tensor(transform(torch.randint(0, 256, (3, 40, 70), dtype=torch.uint8)), 32)
    check_image_tensor(transform(torch.randint(0, 256, (1, 50, 50), dtype=torch.uint8)), 32)


def test_eval_transform_resizes_then_center_crops() -> None:
    # Left half black, right half white: center crop of a wide image must contain both.
    image = Image.new("L", (200, 100), 0)
    image.paste(255, (100, 0, 200, 100))
    out = eval_transform(64, crop_pct=0.5)(image)  # resize shorter side to 128, crop 64
    assert out[:, :, :20].max() < 0.05 and out[:, :, -20:].min() > 0.95
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])  # gray -> RGB copies
    # Deterministic, and identical to the `none` preset.
    torch.testing.assert_close(out, no_augmentation(64, crop_pct=0.5)(image))


def test_basic_augmentation_flips() -> None:
    image = Image.new("L", (64, 64), 0)
    image.paste(255, (0, 0, 32, 64))  # white left half
    flipped = basic_augmentation(64, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=1.0)(image)
    assert flipped[:, :, :30].max() < 0.05 and flipped[:, :, -30:].min() > 0.95


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": 32, "scale": (0.9, 0.1)}, "augmentation.scale"),
        ({"image_size": 32, "hflip_prob": 2.0}, "augmentation.hflip_prob"),
    ],
)
def test_basic_augmentation_rejects_bad_args(kwargs, text) -> None:
    with pytest.raises(UserInputError, match=text):
        basic_augmentation(**kwargs)


def test_eval_transform_rejects_bad_crop_pct() -> None:
    with pytest.raises(UserInputError, match="crop_pct"):
        eval_transform(32, crop_pct=1.5)


# ----------------------------------------------------------------------------- through the data module


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("augmentation") / "synthetic"
    _datamodule(root, None).prepare_data()
    return root


def _datamodule(root: Path, augmentation: AugmentationPreset | None, **kwargs) -> SyntheticDataModule:
    args = dict(num_classes=4, train_per_class=6, val_per_class=3, test_per_class=3, source_size=40)
    args.update(image_size=32, batch_size=8, num_workers=0)
    return SyntheticDataModule(root, augmentation=augmentation, **{**args, **kwargs})


def test_strong_gives_soft_targets_through_train_dataloader(synthetic_root: Path) -> None:
    torch.manual_seed(0)
    dm = _datamodule(synthetic_root, strong_augmentation)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for images, targets in batches:
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
        assert targets.shape == (8, 4) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(8))
    assert any((targets.max(1).values < 0.999).any() for _, targets in batches)  # mixed, not one-hot
    # Without a batch transform the targets stay class indices.
    _, targets = next(iter(_datamodule(synthetic_root, seed_augmentation).train_dataloader()))
    assert targets.dtype == torch.int64 and targets.shape == (8,)


@pytest.mark.parametrize("name", ["none", "basic", "crop_flip_jitter", "strong"])
def test_val_and_test_loaders_are_never_augmented(synthetic_root: Path, name: str) -> None:
    dm = _datamodule(synthetic_root, PRESETS[name], split="val")
    dm.setup()
    plain = eval_transform(32, crop_pct=dm.crop_pct)
    for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.dataloader("test")):
        dataset = loader.dataset
        expected = default_collate([(plain(Image.open(path)), label) for path, label in dataset.samples])
        for _ in range(2):  # deterministic: the same tensors on every pass
            batches = list(loader)
            images = torch.cat([x for x, _ in batches])
            targets = torch.cat([y for _, y in batches])
            assert targets.dtype == torch.int64
            torch.testing.assert_close(images, expected[0])
            assert torch.equal(targets, expected[1])
