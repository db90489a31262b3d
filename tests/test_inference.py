"""mobilevit/inference.py: flip test-time augmentation and the batch-1 latency of the inference path. Where the
module, evaluate.py and predict apply flip TTA: test_module_tta.py."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mobilevit.inference import hflip_tta_logits, measure_latency_ms


class LeftHalf(nn.Module):
    """Logits that see only the left half of the image, so an image and its mirror disagree."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(3, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images[..., : images.shape[-1] // 2].mean(dim=(2, 3)))


def test_flip_tta_is_the_mean_of_the_two_views_probabilities() -> None:
    torch.manual_seed(0)
    net, images = LeftHalf(), torch.rand(4, 3, 8, 8)
    expected = (net(images).softmax(1) + net(images.flip(-1)).softmax(1)) / 2
    assert not torch.allclose(net(images).softmax(1), expected, atol=1e-3)  # the mirror matters here
    torch.testing.assert_close(hflip_tta_logits(net, images).softmax(1), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(hflip_tta_logits(net, images).exp(), expected, rtol=0, atol=1e-6)


class RecordInputs(nn.Module):
    """Records the shape, memory format, grad mode and train mode of every call."""

    seen: ClassVar[list[tuple[tuple[int, ...], bool, bool, bool]]] = []

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        channels_last = images.is_contiguous(memory_format=torch.channels_last)
        RecordInputs.seen.append((tuple(images.shape), channels_last, torch.is_grad_enabled(), self.training))
        return self.bn(self.conv(images))


def test_latency_times_the_fused_channels_last_network_at_batch_one() -> None:
    RecordInputs.seen = []
    net = RecordInputs().train()
    latency = measure_latency_ms(net, image_size=24, device=torch.device("cpu"), precision="32-true", repeats=7)
    assert latency > 0
    # an eval-mode copy, channels-last, no autograd: 5 warm-up runs, then the timed ones
    assert RecordInputs.seen == [((1, 3, 24, 24), True, False, False)] * (5 + 7)
    assert net.training  # the caller's network is left as it was
