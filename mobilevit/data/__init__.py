"""Data modules, transforms, augmentation presets, multi-scale sampling and split protocols.

Data modules (all LightningDataModules sharing the arguments of ImageClassificationDataModule):
Flowers102DataModule (official or seeded stratified Oxford Flowers-102 splits), ImageFolderDataModule
(``<root>/{train,val[,test]}/<class>/*``) and SyntheticDataModule (generated shapes dataset).
``load_image`` reads every image file (upright RGB) and ``scan_images`` finds unreadable ones before training.
Augmentation presets (``none``, ``basic``, ``crop_flip_jitter``, ``crop_flip_trivialaugment``, ``strong``) are size-free: ``preset(size)`` builds an :class:`Augmentation`.
"""

from mobilevit.data.base import EVAL_SPLITS, SPLITS, ImageClassificationDataModule
from mobilevit.data.flowers102 import FLOWERS102_CLASSES, SPLIT_PROTOCOLS, Flowers102DataModule
from mobilevit.data.imagefolder import ImageFolderDataModule
from mobilevit.data.images import IMAGE_EXTENSIONS, check_image, load_image, scan_images
from mobilevit.data.sampler import MultiScaleBatchSampler, MultiScaleDataset, default_multiscale_sizes
from mobilevit.data.splits import stratified_split
from mobilevit.data.synthetic import SyntheticDataModule
from mobilevit.data.transforms import (
    Augmentation,
    AugmentationPreset,
    MixUpCutMixSettings,
    MixUpOrCutMix,
    basic_augmentation,
    eval_transform,
    no_augmentation,
    crop_flip_jitter_augmentation,
    seed_augmentation,
    strong_augmentation,
)

__all__ = [
    "EVAL_SPLITS",
    "FLOWERS102_CLASSES",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "SPLIT_PROTOCOLS",
    "Augmentation",
    "AugmentationPreset",
    "Flowers102DataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "MixUpCutMixSettings",
    "MixUpOrCutMix",
    "MultiScaleBatchSampler",
    "MultiScaleDataset",
    "SyntheticDataModule",
    "basic_augmentation",
    "check_image",
    "default_multiscale_sizes",
    "eval_transform",
    "load_image",
    "no_augmentation",
    "scan_images",
    "crop_flip_jitter_augmentation",
    "seed_augmentation",
    "stratified_split",
    "strong_augmentation",
]
