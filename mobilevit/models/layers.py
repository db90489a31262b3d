"""Building blocks shared by MobileViT v1 and v2: conv-BN-act and the MV2 inverted residual."""

from __future__ import annotations

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10 % (MobileNetV2 rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """``k x k`` convolution (no bias) → BatchNorm → optional SiLU, with "same" padding."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual ("MV2" in the MobileViT papers, Fig. 1b of arXiv 2110.02178).

    1x1 expansion → 3x3 depthwise (carries the stride) → linear 1x1 projection, with a residual
    connection when the shape is preserved.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: float = 4.0) -> None:
        super().__init__()
        hidden = make_divisible(in_channels * expansion)
        self.expand = ConvBNAct(in_channels, hidden, 1)
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, act=False)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


# Unfold/fold with tensors of rank <= 5 (Core ML, ncnn and several TensorRT versions refuse rank 6).
def unfold_tokens(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, nh*p, nw*p) -> (B*P, N, C) with P = p*p pixel positions and N = nh*nw patches: sequence ``b*P + i*p + j``
    holds pixel ``(i, j)`` of every patch of image ``b``, in raster order (MobileViT v1's transformer input, paper
    Sec. 3.1). Pure data movement (bit-exact), in two channels-last transposes that move whole ``C``-vectors (a
    channels-last runtime such as XNNPACK copies rows, not single elements); no tensor has rank above 5."""
    batch, channels, height, width = x.shape
    p = patch_size
    nh, nw = height // p, width // p
    x = x.permute(0, 2, 3, 1).reshape(batch * nh, p, nw, p, channels).transpose(2, 3)  # (B*nh, p_row, p_col, nw, C)
    x = x.reshape(batch, nh, p * p, nw * channels).transpose(1, 2)  # (B, P, nh, nw*C)
    return x.reshape(batch * p * p, nh * nw, channels)


def fold_tokens(x: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`unfold_tokens`: (B*P, N, C) -> (B, C, nh*p, nw*p) for the patch ``grid`` ``(nh, nw)``."""
    nh, nw = grid
    p = patch_size
    channels = x.shape[-1]
    x = x.reshape(-1, p * p, nh, nw * channels).transpose(1, 2)  # (B, nh, P, nw*C)
    x = x.reshape(-1, p, p, nw, channels).transpose(2, 3)  # (B*nh, p_row, nw, p_col, C)
    return x.reshape(-1, nh * p, nw * p, channels).permute(0, 3, 1, 2)


def unfold_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, nh*p, nw*p) -> (B, C, p*p, nh, nw): pixel position ``(i, j)`` of every ``p x p`` patch gathered in
    ``[:, :, i*p + j]``. Pure data movement (bit-exact); no intermediate tensor has rank above 5."""
    batch, channels, height, width = x.shape
    p = patch_size
    nh, nw = height // p, width // p
    x = x.reshape(batch * channels * nh, p, nw, p).transpose(2, 3)  # (B*C*nh, p_row, p_col, nw)
    return x.reshape(batch, channels, nh, p * p, nw).transpose(2, 3)


def fold_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of :func:`unfold_patches`: (B, C, p*p, nh, nw) -> (B, C, nh*p, nw*p)."""
    batch, channels, _, nh, nw = x.shape
    p = patch_size
    x = x.transpose(2, 3).reshape(batch * channels * nh, p, p, nw).transpose(2, 3)  # (B*C*nh, p_row, nw, p_col)
    return x.reshape(batch, channels, nh * p, nw * p)
