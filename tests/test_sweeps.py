"""Hyper-parameter search with the Optuna sweeper, and the SLURM launcher config (composed, never launched)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import yaml
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, subprocess_env
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


def test_optuna_sweep_runs_two_trials(tmp_path: Path, shared_data_dir: Path) -> None:
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
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "logger=none",
            "test=false",
        ],
        cwd=ROOT,
        env=subprocess_env(),
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
    best = max(json.loads((sweep_dir / t / "summary.json").read_text())["metrics"]["val/acc_best"] for t in trials)
    assert results["best_value"] == pytest.approx(best)  # the sweep returned each trial's best val/acc


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_slurm_launcher_composes(launcher: str, make_cfg) -> None:
    cfg = make_cfg([f"hydra/launcher={launcher}", "experiment=flowers102_paper"])
    node = cfg.hydra.launcher
    launcher_class = hydra.utils.get_class(node._target_)
    assert launcher_class.__name__ == "SlurmLauncher"
    assert node.submitit_folder.startswith(cfg.hydra.sweep.dir)
    if launcher == "slurm":  # the project preset: one task per GPU, a day of wall time
        assert node.gpus_per_node == node.tasks_per_node == 1 and node.timeout_min == 1440 and node.cpus_per_task == 8
