"""Structured configs of the sweeper (``hydra/sweeper: mobilevit_optuna``), its samplers
(``hydra/sweeper/sampler: tpe | random | grid``) and pruners (``hydra/sweeper/pruner: median | hyperband | none``).

Each sampler and pruner option is the keyword arguments of one Optuna constructor; unset arguments keep Optuna's
defaults. Intermediate values are reported once per epoch, so the pruners' steps are epochs (0-based).
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module outside sys.modules, where
# dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# Set by a job (mobilevit.callbacks.OptunaPruning) to its trial as JSON {storage, study_name, number}, for the DDP
# ranks that Lightning starts by re-running the command line: their sweeper runs that trial's job only.
TRIAL_ENV = "MOBILEVIT_OPTUNA_TRIAL"


@dataclass
class TPESamplerConf:
    """optuna.samplers.TPESampler with Optuna's defaults (any other argument: +hydra.sweeper.sampler.NAME=VALUE)."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10  # random trials before TPE takes over


@dataclass
class RandomSamplerConf:
    """optuna.samplers.RandomSampler."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class GridSamplerConf:
    """optuna.samplers.GridSampler over every value of every searched key (needs a discrete search space: choice,
    range, or int(interval)); the grid is built by the sweeper. n_trials is capped at the grid's size."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: Optional[int] = None


@dataclass
class MedianPrunerConf:
    """optuna.pruners.MedianPruner: stop a trial whose value at an epoch is worse than the median of the earlier
    trials' values at that epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # warm-up: epochs of each trial never pruned
    interval_steps: int = 1


@dataclass
class HyperbandPrunerConf:
    """optuna.pruners.HyperbandPruner (successive halving in brackets); resources are epochs."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # warm-up: epochs of each trial never pruned
    max_resource: Any = "auto"  # epochs of a full trial ("auto": the most epochs a trial has run)
    reduction_factor: int = 3


@dataclass
class NopPrunerConf:
    """optuna.pruners.NopPruner: never prune."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class OptunaSweeperConf:
    """hydra.sweeper: the study, its budget and the search space."""

    _target_: str = "hydra_plugins.mobilevit_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds the sampler and pruner itself (clear errors for bad ones)
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: str = "minimize"  # minimize | maximize the value each job returns
    # null: a journal file, <sweep dir>/optuna.journal. A path: a journal file there (NFS-safe, several machines).
    # A database URL (sqlite:///study.db, postgresql://user:password@host/db, mysql://...): Optuna's RDB storage.
    storage: Optional[str] = None
    study_name: str = "study"
    n_trials: int = 20  # the study's total: trials that completed, were pruned or are running (failed ones are replaced)
    n_jobs: int = 1  # trials running at once (with a launcher that runs jobs in parallel: joblib, SLURM)
    max_failure_rate: float = 0.0  # stop the sweep when more than this share of its trials fails
    params: Optional[dict[str, Any]] = None  # key: search-space expression or fixed value


def register_configs() -> None:
    """Put the sweeper, sampler and pruner configs into Hydra's ConfigStore."""
    store = ConfigStore.instance()
    provider = "mobilevit_optuna_sweeper"
    store.store(group="hydra/sweeper", name="mobilevit_optuna", node=OptunaSweeperConf, provider=provider)
    for name, node in {"tpe": TPESamplerConf, "random": RandomSamplerConf, "grid": GridSamplerConf}.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider=provider)
    for name, node in {"median": MedianPrunerConf, "hyperband": HyperbandPrunerConf, "none": NopPrunerConf}.items():
        store.store(group="hydra/sweeper/pruner", name=name, node=node, provider=provider)


register_configs()
