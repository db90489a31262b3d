"""MobileViT v2 (Mehta & Rastegari, "Separable Self-attention for Mobile Vision Transformers",
TMLR 2023, arXiv 2206.02680).

Read top to bottom against the paper's Fig. 4 and Sec. 3: :class:`SeparableSelfAttention` is the
linear-complexity attention, :class:`LinearTransformerLayer` wraps it in a pre-norm layer, and
:class:`MobileViTv2Block` is the v1 block without the fusion conv. Every width scales with one
multiplier ``alpha`` in {0.5, ..., 2.0} (paper Sec. 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from mobilevit.models.base import MobileViTClassifier, init_weights
from mobilevit.models.layers import ConvBNAct, InvertedResidual, fold_patches, make_divisible, unfold_patches


class SeparableSelfAttention(nn.Module):
    """Separable self-attention (paper Sec. 3.2, Fig. 4c), O(N) in the number of tokens ``N``.

    A single latent token scores every token (softmax over ``N``); the score-weighted sum of the keys
    is one context vector, which gates the ReLU'd values element-wise. Input layout ``(B, d, P, N)``.

    ``fused = False`` computes the same function with slices of the qkv channels and the softmax over a 3-D view of
    the scores: XNNPACK's delegate (executorch 1.5.1) leaves a channel split outside, which cuts the program at every
    attention, and computes a 4-D softmax in channels-last layout over the wrong axis. Exporters set it, see
    :mod:`mobilevit.export`.
    """

    fused: bool = True

    def __init__(self, dim: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.qkv = nn.Conv2d(dim, 1 + 2 * dim, 1)  # one query channel, then keys, then values
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        if self.fused:
            query, key, value = qkv.split((1, self.dim, self.dim), dim=1)
            scores = query.softmax(dim=-1)  # (B, 1, P, N)
        else:
            query, key, value = qkv[:, :1], qkv[:, 1 : 1 + self.dim], qkv[:, 1 + self.dim :]
            scores = query.flatten(1, 2).softmax(dim=-1).view_as(query)
        scores = self.attn_drop(scores)
        context = (key * scores).sum(dim=-1, keepdim=True)  # (B, d, P, 1)
        return self.proj_drop(self.proj(F.relu(value) * context))


class LinearTransformerLayer(nn.Module):
    """Pre-norm layer with separable attention and a 1x1-conv MLP; norms are GroupNorm with one group."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = SeparableSelfAttention(dim, proj_drop=drop)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Conv2d(dim, hidden, 1)
        self.mlp.act = nn.SiLU()
        self.mlp.drop = nn.Dropout(drop)
        self.mlp.fc2 = nn.Conv2d(hidden, dim, 1)
        self.mlp.drop_out = nn.Dropout(drop)
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MobileViTv2Block(nn.Module):
    """The MobileViT v2 block (paper Sec. 3.3): local rep → unfold → separable transformer → fold → 1x1.

    Unlike v1 the local 3x3 conv is depthwise, there is no fusion with the input, and a map whose size is
    not a multiple of the patch size is resized up (bilinear, corners aligned) *before* the block and
    stays at that size, as the reference implementation does.
    """

    def __init__(
        self,
        channels: int,
        transformer_dim: int,
        depth: int,
        patch_size: int = 2,
        mlp_ratio: float = 2.0,
        drop_path: tuple[float, ...] | float = 0.0,
    ) -> None:
        super().__init__()
        drop_paths = drop_path if isinstance(drop_path, tuple) else (drop_path,) * depth
        self.patch_size = patch_size
        self.local_conv = ConvBNAct(channels, channels, 3, groups=channels)
        self.local_proj = nn.Conv2d(channels, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(
            *(LinearTransformerLayer(transformer_dim, mlp_ratio, drop_path=p) for p in drop_paths)
        )
        self.norm = nn.GroupNorm(1, transformer_dim)
        self.fold_proj = ConvBNAct(transformer_dim, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        p = self.patch_size
        nh, nw = math.ceil(height / p), math.ceil(width / p)
        if (nh * p, nw * p) != (height, width):
            x = F.interpolate(x, size=(nh * p, nw * p), mode="bilinear", align_corners=True)

        x = self.local_proj(self.local_conv(x))

        # Unfold: (B, d, nh*p, nw*p) -> (B, d, P, N) with P = p*p pixel positions, N = nh*nw patches.
        dim = x.shape[1]
        x = unfold_patches(x, p).reshape(batch, dim, p * p, nh * nw)

        x = self.norm(self.transformer(x))

        # Fold: (B, d, P, N) -> (B, d, nh*p, nw*p).
        x = fold_patches(x.reshape(batch, dim, p * p, nh, nw), p)
        return self.fold_proj(x)


@dataclass(frozen=True)
class MobileViTv2Config:
    """One MobileViT v2 variant: every width is ``alpha`` times the base widths (paper Table 1)."""

    width_multiplier: float
    base_channels: tuple[int, int, int, int, int] = (64, 128, 256, 384, 512)
    base_stem_channels: int = 32
    transformer_depths: tuple[int, int, int] = (2, 4, 3)
    expansion: float = 2.0  # MV2 expansion factor
    attn_ratio: float = 0.5  # transformer width d relative to the stage width
    patch_size: int = 2
    mlp_ratio: float = 2.0

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(int(c * self.width_multiplier) for c in self.base_channels)

    @property
    def stem_channels(self) -> int:
        return int(self.base_stem_channels * self.width_multiplier)


VARIANTS: dict[str, MobileViTv2Config] = {
    f"mobilevitv2_{round(alpha * 100):03d}": MobileViTv2Config(alpha)
    for alpha in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
}


class MobileViTv2(MobileViTClassifier):
    """MobileViT v2: a 3x3 stem, two MV2 stages, then three stages of MV2 (stride 2) + MobileViT v2 block."""

    def __init__(
        self, cfg: MobileViTv2Config, num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0
    ) -> None:
        c1, c2, c3, c4, c5 = cfg.channels
        layer_drop_paths = torch.linspace(0, drop_path_rate, sum(cfg.transformer_depths)).tolist()

        stages = nn.Sequential(
            nn.Sequential(InvertedResidual(cfg.stem_channels, c1, 1, cfg.expansion)),
            nn.Sequential(InvertedResidual(c1, c2, 2, cfg.expansion), InvertedResidual(c2, c2, 1, cfg.expansion)),
        )
        in_channels = c2
        for out_channels, depth in zip((c3, c4, c5), cfg.transformer_depths):
            dpr, layer_drop_paths = tuple(layer_drop_paths[:depth]), layer_drop_paths[depth:]
            dim = make_divisible(out_channels * cfg.attn_ratio)
            stages.append(
                nn.Sequential(
                    InvertedResidual(in_channels, out_channels, 2, cfg.expansion),
                    MobileViTv2Block(out_channels, dim, depth, cfg.patch_size, cfg.mlp_ratio, dpr),
                )
            )
            in_channels = out_channels

        super().__init__(
            stem=ConvBNAct(3, cfg.stem_channels, 3, stride=2),
            stages=stages,
            final_conv=nn.Identity(),
            num_features=c5,
            num_classes=num_classes,
            drop_rate=drop_rate,
        )
        self.cfg = cfg
        init_weights(self)
