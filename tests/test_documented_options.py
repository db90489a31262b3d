"""Options and commands the docs promise, each run for real: `report --readme` through main, `evaluate.py -m` over
`data.eval_image_size`, `predict output=null`, `trainer.max_steps` as the schedules' budget, the resume of a
`max_time` run, `trainer.sync_batchnorm` and the Makefile targets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, compose_config, subprocess_env
from lightning.pytorch.callbacks import Timer

from mobilevit.report import README_BEGIN, README_END, find_summaries, main, markdown_table
from mobilevit.predict import predict
from train import train

QUICK = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "callbacks.reports=null", "test=false"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    base = tmp_path_factory.mktemp("documented")
    cfg = compose_config(
        "train", base, [*QUICK, "trainer.max_epochs=1", "+trainer.limit_train_batches=2"], data_dir=shared_data_dir
    )
    _, objects = train(cfg)
    return Path(objects["best_ckpt"])


def test_report_readme_through_main_rewrites_only_the_table(tmp_path: Path, capsys) -> None:
    """`python -m mobilevit.report docs/runs --readme README.md` (as README.md says): the table between the markers is
    the one generated from docs/runs, everything else stays as it was."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\nintro\n{README_BEGIN}\n| stale | table |\n{README_END}\nafter the table\n")
    runs = str(ROOT / "docs" / "runs")
    assert main([runs, "--readme", str(readme), "--plot", str(tmp_path / "results.png")]) == 0
    table = markdown_table(find_summaries([runs]))
    assert readme.read_text() == f"# Title\nintro\n{README_BEGIN}\n{table}{README_END}\nafter the table\n"
    assert f"README table: {readme}" in capsys.readouterr().out


