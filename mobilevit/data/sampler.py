"""Multi-scale training with variable batch sizes (MobileViT v1 paper, appendix B).

Every training batch has one resolution from a set of sizes; its batch size scales inversely with
the image area, so each batch holds about the same number of pixels as a base-size batch
(``batch_size x image_size^2``). Two pieces implement it:

* :class:`MultiScaleBatchSampler` yields batches of ``(index, size)`` pairs. The indices of this
  rank come from a ``DistributedSampler`` (disjoint shards, reshuffled by ``set_epoch``); the
  per-step resolutions depend only on (seed, epoch, step), so every DDP rank uses the same size at
  the same step.
* :class:`MultiScaleDataset` wraps a dataset that returns raw images and applies the per-image
  transform built for the requested size (one transform per size, built once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, DistributedSampler, Sampler

from mobilevit.data.batchnorm import trains_batchnorm
from mobilevit.data.transforms import MIN_IMAGE_SIZE
from mobilevit.errors import UserInputError, is_int

# Default sizes relative to data.image_size (256 -> 160, 192, 256, 288, 320).
MULTISCALE_FACTORS: tuple[float, ...] = (0.625, 0.75, 1.0, 1.125, 1.25)
SIZE_MULTIPLE = 32  # the networks' output stride


def scaled_image_size(image_size: int, factor: float) -> int:
    """``factor x image_size`` rounded (half up) to a multiple of 32, at least 32."""
    return max(SIZE_MULTIPLE, math.floor(factor * image_size / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE)


def default_multiscale_sizes(image_size: int) -> list[int]:
    """``MULTISCALE_FACTORS x image_size`` rounded (half up) to multiples of 32, at least 32, sorted, unique."""
    return sorted({scaled_image_size(image_size, factor) for factor in MULTISCALE_FACTORS})


def resolve_multiscale_sizes(image_size: int, sizes: Sequence[int] | None = None) -> list[int]:
    """The configured ``data.multiscale_sizes`` checked and sorted, or the default set for ``image_size``."""
    if sizes is None:
        return default_multiscale_sizes(image_size)
    values = list(sizes) if isinstance(sizes, Sequence) and not isinstance(sizes, str) else []
    if not values or not all(is_int(s) and s >= MIN_IMAGE_SIZE for s in values):
        raise UserInputError(
            f"data.multiscale_sizes must be null (derived from data.image_size) or a list of integers >= "
            f"{MIN_IMAGE_SIZE}, got {sizes!r}."
        )
    return sorted(set(values))


def scaled_batch_size(base_batch_size: int, base_size: int, size: int) -> int:
    """Batch size for ``size`` x ``size`` images holding at most the pixels of a base batch."""
    return max(1, math.floor(base_batch_size * base_size**2 / size**2))


class MultiScaleBatchSampler(Sampler[list[tuple[int, int]]]):
    """Variable-resolution, variable-size batches of ``(index, size)`` pairs.

    An epoch's batches are fixed in number and content sizes: sizes are used round-robin, each with its
    :func:`scaled_batch_size`, until this rank's ``len(sampler)`` indices are used (the last batch takes
    the rest, unless BatchNorm could not train on it (:func:`~mobilevit.data.batchnorm.trains_batchnorm`): then
    those images are dropped, counted in ``dropped``). The
    order of the batches, and so the resolution of each step, is shuffled per epoch with a generator
    seeded by ``(seed, epoch)``: identical on every rank, since all ranks have ``len(sampler)`` indices.

    Args:
        sampler: this rank's indices; a ``DistributedSampler`` (its ``set_epoch`` reshuffles them and
            sets the epoch used here). Lightning calls ``batch_sampler.sampler.set_epoch`` every epoch.
        sizes: image sizes to draw from.
        base_size: image size of ``base_batch_size`` (``data.image_size``).
        base_batch_size: batch size at ``base_size`` (``data.batch_size``).
        seed: seed of the resolution order.
    """

    def __init__(
        self, sampler: DistributedSampler, sizes: Sequence[int], base_size: int, base_batch_size: int, seed: int = 0
    ) -> None:
        self.sampler = sampler
        self.sizes = sorted(set(sizes))
        self.base_size = base_size
        self.base_batch_size = base_batch_size
        self.seed = seed
        self.batch_sizes = {size: scaled_batch_size(base_batch_size, base_size, size) for size in self.sizes}
        self.plan = self._plan(len(sampler))

    def _plan(self, num_samples: int) -> list[tuple[int, int]]:
        """(size, batch size) of every batch of an epoch, in canonical order; sets ``dropped`` (images left out
        because BatchNorm cannot train on them) and ``dropped_size``."""
        plan, used, step = [], 0, 0
        self.dropped, self.dropped_size = 0, 0
        while used < num_samples:
            size = self.sizes[step % len(self.sizes)]
            count = min(self.batch_sizes[size], num_samples - used)
            if not trains_batchnorm(count, size):
                if not plan:
                    raise UserInputError(
                        f"Multi-scale training has {num_samples} image(s) per process, too few for BatchNorm at "
                        f"{size} px: add training images or use fewer devices."
                    )
                self.dropped, self.dropped_size = num_samples - used, size
                break
            plan.append((size, count))
            used += count
            step += 1
        return plan

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: new index shuffle and resolution order (for use outside Lightning)."""
        self.sampler.set_epoch(epoch)

    def _epoch_plan(self) -> list[tuple[int, int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.plan))
        return [self.plan[i] for i in order]

    def step_sizes(self) -> list[int]:
        """The resolution of each step of the current epoch (the same on every rank)."""
        return [size for size, _ in self._epoch_plan()]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = list(self.sampler)
        start = 0
        for size, count in self._epoch_plan():
            yield [(index, size) for index in indices[start : start + count]]
            start += count

    def __len__(self) -> int:
        return len(self.plan)


class MultiScaleDataset(Dataset):
    """``dataset[index]`` = (raw image, target) -> ``self[(index, size)]`` = (transform for size(image), target).

    Args:
        dataset: a dataset returning untransformed images (PIL or uint8 tensors) and targets.
        transform_at: ``size -> per-image transform`` producing ``size`` x ``size`` images (picklable, for
            DataLoader workers); each size's transform is built on first use and cached.
    """

    def __init__(self, dataset: Dataset, transform_at: Callable[[int], Callable[[Any], Any]]) -> None:
        self.dataset = dataset
        self.transform_at = transform_at
        self._transforms: dict[int, Callable[[Any], Any]] = {}

    def transform(self, size: int) -> Callable[[Any], Any]:
        """The cached per-image transform for ``size``."""
        if size not in self._transforms:
            self._transforms[size] = self.transform_at(size)
        return self._transforms[size]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, Any]:
        index, size = key
        image, target = self.dataset[index]
        return self.transform(size)(image), target

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]
