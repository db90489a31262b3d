"""Inference-time BatchNorm folding."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mobilevit.models.layers import ConvBNAct


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every BatchNorm folded into the convolution before it.

    Every BatchNorm in the zoo sits inside a :class:`ConvBNAct`, so after folding none is left and each
    such conv gains a bias. The original model is not modified.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return fused
