"""mobilevit/resume.py: ``ckpt_path=...`` continues the run it names, from the run's own stored config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, TINY_SYNTHETIC, user_error
from recorders import RecordLR, StopAfterFirstEpoch, target

from mobilevit.resume import RECORD_FILE, config_changes
from train import train

# 3 classes x 8 training images in batches of 8: 3 optimizer steps per epoch.
STEPS_PER_EPOCH = 3
# The run's own settings, deliberately unlike train.yaml's defaults (XS, flowers102, crop_flip_trivialaugment): a
# resume that rebuilt today's defaults would fail or train another network.
RUN = [
    *TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null",
    "augmentation=none", "trainer.max_epochs=3", "optimizer.lr=2e-3", f"+callbacks.lr._target_={target(RecordLR)}",
]  # fmt: skip
# What a resume command passes: where to resume from, and the test's location settings (paths come from today).
RESUME_BASE = ["trainer.enable_progress_bar=false"]


def _recorded_lrs(objects: dict) -> dict[int, float]:
    (recorder,) = [callback for callback in objects["trainer"].callbacks if isinstance(callback, RecordLR)]
    return recorder.lrs


def _interrupted_run(make_cfg, extra: list[str] = ()) -> Path:
    cfg = make_cfg([*RUN, *extra, f"+callbacks.stop._target_={target(StopAfterFirstEpoch)}"], run_name="first")
    _, objects = train(cfg)
    assert objects["trainer"].global_step == STEPS_PER_EPOCH
    return Path(cfg.paths.output_dir)


def test_resume_without_the_runs_overrides_continues_the_run(make_cfg) -> None:
    """Resumed with nothing but ckpt_path (today's defaults are XS on Flowers-102): the run's own network, data and
    schedule (a one-epoch warm-up, then a linear decay) continue, global step and learning rate exactly as in the
    uninterrupted run."""
    schedule = ["scheduler=linear", "scheduler.warmup_epochs=1"]
    _, uninterrupted = train(make_cfg([*RUN, *schedule], run_name="uninterrupted"))
    first_dir = _interrupted_run(make_cfg, schedule)

    cfg = make_cfg([*RESUME_BASE, f"ckpt_path={first_dir}", "+callbacks.stop=null"], run_name="resumed")
    _, resumed = train(cfg)
    assert resumed["model"].net.__class__.__name__ == uninterrupted["model"].net.__class__.__name__
    assert resumed["model"].hparams.cfg["model"]["name"] == "mobilevit_xxs"
    assert resumed["trainer"].global_step == uninterrupted["trainer"].global_step == 3 * STEPS_PER_EPOCH
    expected = {step: lr for step, lr in _recorded_lrs(uninterrupted).items() if step >= STEPS_PER_EPOCH}
    assert _recorded_lrs(resumed) == pytest.approx(expected, rel=1e-9)

    record = json.loads((Path(cfg.paths.output_dir) / RECORD_FILE).read_text())
    assert record["run_dir"] == str(first_dir) and record["global_step"] == STEPS_PER_EPOCH
    assert record["changed"] == {"callbacks.stop._target_": [target(StopAfterFirstEpoch), None]}


@pytest.mark.parametrize("scheduler", ["none", "linear"])
def test_resume_with_a_new_lr_trains_at_it(make_cfg, scheduler: str) -> None:
    """optimizer.lr on the resume command replaces the run's: constant at it without a schedule; with one, every
    resumed step's lr is the uninterrupted run's times new / old (the schedule's shape kept)."""
    _, uninterrupted = train(make_cfg([*RUN, f"scheduler={scheduler}"], run_name="uninterrupted"))
    first_dir = _interrupted_run(make_cfg, [f"scheduler={scheduler}"])

    cfg = make_cfg([*RESUME_BASE, f"ckpt_path={first_dir}", "+callbacks.stop=null", "optimizer.lr=1e-5"], "train", "resumed")
    _, resumed = train(cfg)
    lrs = _recorded_lrs(resumed)
    assert sorted(lrs) == list(range(STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH))
    ratio = 1e-5 / 2e-3
    expected = {step: lr * ratio for step, lr in _recorded_lrs(uninterrupted).items() if step >= STEPS_PER_EPOCH}
    assert lrs == pytest.approx(expected, rel=1e-6)
    record = json.loads((Path(cfg.paths.output_dir) / RECORD_FILE).read_text())
    assert record["changed"]["optimizer.lr"] == [2e-3, 1e-5]


@pytest.mark.parametrize(
    ("override", "key", "before", "after"),
    [
        ("model=mobilevitv2_050", "model.name", "mobilevit_xxs", "mobilevitv2_050"),
        ("model.drop_rate=0.3", "model.drop_rate", None, "0.3"),
        ("+data.num_classes=4", "data.num_classes", "3", "4"),  # + : today's default data (flowers102) lacks it
        ("data=imagefolder", "data._target_", "SyntheticDataModule", "ImageFolderDataModule"),
    ],
)
def test_resume_that_changes_the_network_or_data_is_refused_in_one_line(
    make_cfg, override: str, key: str, before: str | None, after: str
) -> None:
    first_dir = _interrupted_run(make_cfg)
    extra = ["data.root=/nowhere"] if override.startswith("data=") else []
    cfg = make_cfg([*RESUME_BASE, f"ckpt_path={first_dir}", override, *extra], run_name="resumed")
    message = user_error(train, cfg)
    assert f"cannot change {key} (" in message and "model.pretrained=" in message
    assert after in message and (before is None or before in message)
    assert len(message.splitlines()) == 1


def test_config_changes_lists_changed_added_and_removed_leaves() -> None:
    before = {"optimizer": {"lr": 0.002, "weight_decay": 0.05}, "paths": {"output_dir": "a"}, "callbacks": {"x": {"k": 1}}}
    after = {"optimizer": {"lr": 1e-5, "weight_decay": 0.05}, "paths": {"output_dir": "b"}, "logger": {"csv": {}}}
    assert config_changes(before, after, ignore=("paths",)) == {
        "callbacks.x.k": [1, None],
        "logger.csv": [None, {}],
        "optimizer.lr": [0.002, 1e-5],
    }
