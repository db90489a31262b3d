"""The classifier skeleton both MobileViT versions share, with timm's uniform model API."""

from __future__ import annotations

import torch
from torch import nn


class MobileViTClassifier(nn.Module):
    """Stem → stages → optional 1x1 expansion → global average pool → dropout → linear.

    Subclasses build ``stem``, ``stages`` and ``final_conv``; this class owns the head and the API
    the training code relies on: :meth:`forward_features`, :meth:`forward_head`, :meth:`reset_classifier`.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: nn.Sequential,
        final_conv: nn.Module,
        num_features: int,
        num_classes: int,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.final_conv = final_conv
        self.num_features = num_features
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] → feature map ``(B, num_features, H/32, W/32)``."""
        return self.final_conv(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map → logits ``(B, num_classes)``, or pooled features when ``pre_logits``."""
        x = self.head_drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0 removes it)."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_linear(self.classifier)


def init_linear(layer: nn.Linear) -> None:
    """Truncated-normal weights and zero bias, as in the reference trainers."""
    nn.init.trunc_normal_(layer.weight, std=0.02)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit/zero norms, truncated-normal linears (ml-cvnets' scheme)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init_linear(module)
