"""mobilevit/data/size_plan.py: every (image size, batch size) a training run may use, planned before training, and
the BatchNorm refusal over them. The data module's use of the plan is in test_data.py and test_resolution.py."""

from __future__ import annotations

import pytest

from mobilevit.data.resolution import ResolutionSchedule
from mobilevit.data.size_plan import TrainingSizePlan
from mobilevit.errors import UserInputError

RECIPE = ResolutionSchedule.from_config([[0, 0.5], [0.35, 0.75], [0.7, 1.0]], image_size=128)  # 64 -> 96 -> 128


def test_one_size_without_a_schedule() -> None:
    plan = TrainingSizePlan(image_size=128, batch_size=32)
    assert plan.first_size() == 128 and plan.batch_shapes() == [(128, 32)] and plan.sizes() == [128]
    assert not plan.multiscale


@pytest.mark.parametrize(
    ("schedule_batch", "shapes"),
    [
        ("fixed", [(64, 32), (96, 32), (128, 32)]),
        # floor(32 x (128 / size)^2): 128 at 64 px, 56 at 96 px (56.9), 32 at 128 px
        ("pixels", [(64, 128), (96, 56), (128, 32)]),
    ],
)
def test_a_schedule_plans_each_size_with_its_batch(schedule_batch: str, shapes: list[tuple[int, int]]) -> None:
    plan = TrainingSizePlan(image_size=128, batch_size=32, schedule=RECIPE, schedule_batch=schedule_batch)
    assert plan.first_size() == 64
    assert plan.batch_shapes() == shapes and plan.sizes() == [64, 96, 128]
    assert [plan.batch_size_at(size) for size, _ in shapes] == [batch for _, batch in shapes]


def test_multiscale_batches_hold_the_pixels_of_the_base_batch() -> None:
    plan = TrainingSizePlan(image_size=128, batch_size=32, multiscale_sizes=(96, 128, 160))
    # floor(32 x (128 / size)^2): 56 at 96 px, 20 at 160 px (20.48)
    assert plan.multiscale and plan.batch_shapes() == [(96, 56), (128, 32), (160, 20)]


def test_scheduled_multiscale_sizes_scale_configured_sizes_or_derive_the_default_set() -> None:
    configured = TrainingSizePlan(128, 32, RECIPE, multiscale_sizes=(96, 128, 160), explicit_multiscale_sizes=True)
    assert configured.multiscale_sizes_at(64) == [64, 96]  # x 0.5: 48 -> 64, 64, 80 -> 96 (multiples of 32)
    assert configured.multiscale_sizes_at(128) == [96, 128, 160]
    derived = TrainingSizePlan(128, 32, RECIPE, multiscale_sizes=(96, 128, 160))
    assert derived.multiscale_sizes_at(64) == [32, 64, 96]  # 64 x (0.625, 0.75, 1, 1.125, 1.25), rounded
    assert derived.sizes() == [32, 64, 96, 128, 160]


def test_a_batch_batchnorm_cannot_train_on_is_refused_naming_the_keys() -> None:
    TrainingSizePlan(image_size=32, batch_size=2).check_batchnorm()  # 2 values per channel at 1x1 px: trains
    refused = r"data.batch_size=1 at data.image_size=32 trains on batches of 1 at 32 px"
    with pytest.raises(UserInputError, match=refused):
        TrainingSizePlan(image_size=32, batch_size=1).check_batchnorm()
    scheduled = TrainingSizePlan(64, 1, ResolutionSchedule.from_config([[0, 32], [0.5, 64]], 64))
    with pytest.raises(UserInputError, match=r"batches of 1 at 32 px .*data.resolution_schedule=\(\(0.0, 32\)"):
        scheduled.check_batchnorm()  # 64 px alone would train


def test_an_unknown_schedule_batch_rule_is_refused_with_the_choices() -> None:
    with pytest.raises(UserInputError, match=r"data.resolution_schedule_batch.*pixels.*fixed"):
        TrainingSizePlan(image_size=128, batch_size=32, schedule_batch="area")
