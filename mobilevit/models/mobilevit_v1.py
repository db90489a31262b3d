"""MobileViT v1 (Mehta & Rastegari, "MobileViT: Light-weight, General-purpose, and Mobile-friendly
Vision Transformer", ICLR 2022, arXiv 2110.02178).

Read top to bottom against the paper's Fig. 1b: :class:`TransformerLayer` is the standard pre-norm
encoder layer, :class:`MobileViTBlock` is the block (local conv → unfold → transformer → fold → fusion)
and :class:`MobileViT` stacks MV2 blocks and MobileViT blocks as in Table 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from mobilevit.models.base import MobileViTClassifier, init_weights
from mobilevit.models.layers import ConvBNAct, InvertedResidual, fold_tokens, unfold_tokens


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over the tokens of one patch position, via ``scaled_dot_product_attention``.

    ``fused = False`` computes the same function as ``softmax(q kᵀ / sqrt(d)) v`` with 3-D batched matmuls:
    exporters that cannot lower the fused operation (or decompose it into mask handling a mobile runtime leaves
    outside its delegate) set it, see :mod:`mobilevit.export`.
    """

    fused: bool = True

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        qkv = self.qkv(x).reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, hd)
        if self.fused or self.training:
            q, k, v = qkv.unbind(0)
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        else:  # slices, views and 3-D bmm only: what mobile delegates take (4-D matmuls export with expand copies)
            blocks = qkv.contiguous()  # one transpose for q, k and v, then slices of whole blocks
            q, k, v = (blocks[i : i + 1].reshape(batch * heads, tokens, head_dim) for i in range(3))
            # The scale on q (tokens x head_dim), not on the scores (tokens x tokens): the same function in fewer
            # products.
            x = torch.bmm(torch.bmm(q * head_dim**-0.5, k.transpose(1, 2)).softmax(dim=-1), v)
            x = x.reshape(batch, heads, tokens, head_dim)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(batch, tokens, dim)))


class TransformerLayer(nn.Module):
    """Pre-norm transformer encoder layer: ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))`` (paper Sec. 3.1)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 2.0,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.act = nn.SiLU()
        self.mlp.drop = nn.Dropout(drop)
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)
        self.mlp.drop_out = nn.Dropout(drop)
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MobileViTBlock(nn.Module):
    """The MobileViT block (paper Sec. 3.1, Fig. 1b).

    1. Local representation: 3x3 conv, then 1x1 conv to the transformer width ``d``.
    2. Unfold the ``d x H x W`` map into ``P = h*w`` sequences of ``N = HW/P`` tokens (one per patch).
    3. Global representation: ``L`` transformer layers, each attending over the ``N`` patches that share
       a pixel position inside their patch.
    4. Fold back to ``d x H x W`` and project to ``C`` channels with a 1x1 conv.
    5. Fusion: concatenate with the block input and mix with a 3x3 conv.

    Feature maps whose size is not a multiple of the patch size are resized (bilinear) up to the next
    multiple before unfolding and back after folding, as the reference implementation does.
    """

    def __init__(
        self,
        channels: int,
        transformer_dim: int,
        depth: int,
        patch_size: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        drop_path: tuple[float, ...] | float = 0.0,
    ) -> None:
        super().__init__()
        drop_paths = drop_path if isinstance(drop_path, tuple) else (drop_path,) * depth
        self.patch_size = patch_size
        self.local_conv = ConvBNAct(channels, channels, 3)
        self.local_proj = nn.Conv2d(channels, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(
            *(TransformerLayer(transformer_dim, num_heads, mlp_ratio, drop_path=p) for p in drop_paths)
        )
        self.norm = nn.LayerNorm(transformer_dim)
        self.fold_proj = ConvBNAct(transformer_dim, channels, 1)
        self.fusion = ConvBNAct(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.local_proj(self.local_conv(x))

        # Unfold: (B, d, nh*p, nw*p) -> (B*P, N, d) with P = p*p pixel positions, N = nh*nw patches.
        height, width = x.shape[-2:]
        p = self.patch_size
        nh, nw = math.ceil(height / p), math.ceil(width / p)
        resized = (nh * p, nw * p) != (height, width)
        if resized:
            x = F.interpolate(x, size=(nh * p, nw * p), mode="bilinear", align_corners=False)
        x = unfold_tokens(x, p)

        x = self.norm(self.transformer(x))

        # Fold: (B*P, N, d) -> (B, d, nh*p, nw*p).
        x = fold_tokens(x, p, (nh, nw))
        if resized:
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)

        return self.fusion(torch.cat((shortcut, self.fold_proj(x)), dim=1))


@dataclass(frozen=True)
class MobileViTConfig:
    """Widths of one MobileViT v1 variant (paper Table 4)."""

    channels: tuple[int, int, int, int, int]  # output channels of the five stages
    transformer_dims: tuple[int, int, int]  # d of the MobileViT blocks in stages 3-5
    num_features: int  # width of the final 1x1 conv before pooling
    expansion: float = 4.0  # MV2 expansion factor
    stem_channels: int = 16
    transformer_depths: tuple[int, int, int] = (2, 4, 3)
    patch_size: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0


VARIANTS: dict[str, MobileViTConfig] = {
    "mobilevit_xxs": MobileViTConfig((16, 24, 48, 64, 80), (64, 80, 96), num_features=320, expansion=2.0),
    "mobilevit_xs": MobileViTConfig((32, 48, 64, 80, 96), (96, 120, 144), num_features=384),
    "mobilevit_s": MobileViTConfig((32, 64, 96, 128, 160), (144, 192, 240), num_features=640),
}


class MobileViT(MobileViTClassifier):
    """MobileViT v1: a 3x3 stem, two MV2 stages, then three stages of MV2 (stride 2) + MobileViT block."""

    def __init__(
        self, cfg: MobileViTConfig, num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0
    ) -> None:
        c1, c2, c3, c4, c5 = cfg.channels
        layer_drop_paths = torch.linspace(0, drop_path_rate, sum(cfg.transformer_depths)).tolist()

        stages = nn.Sequential(
            nn.Sequential(InvertedResidual(cfg.stem_channels, c1, 1, cfg.expansion)),
            nn.Sequential(
                InvertedResidual(c1, c2, 2, cfg.expansion),
                InvertedResidual(c2, c2, 1, cfg.expansion),
                InvertedResidual(c2, c2, 1, cfg.expansion),
            ),
        )
        in_channels = c2
        for out_channels, dim, depth in zip((c3, c4, c5), cfg.transformer_dims, cfg.transformer_depths):
            dpr, layer_drop_paths = tuple(layer_drop_paths[:depth]), layer_drop_paths[depth:]
            stages.append(
                nn.Sequential(
                    InvertedResidual(in_channels, out_channels, 2, cfg.expansion),
                    MobileViTBlock(out_channels, dim, depth, cfg.patch_size, cfg.num_heads, cfg.mlp_ratio, dpr),
                )
            )
            in_channels = out_channels

        super().__init__(
            stem=ConvBNAct(3, cfg.stem_channels, 3, stride=2),
            stages=stages,
            final_conv=ConvBNAct(c5, cfg.num_features, 1),
            num_features=cfg.num_features,
            num_classes=num_classes,
            drop_rate=drop_rate,
        )
        self.cfg = cfg
        init_weights(self)
