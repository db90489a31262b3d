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

import logging
import math

from lightning.pytorch.utilities import rank_zero_only

from mobilevit.errors import UserInputError

log = logging.getLogger(__name__)
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


@rank_zero_only
def log_dropped_batch(images: int, size: int, split_images: int, world_size: int) -> None:
    """Warn (on global rank 0) that the last ``images`` of ``split_images`` per epoch are dropped at ``size`` px."""
    per = f"each of {world_size} processes' {split_images}" if world_size > 1 else f"the {split_images}"
    log.warning(
        "Dropping the last training batch of every epoch: %d image%s of %s training images at %d px would give "
        "BatchNorm one value per channel.", images, "" if images == 1 else "s", per, size
    )


def drops_untrainable_batch(num_samples: int, batch_size: int, size: int, world_size: int = 1) -> bool:
    """Whether the last training batch of an epoch must be dropped (logged once) because BatchNorm cannot train on it.

    Args:
        num_samples: this process's training images per epoch (its DDP shard).
        batch_size: images per batch; size: their side in px; world_size: processes (for the message).

    Raises:
        UserInputError: the epoch would be left without a single batch (fewer images than one trainable batch).
    """
    remainder = num_samples % batch_size
    if remainder == 0 or trains_batchnorm(remainder, size):
        return False
    if num_samples < batch_size:
        raise UserInputError(
            f"The training split has {num_samples} image(s) per process ({world_size} process(es)), too few for "
            f"BatchNorm at {size} px: add training images or use fewer devices."
        )
    log_dropped_batch(remainder, size, num_samples, world_size)
    return True
