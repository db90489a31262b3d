"""train.py end to end on tiny synthetic data (and briefly on real Flowers-102 when present)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, subprocess_env
from hydra.errors import InstantiationException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mobilevit.errors import UserInputError
from mobilevit.utils import exit_on_user_error
from train import optimized_metric, train

SHORT_RUN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


@pytest.mark.parametrize("model", ["mobilevit_xxs", "mobilevitv2_050"])
def test_fast_dev_run(model: str, make_cfg) -> None:
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, f"model={model}", "+trainer.fast_dev_run=true"])
    metrics, objects = train(cfg)
    for name in ("train/loss", "val/loss", "val/acc", "val/acc_top5", "val/f1", "test/acc", "test/acc_top5", "test/f1"):
        assert name in metrics and math.isfinite(metrics[name]), name
    assert 0.0 <= metrics["val/acc"] <= metrics["val/acc_top5"] <= 1.0
    assert objects["trainer"].global_step == 1
    assert objects["model"].net.num_classes == 3


def test_train_writes_checkpoints_and_logs(make_cfg) -> None:
    cfg = make_cfg(
        [
            *TINY_SYNTHETIC,
            *FAST_TRAIN,
            "model=mobilevit_xxs",
            *SHORT_RUN,
            "logger=tensorboard",
            "trainer.log_every_n_steps=1",
        ]
    )
    metrics, objects = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    best = objects["best_ckpt"]
    assert best and Path(best).is_file() and Path(best).parent == run_dir / "checkpoints"
    # TensorBoard: scalars, the HPARAMS tab with the final metrics, and hparams.yaml.
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "val/acc", "val/f1", "test/acc", "lr-AdamW/decay", "hp/val_acc_best"} <= scalars
    assert events.Scalars("hp/test_acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert "mobilevit_xxs" in (run_dir / "tensorboard" / "hparams.yaml").read_text()
    assert "val/acc_best" in metrics and "test/acc" in metrics
    assert optimized_metric(cfg, metrics) == pytest.approx(metrics["val/acc_best"])
    # Checkpoints hold plain containers only: they load without unpickling arbitrary objects.
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    stored = checkpoint["hyper_parameters"]
    assert stored["cfg"]["model"]["name"] == "mobilevit_xxs" and stored["num_classes"] == 3
    assert stored["class_names"] == objects["datamodule"].class_names
    assert checkpoint["lr_schedulers"] and checkpoint["optimizer_states"]


def test_resume_from_last_continues_global_step(make_cfg) -> None:
    common = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=csv", "test=false"]
    first_cfg = make_cfg([*common, *SHORT_RUN], run_name="first")
    _, first = train(first_cfg)
    assert first["trainer"].global_step == 2
    last = Path(first_cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file()

    second_cfg = make_cfg(
        [
            *common,
            "trainer.max_epochs=2",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "ckpt_path=last",
        ],
        run_name="second",
    )
    _, second = train(second_cfg)
    trainer = second["trainer"]
    assert trainer.current_epoch == 2 and trainer.global_step == 4  # continued, not restarted
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 4


def test_bad_ckpt_path_is_a_user_error(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, f"ckpt_path={tmp_path / 'missing.ckpt'}"])
    with pytest.raises(UserInputError, match="does not exist"):
        train(cfg)
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "ckpt_path=last"])
    with pytest.raises(UserInputError, match="no checkpoints/last.ckpt"):
        train(cfg)


def test_user_error_exits_with_code_2_and_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        try:
            raise UserInputError("data.root is required")
        except UserInputError as error:  # as wrapped by hydra.utils.instantiate
            raise InstantiationException("Error in call to target") from error
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "Error: data.root is required"
    with pytest.raises(RuntimeError), exit_on_user_error():  # other errors keep their traceback
        raise RuntimeError("bug")


def _run_script(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


def test_multirun_writes_one_dir_per_job(tmp_path: Path, shared_data_dir: Path) -> None:
    result = _run_script(
        [
            "train.py",
            "-m",
            "model=mobilevit_xxs,mobilevitv2_050",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={shared_data_dir}",
            *TINY_SYNTHETIC,
            *FAST_TRAIN,
            *SHORT_RUN,
            "logger=csv",
            "test=false",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    assert jobs == ["0", "1"]
    for job, model in zip(jobs, ["mobilevit_xxs", "mobilevitv2_050"]):
        job_dir = sweep_dir / job
        assert f"model={model}" in (job_dir / ".hydra" / "overrides.yaml").read_text()
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        assert (job_dir / "csv" / "metrics.csv").is_file()


def test_missing_flowers_offline_gives_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run_script(
        [
            "train.py",
            "data=flowers102",
            f"data.root={empty}",
            "data.num_workers=0",
            "model=mobilevit_xxs",
            f"paths.log_dir={tmp_path / 'logs'}",
            *FAST_TRAIN,
        ]
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "Flowers-102 is not available" in result.stderr and "experiment=quickstart" in result.stderr
    assert str(empty) in result.stderr


def test_short_real_flowers_run_learns(make_cfg, flowers_root: Path) -> None:
    """Train briefly on the real data (64 px) and check validation accuracy is far above 1/102 chance."""
    cfg = make_cfg(
        [
            "experiment=flowers102_cpu",
            f"data.root={flowers_root}",
            *FAST_TRAIN,
            "data.image_size=64",
            "data.num_workers=0",
            "data.batch_size=32",
            "augmentation.scale=[0.35,1.0]",
            "trainer.check_val_every_n_epoch=1",
            "module.label_smoothing=0.0",
            "optimizer.lr=3e-3",
            "scheduler.warmup_epochs=0.5",
            "trainer.max_epochs=6",
            "logger=csv",
            "test=false",
        ]
    )
    metrics, objects = train(cfg)
    assert objects["datamodule"].num_classes == 102
    assert metrics["val/acc_best"] > 0.04, metrics  # 4x chance (1/102 = 0.0098); ~0.10 measured


def test_ckpt_path_last_picks_the_newest_of_several_runs(tmp_path: Path) -> None:
    from mobilevit.utils import resolve_ckpt_path

    runs = tmp_path / "train"
    paths = {}
    for age, name in ((300, "runs/b_old"), (100, "runs/a_newest"), (200, "multiruns/2026/0"), (0, "runs/current")):
        path = runs / name / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
        paths[name] = str(path)
    # The newest by modification time (not by name), the current run's own directory left out.
    assert resolve_ckpt_path("last", runs, exclude=runs / "runs" / "current") == paths["runs/a_newest"]
    assert resolve_ckpt_path("last", runs) == paths["runs/current"]
    os.utime(paths["multiruns/2026/0"], None)  # touched now: a multirun job is a run too
    assert resolve_ckpt_path("last", runs, exclude=runs / "runs" / "current") == paths["multiruns/2026/0"]


def test_two_runs_started_together_get_two_directories(tmp_path: Path, shared_data_dir: Path) -> None:
    """Two train.py processes whose run directory names collide (as two runs started in the same second do): each
    claims its own, with its own checkpoint, summary and log."""
    base = tmp_path / "logs" / "train" / "runs" / "2026-12-03_12-00-00"
    command = [
        sys.executable, "train.py", f"hydra.run.dir=${{claim_run_dir:{base}}}", f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={shared_data_dir}", *TINY_SYNTHETIC, *FAST_TRAIN, *SHORT_RUN, "model=mobilevit_xxs",
        "logger=none", "test=false", "callbacks.reports=null",
    ]  # fmt: skip
    runs = [subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stderr=subprocess.PIPE, text=True) for _ in "ab"]
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
    directories = sorted(path.name for path in base.parent.iterdir())
    assert directories == [base.name, f"{base.name}_2"]
    for name in directories:
        assert (base.parent / name / "summary.json").is_file()
        assert (base.parent / name / "checkpoints" / "last.ckpt").is_file()
        assert (base.parent / name / "train.log").read_text().count("Estimated time left") == 1
