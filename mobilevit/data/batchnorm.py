"""The one rule for which training batches BatchNorm can use.

In train mode BatchNorm normalises each channel over the batch and the pixels of its feature map, and PyTorch
refuses a channel with a single value ("Expected more than 1 value per channel when training"). The smallest
feature maps of every MobileViT are those of the last stage, at output stride 32: ``ceil(H/32) x ceil(W/32)``
pixels (every stride-2 convolution rounds up). A batch of ``B`` images of ``H x W`` therefore trains only if
``B * ceil(H/32) * ceil(W/32) >= 2``: a single image needs a side above 32 px, a 32 px batch needs two images.

Every place that forms training batches asks :func:`trains_batchnorm` per (batch size, size): the start-up check
of the configured batch sizes, the last batch of an epoch, multi-scale batches and a DDP rank's shard.
"""

from __future__ import annotations

import math

OUTPUT_STRIDE = 32  # downsampling of the last stage of every MobileViT (v1 and v2)


def values_per_channel(batch_size: int, height: int, width: int | None = None) -> int:
    """Values each BatchNorm channel of the last stage sees for a batch of ``batch_size`` ``height x width`` images."""
    width = height if width is None else width
    return batch_size * math.ceil(height / OUTPUT_STRIDE) * math.ceil(width / OUTPUT_STRIDE)


def trains_batchnorm(batch_size: int, height: int, width: int | None = None) -> bool:
    """Whether a training batch of ``batch_size`` images of ``height x width`` px gives every BatchNorm channel more
    than one value (else PyTorch raises in train mode)."""
    return values_per_channel(batch_size, height, width) >= 2


def min_train_batch_size(height: int, width: int | None = None) -> int:
    """Smallest batch size that trains at ``height x width``: 1 above 32 px (a side), else 2."""
    return 1 if trains_batchnorm(1, height, width) else 2