def test_evaluate_multirun_over_eval_image_sizes(checkpoint: Path, tmp_path: Path) -> None:
    """`python evaluate.py -m ckpt_path=... data.split=val data.eval_image_size=32,64` (docs/training.md): one job per
    size, each evaluated at its size."""
    result = subprocess.run(
        [sys.executable, "evaluate.py", "-m", f"ckpt_path={checkpoint}", "data.split=val",
         "data.eval_image_size=32,64", "trainer=cpu", "trainer.precision=32-true",
         "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "eval" / "multiruns").iterdir()
    jobs = {}
    for job in ("0", "1"):
        config = yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())
        jobs[config["data"]["eval_image_size"]] = json.loads((sweep / job / "metrics.json").read_text())
    assert sorted(jobs) == [32, 64]
    assert all(metrics["split"] == "val" and metrics["num_images"] == 12 for metrics in jobs.values())
    assert jobs[32]["loss"] != jobs[64]["loss"]  # the size reached the data: other pixels, another loss


def test_predict_output_null_writes_no_csv(checkpoint: Path, make_cfg, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    for output, written in (("null", False), (None, True)):  # None: the default, predictions.csv in the run directory
        cfg = make_cfg([f"ckpt_path={checkpoint}", f"inputs={tmp_path / 'red.png'}", "device=cpu",
                        *([f"output={output}"] if output else [])], "predict", run_name=f"predict_{output}")  # fmt: skip
        run = predict(cfg)
        assert len(run.predictions) == 1
        assert (run.output is not None) == written
        assert (Path(cfg.paths.output_dir) / "predictions.csv").is_file() == written


class RecordLearningRates(L.Callback):
    """The learning rate of every optimizer step, and whether training should stop after the first epoch."""

    def __init__(self, stop_after_first_epoch: bool = False) -> None:
        self.lrs: list[float] = []
        self.stop_after_first_epoch = stop_after_first_epoch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stop_after_first_epoch:
            trainer.should_stop = True


def test_max_steps_is_the_budget_of_the_schedule(make_cfg, monkeypatch) -> None:
    """`trainer.max_steps=6` with 1000 epochs allowed: the linear decay spans the 6 steps (1, 5/6, ..., 1/6)."""
    import train as train_script

    recorder = RecordLearningRates()
    monkeypatch.setattr(train_script, "instantiate_callbacks", lambda cfg, **options: [recorder])
    cfg = make_cfg([*QUICK, "trainer.max_epochs=1000", "trainer.max_steps=6", "scheduler=linear",
                    "scheduler.warmup_epochs=0", "optimizer.lr=0.01"])  # fmt: skip
    _, objects = train(cfg)
    assert objects["trainer"].global_step == 6
    assert recorder.lrs == pytest.approx([0.01 * (1 - step / 6) for step in range(6)], abs=1e-9)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert summary["stopped"]["reason"] == "max_steps"


def test_a_max_time_run_resumes_with_the_time_it_had_spent(make_cfg, monkeypatch) -> None:
    """A run with a 6 s `trainer.max_time` is stopped after its first epoch; resumed from last.ckpt with the same
    overrides, it continues the same 6 s budget (the timer restarts from the time already spent), stops by max_time
    and its learning rate has decayed to about 0 by then."""
    import train as train_script

    budget = [*QUICK, "trainer.max_epochs=10000", "+trainer.max_time=00:00:00:06", "scheduler=linear",
              "scheduler.warmup_epochs=0", "optimizer.lr=0.01", "trainer.check_val_every_n_epoch=1000"]  # fmt: skip
    stopper = RecordLearningRates(stop_after_first_epoch=True)
    real = train_script.instantiate_callbacks
    monkeypatch.setattr(train_script, "instantiate_callbacks", lambda cfg, **options: [*real(cfg, **options), stopper])
    first = make_cfg(budget, run_name="first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    spent = torch.load(last, weights_only=True)["callbacks"]["Timer"]["time_elapsed"]["train"]
    assert 0 < spent < 6
    assert stopper.lrs[-1] > 0.01 * (1 - spent / 6) - 1e-3  # the decay so far followed the time spent

    resumer = RecordLearningRates()
    monkeypatch.setattr(train_script, "instantiate_callbacks", lambda cfg, **options: [*real(cfg, **options), resumer])
    resumed = make_cfg([*budget, f"ckpt_path={last}"], run_name="resumed")
    _, objects = train(resumed)
    timer = next(callback for callback in objects["trainer"].callbacks if isinstance(callback, Timer))
    assert timer._offset == pytest.approx(spent)  # restored: the budget is not restarted
    assert timer.time_elapsed("train") >= 6
    assert resumer.lrs[0] <= stopper.lrs[-1] + 1e-9  # continues the decay instead of starting it again
    assert objects["trainer"].lr_scheduler_configs[0].scheduler.get_last_lr()[0] <= 0.01 * 0.15
    summary = json.loads((Path(resumed.paths.output_dir) / "summary.json").read_text())
    assert summary["stopped"]["reason"] == "max_time"


def test_sync_batchnorm_converts_every_batchnorm(make_cfg) -> None:
    """`trainer=ddp trainer.sync_batchnorm=true` (docs: on GPUs): the Trainer converts every BatchNorm of the network
    to SyncBatchNorm when the strategy sets the model up (the conversion DDP applies before training)."""
    import hydra

    cfg = make_cfg([*QUICK, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.sync_batchnorm=true"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    net = hydra.utils.instantiate(cfg.model, num_classes=3)
    batchnorms = sum(isinstance(module, torch.nn.BatchNorm2d) for module in net.modules())
    assert batchnorms > 0
    converted = trainer.strategy._layer_sync.apply(net)
    assert sum(isinstance(module, torch.nn.SyncBatchNorm) for module in converted.modules()) == batchnorms
    plain = make_cfg([*QUICK, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"])
    assert hydra.utils.instantiate(plain.trainer, logger=False, callbacks=[]).strategy._layer_sync is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SyncBatchNorm trains on GPUs only")
def test_sync_batchnorm_trains_on_a_gpu(make_cfg) -> None:
    cfg = make_cfg([*QUICK, "trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=1", "trainer.sync_batchnorm=true",
                    "trainer.max_epochs=1", "+trainer.limit_train_batches=2"])  # fmt: skip
    _, objects = train(cfg)
    net = objects["model"].net
    assert any(isinstance(module, torch.nn.SyncBatchNorm) for module in net.modules())
    assert objects["trainer"].global_step == 2


def _make(target: str, *args: str, dry_run: bool = False) -> subprocess.CompletedProcess:
    """``make <target>`` with this interpreter as ``PY`` and its environment taken as installed (``-o``: no .venv is
    built); ``dry_run``: print the commands only."""
    keep_venv = [] if target == "install" else ["-o", ".venv/installed"]
    command = ["make", *keep_venv, f"PY={sys.executable}", *(["-n", "-B"] if dry_run else []), target, *args]
    return subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_targets(tmp_path: Path, shared_data_dir: Path) -> None:
    """`make quickstart` and `make train` run train.py (with ARGS, here a tiny budget); `make test` runs the suite;
    `make install` builds .venv from pyproject.toml; `make clean` removes logs/."""
    args = " ".join([*TINY_SYNTHETIC, "trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                     "+trainer.limit_val_batches=1", "test=false", "logger=none", "callbacks=none",
                     "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path / 'logs'}",
                     f"paths.data_dir={shared_data_dir}"])  # fmt: skip
    for target in ("quickstart", "train"):
        done = _make(target, f"ARGS={args}")
        assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2 and all((run / "summary.json").is_file() for run in runs)
    experiments = [json.loads((run / "summary.json").read_text())["experiment"] for run in runs]
    assert sorted(experiments) == ["-", "quickstart"]  # summary.json writes "-" for a run without experiment=
    assert _make("test", dry_run=True).stdout.split() == [sys.executable, "-m", "pytest", "-q"]
    install = _make("install", dry_run=True).stdout.replace('"', "").splitlines()
    assert install == ["python3 -m venv .venv", ".venv/bin/pip install --upgrade pip",
                       ".venv/bin/pip install -e .[test]", "touch .venv/installed"]  # fmt: skip
    assert _make("clean", dry_run=True).stdout.split() == ["rm", "-rf", "logs", ".pytest_cache"]
