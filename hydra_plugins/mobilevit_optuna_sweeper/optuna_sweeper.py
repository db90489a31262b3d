"""The Hydra Sweeper plugin class (``hydra/sweeper=mobilevit_optuna``); Optuna is imported when a sweep starts."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.mobilevit_optuna_sweeper import config  # noqa: F401 - registers the configs


class OptunaSweeper(Sweeper):
    """Hyper-parameter search with an Optuna study kept in a storage: resumable, parallel, with pruning.

    Arguments: see :class:`hydra_plugins.mobilevit_optuna_sweeper.config.OptunaSweeperConf`.
    """

    def __init__(self, **kwargs: Any) -> None:
        from hydra_plugins.mobilevit_optuna_sweeper._sweeper import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
