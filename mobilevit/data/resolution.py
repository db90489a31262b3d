"""Progressive resizing: the training resolution as a step function of training progress.

Small images early, full size late: FFCV's ImageNet recipes (160 -> 192 px), fast.ai's progressive resizing and
EfficientNetV2's progressive learning (Tan & Le 2021, section 4) spend most of a budget on cheap low-resolution steps.
With ``data.resolution_schedule_batch=fixed`` every step holds ``data.batch_size`` images, so small-image steps are
cheap; with ``pixels`` the batch scales inversely with the image area
(:func:`mobilevit.data.sampler.scaled_batch_size`), so every step holds about the pixels of a ``data.batch_size``
batch at ``data.image_size``.

The training loop decides the size of each epoch (:class:`mobilevit.callbacks.ResolutionScheduler`) from the training
progress at its start (:func:`mobilevit.utils.budget.training_progress`), which every DDP rank shares and a resumed run
restores, so all ranks use the same size at the same step and a resumed run continues the schedule where it stopped;
the data module builds the loader for the size it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mobilevit.data.sampler import scaled_image_size
from mobilevit.data.transforms import MIN_IMAGE_SIZE
from mobilevit.errors import UserInputError, is_int

KEY = "data.resolution_schedule"


@dataclass(frozen=True)
class ResolutionSchedule:
    """Training image size per fraction of the training budget.

    Args:
        milestones: ``(fraction, size)`` pairs: from ``fraction`` of the budget on, train at ``size`` x ``size`` px.
            The first fraction is 0; fractions rise strictly and stay below 1; sizes are integers >= 32.
    """

    milestones: tuple[tuple[float, int], ...]

    @classmethod
    def from_config(cls, value: Sequence[Sequence[Any]] | None, image_size: int) -> ResolutionSchedule | None:
        """The schedule of ``data.resolution_schedule``; None for null.

        A size is either pixels (an integer >= 32: ``[[0, 64], [0.5, 96], [0.8, 128]]``) or a float in (0, 1], a
        fraction of ``image_size`` (``[[0, 0.5], [0.35, 0.75], [0.7, 1.0]]``: 128 -> 192 -> 256 px at 256 px)
        rounded half up to a multiple of 32 (the networks' output stride); 1.0 is ``image_size`` itself.

        Raises:
            UserInputError: one line naming the key and the expected form.
        """
        if value is None:
            return None
        expected = f"{KEY} must be null or a list of [fraction, size] pairs"
        try:
            pairs = [(float(fraction), size) for fraction, size in value]
        except (TypeError, ValueError):
            raise UserInputError(f"{expected}, e.g. [[0, 64], [0.5, 96], [0.8, 112]]; got {value!r}.") from None
        fractions = [fraction for fraction, _ in pairs]
        sizes_ok = all(_is_pixels(size) or _is_fraction(size) for _, size in pairs)
        rising = all(a < b for a, b in zip(fractions, fractions[1:]))
        if not pairs or fractions[0] != 0.0 or not rising or fractions[-1] >= 1.0 or not sizes_ok:
            raise UserInputError(
                f"{expected} whose fractions start at 0, rise strictly and stay below 1, and whose sizes are pixels "
                f"(integers >= {MIN_IMAGE_SIZE}) or fractions of data.image_size (floats in (0, 1]); got {value!r}."
            )
        return cls(tuple((fraction, _pixels(size, image_size)) for fraction, size in pairs))

    def size_at(self, progress: float) -> int:
        """Training image size once ``progress`` (0..1) of the budget is spent."""
        return next(size for fraction, size in reversed(self.milestones) if progress >= fraction)

    @property
    def sizes(self) -> list[int]:
        """Every size the schedule trains at, in schedule order."""
        return [size for _, size in self.milestones]


def _is_pixels(size: Any) -> bool:
    return is_int(size) and size >= MIN_IMAGE_SIZE


def _is_fraction(size: Any) -> bool:
    return isinstance(size, float) and 0.0 < size <= 1.0


def _pixels(size: int | float, image_size: int) -> int:
    """A schedule size in pixels: an integer as it is, a fraction of ``image_size`` scaled and rounded."""
    if isinstance(size, float):
        return image_size if size == 1.0 else scaled_image_size(image_size, size)
    return int(size)
