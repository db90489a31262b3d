"""Hyper-parameter search with the Optuna sweeper, and the SLURM launcher config (composed, never launched)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch.nn.functional as F
import yaml
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, subprocess_env
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

SEARCHED = {"optimizer.lr", "optimizer.weight_decay", "module.label_smoothing", "model.drop_rate"}


@pytest.mark.parametrize("experiment", [None, "quickstart", "flowers102_stratified", "flowers102_paper"])
def test_optuna_search_space_fits_the_config(experiment: str | None, make_cfg) -> None:
    cfg = make_cfg(["hparams_search=optuna", *([f"experiment={experiment}"] if experiment else [])])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.n_trials == 20
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.optimized_metric == "val/acc"
    assert set(sweeper.params) == SEARCHED
    for key in sweeper.params:  # every searched key exists, so each trial's override applies
        assert OmegaConf.select(cfg, key, default=None) is not None, key


class ScriptedValidation(Callback):
    """Validation predictions scripted from the targets: all right after the first epoch, all wrong after the others
    (val/acc 1.0, then 0.0), so a trial's best value and its final value differ."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        shift = 0 if trainer.current_epoch == 0 and not trainer.sanity_checking else 1
        wanted = (batch[1] + shift) % pl_module.num_classes
        self.hook = pl_module.register_forward_hook(lambda module, args, out: 10.0 * F.one_hot(wanted, out.shape[1]))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.hook.remove()


def test_optuna_sweep_runs_two_trials(tmp_path: Path, shared_data_dir: Path) -> None:
    """Two trials of 2 epochs each, whose val/acc is 1.0 after epoch 1 and 0.0 after epoch 2: the sweep optimises
    each trial's best value (1.0), not its final one."""
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT / "tests")}  # this module, for the scripted validation
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={shared_data_dir}",
            *TINY_SYNTHETIC,
            *FAST_TRAIN,
            "model=mobilevit_xxs",
            "trainer.max_epochs=2",
            "+trainer.limit_train_batches=2",
            "logger=none",
            "test=false",
            f"+callbacks.scripted._target_={__name__}.ScriptedValidation",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    trials = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    assert trials == ["0", "1"]
    sampled = []
    for trial in trials:
        overrides = yaml.safe_load((sweep_dir / trial / ".hydra" / "overrides.yaml").read_text())
        params = dict(item.split("=", 1) for item in overrides if item.split("=", 1)[0] in SEARCHED)
        assert set(params) == SEARCHED
        sampled.append(params)
        assert (sweep_dir / trial / "checkpoints" / "last.ckpt").is_file()
    assert sampled[0] != sampled[1]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == SEARCHED
    for trial in trials:
        metrics = json.loads((sweep_dir / trial / "summary.json").read_text())["metrics"]
        assert metrics["val/acc"] == 0.0 and metrics["val/acc_best"] == 1.0
    assert results["best_value"] == 1.0  # the sweep returned each trial's best val/acc, not the final one


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_slurm_launcher_composes(launcher: str, make_cfg) -> None:
    cfg = make_cfg([f"hydra/launcher={launcher}", "experiment=flowers102_paper"])
    node = cfg.hydra.launcher
    launcher_class = hydra.utils.get_class(node._target_)
    assert launcher_class.__name__ == "SlurmLauncher"
    assert node.submitit_folder.startswith(cfg.hydra.sweep.dir)
    if launcher == "slurm":  # the project preset: one task per GPU, a day of wall time
        assert node.gpus_per_node == node.tasks_per_node == 1 and node.timeout_min == 1440 and node.cpus_per_task == 8
