"""Running a trained network for inference: flip test-time augmentation (used by the final test, evaluate.py,
predict and the exported artifacts' runtimes alike) and the batch-1 latency of the inference path."""

from __future__ import annotations

import torch
from torch import nn

from mobilevit.models import fuse_batchnorm
from mobilevit.utils.precision import autocast_dtype
from mobilevit.utils.timing import median, synchronizer, time_repeats


def hflip_tta_logits(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Flip test-time augmentation: float32 log-probabilities (B, C) whose softmax is the mean of the class
    probabilities of ``images`` (B, 3, H, W) and of their horizontal mirrors (FFCV's and timm's flip TTA).

    Log-probabilities are valid logits: argmax, softmax and cross-entropy treat them like the network's own.
    """
    probabilities = net(images).float().softmax(dim=1) + net(images.flip(-1)).float().softmax(dim=1)
    return (probabilities / 2).clamp_min(torch.finfo(torch.float32).tiny).log()


@torch.inference_mode()
def measure_latency_ms(
    net: nn.Module, image_size: int, device: torch.device, precision: str = "auto", repeats: int = 20
) -> float:
    """Median batch-1 forward time (ms) of ``net`` on the inference path (fused BN, channels-last) in ``precision``
    (a Lightning precision; ``auto``: the fastest the device runs natively)."""
    fused = fuse_batchnorm(net).to(device=device, memory_format=torch.channels_last).eval()
    image = torch.randn(1, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    dtype = autocast_dtype(precision, device.type)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        times = time_repeats(lambda: fused(image), repeats, warmup=5, synchronize=synchronizer(device))
    return 1000.0 * median(times)
