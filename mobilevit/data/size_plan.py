"""The training shapes a run may use: every (image size, batch size) of its batches, planned before training.

The data module builds its loaders and its decoded-image cache from this plan, and refuses a plan with a batch that
BatchNorm cannot train on (:mod:`mobilevit.data.batchnorm`) before any image is read. Which planned size an epoch
trains at is the training loop's decision (:class:`mobilevit.callbacks.ResolutionScheduler`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mobilevit.data.batchnorm import trains_batchnorm
from mobilevit.data.resolution import ResolutionSchedule
from mobilevit.data.sampler import default_multiscale_sizes, scaled_batch_size, scaled_image_size
from mobilevit.errors import UserInputError, require_choice

# data.resolution_schedule_batch: keep data.batch_size at every size, or scale the batch with the image area.
RESOLUTION_SCHEDULE_BATCHES: tuple[str, ...] = ("pixels", "fixed")


@dataclass(frozen=True)
class TrainingSizePlan:
    """``image_size`` with ``batch_size``; under a resolution ``schedule`` its sizes with their batches
    (``schedule_batch``: ``"fixed"`` keeps ``batch_size``, ``"pixels"`` scales it to hold the pixels of
    ``batch_size`` images at ``image_size``); with ``multiscale_sizes`` (multi-scale on) each size spread over them
    (MobileViT v1, appendix B).

    Args:
        image_size: the full training size in px (``data.image_size``).
        batch_size: images per batch at ``image_size`` (``data.batch_size``).
        schedule: progressive resizing (``data.resolution_schedule``), or None for one size.
        schedule_batch: ``data.resolution_schedule_batch``, one of :data:`RESOLUTION_SCHEDULE_BATCHES`.
        multiscale_sizes: the multi-scale sizes at ``image_size`` (empty: multi-scale off).
        explicit_multiscale_sizes: they were configured (``data.multiscale_sizes``), so scheduled sizes scale them
            instead of deriving the default set.

    Raises:
        UserInputError: ``schedule_batch`` is not a valid choice (one line naming the key and the choices).
    """

    image_size: int
    batch_size: int
    schedule: ResolutionSchedule | None = None
    schedule_batch: str = "fixed"
    multiscale_sizes: tuple[int, ...] = ()
    explicit_multiscale_sizes: bool = False

    def __post_init__(self) -> None:
        require_choice(self.schedule_batch, "data.resolution_schedule_batch", RESOLUTION_SCHEDULE_BATCHES)

    @property
    def multiscale(self) -> bool:
        return bool(self.multiscale_sizes)

    def first_size(self) -> int:
        """The size training starts at: the schedule's first, else ``image_size``."""
        return self.image_size if self.schedule is None else self.schedule.size_at(0.0)

    def batch_size_at(self, size: int) -> int:
        """Batch size of a (scheduled) training size: ``batch_size``, or with ``schedule_batch="pixels"``
        ``floor(batch_size x (image_size / size)^2)``."""
        if self.schedule is None or self.schedule_batch == "fixed":
            return self.batch_size
        return scaled_batch_size(self.batch_size, self.image_size, size)

    def multiscale_sizes_at(self, size: int) -> list[int]:
        """The multi-scale sizes around a scheduled ``size``: the default factors x ``size``, or the configured
        sizes scaled by ``size / image_size`` (rounded to multiples of 32)."""
        if self.schedule is None or size == self.image_size:
            return list(self.multiscale_sizes)
        if self.explicit_multiscale_sizes:
            return sorted({scaled_image_size(s, size / self.image_size) for s in self.multiscale_sizes})
        return default_multiscale_sizes(size)

    def batch_shapes(self) -> list[tuple[int, int]]:
        """Every (image size, batch size) a full training batch can have, sorted."""
        shapes = []
        for base in self.schedule.sizes if self.schedule is not None else [self.image_size]:
            batch = self.batch_size_at(base)
            if self.multiscale:
                shapes += [(size, scaled_batch_size(batch, base, size)) for size in self.multiscale_sizes_at(base)]
            else:
                shapes.append((base, batch))
        return sorted(set(shapes))

    def sizes(self) -> list[int]:
        """Every size a training batch can have, ascending."""
        return sorted({size for size, _ in self.batch_shapes()})

    def check_batchnorm(self) -> None:
        """Refuse a planned batch that BatchNorm cannot train on: one :class:`UserInputError` naming the keys."""
        for size, batch in self.batch_shapes():
            if trains_batchnorm(batch, size):
                continue
            where = f"batches of {batch} at {size} px" + (
                f" (data.multiscale_sizes={list(self.multiscale_sizes)}, data.resolution_schedule="
                f"{None if self.schedule is None else self.schedule.milestones})"
                if self.multiscale or self.schedule is not None else ""
            )  # fmt: skip
            raise UserInputError(
                f"data.batch_size={self.batch_size} at data.image_size={self.image_size} trains on {where}: BatchNorm "
                f"then has one value per channel (the last stage is 1x1 px). Use data.batch_size >= 2 or images "
                f"larger than 32 px."
            )
