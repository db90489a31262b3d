"""Data modules and transforms for image classification.

Data modules (all LightningDataModules sharing the arguments of ImageClassificationDataModule):
Flowers102DataModule (official Oxford Flowers-102 splits), ImageFolderDataModule
(``<root>/{train,val[,test]}/<class>/*``) and SyntheticDataModule (generated shapes dataset).
"""

from mobilevit.data.base import EVAL_SPLITS, SPLITS, ImageClassificationDataModule
from mobilevit.data.flowers102 import FLOWERS102_CLASSES, Flowers102DataModule
from mobilevit.data.imagefolder import ImageFolderDataModule
from mobilevit.data.synthetic import SyntheticDataModule
from mobilevit.data.transforms import basic_augmentation, eval_transform, no_augmentation

__all__ = [
    "EVAL_SPLITS",
    "FLOWERS102_CLASSES",
    "SPLITS",
    "Flowers102DataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
    "basic_augmentation",
    "eval_transform",
    "no_augmentation",
]
