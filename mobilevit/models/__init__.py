"""The MobileViT model zoo: v1 (XXS, XS, S) and v2 (widths 0.5-2.0), written from scratch."""

from mobilevit.models.base import MobileViTClassifier
from mobilevit.models.fuse import fuse_batchnorm
from mobilevit.models.mobilevit_v1 import MobileViT, MobileViTBlock
from mobilevit.models.mobilevit_v2 import MobileViTv2, MobileViTv2Block
from mobilevit.models.pretrained import convert_timm_state_dict, load_pretrained, model_from_checkpoint
from mobilevit.models.registry import create_model, list_models

__all__ = [
    "MobileViT",
    "MobileViTBlock",
    "MobileViTClassifier",
    "MobileViTv2",
    "MobileViTv2Block",
    "convert_timm_state_dict",
    "create_model",
    "fuse_batchnorm",
    "list_models",
    "load_pretrained",
    "model_from_checkpoint",
]
