"""Progressive resizing: the training resolution as a step function of training progress.

Small images early, full size late: FFCV's ImageNet recipes (160 -> 192 px), fast.ai's progressive resizing and
EfficientNetV2's progressive learning (Tan & Le 2021, section 4) spend most of a budget on cheap low-resolution steps.
The batch size scales inversely with the image area (:func:`mobilevit.data.sampler.scaled_batch_size`), so every
step holds about the pixels of a ``data.batch_size`` batch at ``data.image_size``.

The size depends only on the training progress at the start of an epoch (:func:`mobilevit.utils.budget.training_progress`),
which every DDP rank shares and a resumed run restores, so all ranks use the same size at the same step and a
resumed run continues the schedule where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mobilevit.data.transforms import MIN_IMAGE_SIZE
from mobilevit.errors import UserInputError, is_int

KEY = "data.resolution_schedule"


@dataclass(frozen=True)
class ResolutionSchedule:
    """Training image size per fraction of the training budget.

    Args:
        milestones: ``(fraction, size)`` pairs: from ``fraction`` of the budget on, train at ``size`` x ``size``.
            The first fraction is 0; fractions rise strictly and stay below 1; sizes are integers >= 32.
    """

    milestones: tuple[tuple[float, int], ...]

    @classmethod
    def from_config(cls, value: Sequence[Sequence[Any]] | None) -> ResolutionSchedule | None:
        """The schedule of ``data.resolution_schedule`` (e.g. ``[[0, 64], [0.5, 96], [0.8, 112]]``); None for null.

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
        sizes_ok = all(is_int(size) and size >= MIN_IMAGE_SIZE for _, size in pairs)
        rising = all(a < b for a, b in zip(fractions, fractions[1:]))
        if not pairs or fractions[0] != 0.0 or not rising or fractions[-1] >= 1.0 or not sizes_ok:
            raise UserInputError(
                f"{expected} whose fractions start at 0, rise strictly and stay below 1, and whose sizes are "
                f"integers >= {MIN_IMAGE_SIZE}; got {value!r}."
            )
        return cls(tuple(pairs))

    def size_at(self, progress: float) -> int:
        """Training image size once ``progress`` (0..1) of the budget is spent."""
        return next(size for fraction, size in reversed(self.milestones) if progress >= fraction)

    @property
    def sizes(self) -> list[int]:
        """Every size the schedule trains at, in schedule order."""
        return [size for _, size in self.milestones]
