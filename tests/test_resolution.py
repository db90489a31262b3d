"""Progressive resizing (mobilevit/data/resolution.py and the data module's schedule): size and batch per step,
under DDP and after a resume."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import FAST_TRAIN, TINY_SYNTHETIC, train_two_ddp_processes
from mobilevit.callbacks import ResolutionScheduler
from mobilevit.data import SyntheticDataModule
from mobilevit.data.resolution import ResolutionSchedule
from mobilevit.errors import UserInputError
from recorders import RecordSizes, RecordSizesSkewedClock, target
from train import train


def test_size_at_follows_the_milestones() -> None:
    schedule = ResolutionSchedule.from_config([[0, 64], [0.5, 96], [0.8, 112]], image_size=256)
    assert [schedule.size_at(p) for p in (0.0, 0.49, 0.5, 0.79, 0.8, 1.0)] == [64, 64, 96, 96, 112, 112]
    assert schedule.sizes == [64, 96, 112]
    assert ResolutionSchedule.from_config(None, image_size=256) is None


@pytest.mark.parametrize(
    ("image_size", "sizes"),
    [(256, [128, 192, 256]), (128, [64, 96, 128]), (224, [128, 160, 224]), (160, [96, 128, 160]), (100, [64, 64, 100]), (32, [32, 32, 32])],
)
def test_fractions_of_the_image_size_round_to_multiples_of_32(image_size: int, sizes: list[int]) -> None:
    """0.5 / 0.75 x image_size rounded half up to a multiple of 32 (at least 32); 1.0 is image_size itself."""
    schedule = ResolutionSchedule.from_config([[0, 0.5], [0.35, 0.75], [0.7, 1.0]], image_size=image_size)
    assert schedule.milestones == tuple(zip((0.0, 0.35, 0.7), sizes))
    mixed = ResolutionSchedule.from_config([[0, 64], [0.5, 1.0]], image_size=image_size)
    assert mixed.sizes == [64, image_size]


@pytest.mark.parametrize(
    "value",
    [[], [[0.1, 64]], [[0, 64], [0.5, 16]], [[0, 64], [0.6, 96], [0.5, 112]], [[0, 64], [1.0, 96]], "64", [[0, 64.5]],
     [[0, 0.0]], [[0, 1.5]], [[0, True]]],
)  # fmt: skip
def test_bad_schedules_are_one_line_naming_the_key(value) -> None:
    with pytest.raises(UserInputError, match="data.resolution_schedule") as info:
        ResolutionSchedule.from_config(value, image_size=128)
    assert "\n" not in str(info.value)


def test_explicit_multiscale_sizes_scale_with_the_scheduled_size(tmp_path: Path) -> None:
    """multiscale_sizes are the sizes at image_size; at half the size they halve (rounded to multiples of 32)."""
    schedule = [[0, 0.5], [0.5, 1.0]]
    datamodule = SyntheticDataModule(
        tmp_path, image_size=128, multiscale=True, multiscale_sizes=[96, 128, 160], resolution_schedule=schedule
    )
    assert datamodule.size_plan.multiscale_sizes_at(128) == [96, 128, 160]
    assert datamodule.size_plan.multiscale_sizes_at(64) == [64, 96]  # 48 -> 64, 64, 80 -> 96
    assert datamodule.size_plan.sizes() == [64, 96, 128, 160]


# 36 training images; batch 4 at 64 px; 32 px for the first half of 4 epochs.
SCHEDULED = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "model.drop_rate=0", "logger=none", "test=false",
             "data.image_size=64", "data.batch_size=4", "data.train_per_class=12",
             "data.resolution_schedule=[[0,32],[0.5,64]]", "trainer.max_epochs=4"]  # fmt: skip


def _run(make_cfg, tmp_path: Path, overrides=(), run_name: str = "run") -> tuple[list[tuple[int, int, int]], dict]:
    """train() with :class:`RecordSizes`; returns the recorded steps as (epoch, size, batch) and the objects."""
    folder = tmp_path / f"record-{run_name}"
    recorder = [f"+callbacks.record._target_={target(RecordSizes)}", f"+callbacks.record.folder={folder}"]
    _, objects = train(make_cfg([*SCHEDULED, *recorder, *overrides], run_name=run_name))
    return [tuple(step) for step in json.loads((folder / "rank0.json").read_text())], objects


def test_size_and_batch_per_step_follow_the_schedule(make_cfg, tmp_path: Path) -> None:
    """36 training images, batch 4 at 64 px: epochs 0-1 at 32 px with batch 16 (the same pixels), 2-3 at 64 px."""
    steps, objects = _run(make_cfg, tmp_path, ["data.resolution_schedule_batch=pixels"])
    by_epoch = {epoch: sorted({(size, batch) for e, size, batch in steps if e == epoch}) for epoch in range(4)}
    assert by_epoch[0] == by_epoch[1] == [(32, 4), (32, 16)]  # 16 + 16 + 4 images
    assert by_epoch[2] == by_epoch[3] == [(64, 4)]
    assert [len([s for s in steps if s[0] == epoch]) for epoch in range(4)] == [3, 3, 9, 9]
    assert objects["trainer"].reload_dataloaders_every_n_epochs == 1
    datamodule = objects["datamodule"]  # one loader per size: its persistent workers live across epochs
    assert datamodule.train_dataloader() is datamodule.train_dataloader()
    # Validation stays at the evaluation size.
    images, _ = next(iter(objects["datamodule"].val_dataloader()))
    assert images.shape[-1] == 64


def test_fixed_batches_keep_the_batch_size_at_every_size(make_cfg, tmp_path: Path) -> None:
    """resolution_schedule_batch=fixed (the default of every data config): batches of 4 at 32 px too, so the cheap
    epochs have more steps."""
    for data in ("flowers102", "imagefolder", "synthetic"):
        assert make_cfg([f"data={data}"]).data.resolution_schedule_batch == "fixed", data
    steps, _ = _run(make_cfg, tmp_path)
    assert {(size, batch) for _, size, batch in steps} == {(32, 4), (64, 4)}
    assert [len([s for s in steps if s[0] == epoch]) for epoch in range(4)] == [9, 9, 9, 9]


def test_fractions_train_like_pixels_and_the_summary_records_pixels(make_cfg, tmp_path: Path) -> None:
    """[[0, 0.5], [0.5, 1.0]] at 64 px trains as [[0, 32], [0.5, 64]]; summary.json (and the report) get pixels."""
    steps, objects = _run(make_cfg, tmp_path, ["data.resolution_schedule=[[0,0.5],[0.5,1.0]]"])
    assert sorted({(epoch, size) for epoch, size, _ in steps}) == [(0, 32), (1, 32), (2, 64), (3, 64)]
    summary = json.loads((Path(objects["cfg"].paths.output_dir) / "summary.json").read_text())
    assert summary["resolution_schedule"] == [[0.0, 32], [0.5, 64]]


def test_resolution_schedule_batch_names_its_choices(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"data.resolution_schedule_batch must be one of \['pixels', 'fixed'\]"):
        SyntheticDataModule(tmp_path, resolution_schedule=[[0, 32]], resolution_schedule_batch="area")


def test_schedule_composes_with_multiscale(make_cfg, tmp_path: Path) -> None:
    """With multi-scale, the sizes are spread around the scheduled size (default factors, multiples of 32)."""
    steps, objects = _run(make_cfg, tmp_path, ["data.multiscale=true"])
    early = {size for epoch, size, _ in steps if epoch < 2}
    late = {size for epoch, size, _ in steps if epoch >= 2}
    assert early <= {32} and late <= {32, 64, 96} and len(late) > 1
    assert objects["datamodule"].size_plan.sizes() == [32, 64, 96]


def test_resumed_run_continues_the_schedule(make_cfg, tmp_path: Path) -> None:
    first, objects = _run(make_cfg, tmp_path, ["+callbacks.record.stop_after_epoch=0"], run_name="first")
    assert sorted({(epoch, size) for epoch, size, _ in first}) == [(0, 32)]
    last = Path(objects["cfg"].paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed, _ = _run(make_cfg, tmp_path, [f"ckpt_path={last}"], run_name="resumed")
    assert sorted({(epoch, size) for epoch, size, _ in resumed}) == [(1, 32), (2, 64), (3, 64)]


def test_ddp_ranks_use_the_same_size_at_every_step(tmp_path: Path) -> None:
    """train.py with 2 CPU processes (gloo), a schedule and a 1-hour max_time, rank 1's clock 40 minutes ahead: per
    step both ranks train at the same size, rank 0's (on its own clock rank 1 would be at 67 % of the time budget)."""
    records = tmp_path / "records"
    schedule = ["data.image_size=64", "data.batch_size=2", "data.resolution_schedule=[[0,32],[0.5,64]]",
                "+trainer.max_time=00:01:00:00"]  # fmt: skip
    train_two_ddp_processes(tmp_path, schedule, target(RecordSizesSkewedClock), records)
    steps = [json.loads((records / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(steps[0]) > 0 and steps[0] == steps[1]  # per step: the same epoch, size and batch length
    assert {(epoch, size) for epoch, size, _ in steps[0]} == {(0, 32), (1, 64)}


# ----------------------------------------------------------------------------- who decides the size


def test_the_data_module_builds_the_size_it_is_given_and_never_reads_the_trainer(tmp_path: Path) -> None:
    """The training size flows one way: the loop sets it (set_train_image_size), the data module builds it. A Trainer
    attached at 90 % of its epochs changes nothing on the data side."""
    datamodule = SyntheticDataModule(tmp_path, image_size=64, batch_size=4, num_workers=0,
                                     resolution_schedule=[[0, 32], [0.5, 64]])  # fmt: skip
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.trainer = SimpleNamespace(max_epochs=10, current_epoch=9, max_steps=-1, world_size=1, global_rank=0,
                                         callbacks=[])  # fmt: skip
    assert datamodule.train_size() == 32  # the schedule's first size until the loop says otherwise
    datamodule.set_train_image_size(64)
    images, _ = next(iter(datamodule.train_dataloader()))
    assert datamodule.train_size() == 64 and images.shape[-1] == 64
    with pytest.raises(UserInputError, match="the training image size"):
        datamodule.set_train_image_size(16)


def test_the_resolution_scheduler_sets_each_epochs_size_from_the_progress(tmp_path: Path) -> None:
    """ResolutionScheduler: the size at the start of fit, then at each epoch's end for the next one."""
    datamodule = SyntheticDataModule(tmp_path, image_size=64, resolution_schedule=[[0, 32], [0.5, 64]])
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=SimpleNamespace(ready=5))))
    trainer = SimpleNamespace(datamodule=datamodule, max_epochs=4, current_epoch=0, max_steps=-1, callbacks=[],
                              num_training_batches=5, fit_loop=loop, reload_dataloaders_every_n_epochs=0)  # fmt: skip
    scheduler = ResolutionScheduler()
    scheduler.setup(trainer, None, "fit")
    assert trainer.reload_dataloaders_every_n_epochs == 1
    scheduler.on_fit_start(trainer, None)
    assert datamodule.train_size() == 32
    trainer.current_epoch = 1  # epoch 1 is done: epoch 2 starts at half the epochs
    scheduler.on_train_epoch_end(trainer, None)
    assert datamodule.train_size() == 64
