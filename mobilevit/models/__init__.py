"""The MobileViT model zoo: v1 (XXS, XS, S) and v2 (widths 0.5-2.0), written from scratch."""

from mobilevit.models.base import MobileViTClassifier
from mobilevit.models.factory import create_model
from mobilevit.models.fuse import fuse_batchnorm
from mobilevit.models.layouts import detect_layout, to_our_layout
from mobilevit.models.mobilevit_v1 import MobileViT, MobileViTBlock
from mobilevit.models.mobilevit_v2 import MobileViTv2, MobileViTv2Block
from mobilevit.models.pretrained import Weights, load_pretrained, read_weights
from mobilevit.models.registry import build_model, list_models

__all__ = [
    "MobileViT",
    "MobileViTBlock",
    "MobileViTClassifier",
    "MobileViTv2",
    "MobileViTv2Block",
    "Weights",
    "build_model",
    "create_model",
    "detect_layout",
    "fuse_batchnorm",
    "list_models",
    "load_pretrained",
    "read_weights",
    "to_our_layout",
]
