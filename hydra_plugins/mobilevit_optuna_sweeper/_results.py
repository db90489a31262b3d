"""What a sweep leaves in its directory for people: optimization_results.yaml (best parameters and value),
trials.csv (every trial), and Optuna's matplotlib plots as PNG files (also logged to TensorBoard on request)."""

from __future__ import annotations

import csv
import logging
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

log = logging.getLogger(__name__)

PLOTS: dict[str, str] = {  # file stem: optuna.visualization.matplotlib function
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
}
TRIAL_COLUMNS = ("number", "state", "value")
RUN_COLUMNS = ("epochs", "pruned_epoch", "wall_time_s", "datetime_start")


def write_results(study: optuna.Study, sweep_dir: str | Path, storage: str, tensorboard: bool = False) -> list[Path]:
    """Write the result files of ``study`` into ``sweep_dir``; returns their paths. Plots that cannot be drawn yet
    (e.g. importances before two trials completed) are skipped with a logged reason."""
    sweep_dir = Path(sweep_dir)
    trials = study.get_trials(deepcopy=False)
    written = [_write_summary(study, trials, sweep_dir / "optimization_results.yaml", storage)]
    written.append(_write_trials_csv(trials, sweep_dir / "trials.csv"))
    figures = _plots(study)
    for stem, figure in figures.items():
        path = sweep_dir / f"{stem}.png"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        written.append(path)
    if tensorboard and figures:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(sweep_dir / "tensorboard")) as writer:
            for stem, figure in figures.items():
                writer.add_figure(f"optuna/{stem}", figure, global_step=len(trials))
        log.info(f"Plots logged to TensorBoard: tensorboard --logdir {sweep_dir / 'tensorboard'}")
    _close(figures.values())
    log.info(f"Sweep results in {sweep_dir}: " + ", ".join(path.name for path in written))
    return written


def _write_summary(study: optuna.Study, trials: list[optuna.trial.FrozenTrial], path: Path, storage: str) -> Path:
    counts = Counter(trial.state.name for trial in trials)
    completed = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    best = study.best_trial if completed else None
    if best is None:
        log.warning("No trial completed yet: optimization_results.yaml has no best parameters")
    results: dict[str, Any] = {
        "name": "optuna",
        "best_params": dict(best.params) if best else {},
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "direction": study.direction.name.lower(),
        "study_name": study.study_name,
        "storage": storage,
        "trials": dict(sorted(counts.items())),
    }
    OmegaConf.save(OmegaConf.create(results), path)
    return path


def _write_trials_csv(trials: list[optuna.trial.FrozenTrial], path: Path) -> Path:
    params: list[str] = []
    for trial in trials:
        params += [name for name in trial.params if name not in params]
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*TRIAL_COLUMNS, *params, *RUN_COLUMNS])
        for trial in trials:
            wall = trial.duration.total_seconds() if trial.duration else None
            started = trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None
            row = [trial.number, trial.state.name, trial.value if trial.values else None]
            row += [trial.params.get(name) for name in params]
            row += [trial.user_attrs.get("epochs"), trial.user_attrs.get("pruned_epoch"), wall, started]
            writer.writerow(["" if value is None else value for value in row])
    return path


def _plots(study: optuna.Study) -> dict[str, Any]:
    """Optuna's matplotlib figures of the study, by file stem."""
    from optuna.visualization import matplotlib as plots

    figures: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for stem, name in PLOTS.items():
            plot: Callable[..., Any] = getattr(plots, name)
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as error:
                log.info(f"{stem}.png skipped: {error}")
                continue
            axes = axes.flat[0] if hasattr(axes, "flat") else axes
            figures[stem] = axes.figure
    return figures


def _close(figures: Any) -> None:
    import matplotlib.pyplot as plt

    for figure in figures:
        plt.close(figure)
