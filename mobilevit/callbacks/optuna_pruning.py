"""Report the monitored metric to this run's Optuna trial after every validation, and stop the run when the study's
pruner says the trial is clearly worse than the others (``hparams_search=optuna`` adds it to every trial)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import lightning as L
from lightning.pytorch import Callback

from hydra_plugins.mobilevit_optuna_sweeper.config import TRIAL_ENV
from mobilevit.errors import UserInputError

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    """Optuna pruning for a run that is a trial of a study kept in a storage (journal file or database).

    Args:
        monitor: the metric reported, e.g. ``val/acc`` (``optimized_metric``), once per validation with the 0-based
            epoch as the step (so pruner warm-ups count epochs).
        storage: the study's storage (journal file path or database URL), study_name, trial_number: the trial, as
            the sweeper passes them (``optuna_trial.*`` overrides). Without a trial number the callback does nothing.

    When the pruner says stop, ``trainer.should_stop`` ends training after this epoch (last.ckpt is written as
    usual), :attr:`pruned` is True (train.py records ``stopped.reason: pruned``), and the trial gets the user
    attribute ``pruned_epoch``, from which the sweeper records it as PRUNED. Under DDP, rank 0 reports and its
    decision is broadcast to every rank. A monitored metric that the run does not log stops it at the first
    validation (the sanity check, when enabled) with a UserInputError.
    """

    def __init__(
        self,
        monitor: str,
        storage: str | None = None,
        study_name: str | None = None,
        trial_number: int | None = None,
    ) -> None:
        self.monitor = monitor
        self.storage = storage
        self.study_name = study_name
        self.trial_number = trial_number
        self.pruned = False
        self.pruned_epoch: int | None = None
        self._trial: Any = None
        if trial_number is not None:
            if not storage or not study_name:
                raise UserInputError(
                    "callbacks.optuna_pruning: trial_number is set without storage and study_name (the sweeper "
                    "passes all three as optuna_trial.storage, optuna_trial.study_name and optuna_trial.number)."
                )
            # DDP ranks that Lightning starts re-run the command line: their sweeper runs this trial, then follows
            # this process (job_pid) from trial to trial. Recorded before fit: the ranks start when fit starts.
            os.environ[TRIAL_ENV] = json.dumps({"storage": storage, "study_name": study_name, "number": trial_number})
            if os.environ.get("LOCAL_RANK", "0") == "0":
                from hydra_plugins.mobilevit_optuna_sweeper._storage import record_job_process

                record_job_process(storage, study_name, trial_number)

    @property
    def active(self) -> bool:
        """Whether this run is a trial (else the callback does nothing)."""
        return self.trial_number is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.active or stage != "fit":
            return
        if trainer.is_global_zero:
            from hydra_plugins.mobilevit_optuna_sweeper._storage import open_trial

            self._trial = open_trial(self.storage, self.study_name, self.trial_number)
            log.info(f"Optuna trial {self.trial_number}: reporting {self.monitor} after every validation")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = sorted(name for name in trainer.callback_metrics if not name.startswith("train/"))
            raise UserInputError(
                f"callbacks.optuna_pruning.monitor={self.monitor!r} (optimized_metric) is not logged by this run; "
                f"logged at validation: {', '.join(logged) or 'nothing'}."
            )
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        prune = False
        if trainer.is_global_zero:
            self._trial.report(float(value), step=epoch)
            prune = self._trial.should_prune()
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if not prune:
            return
        trainer.should_stop = True
        self.pruned, self.pruned_epoch = True, epoch
        if trainer.is_global_zero:
            self._trial.set_user_attr("pruned_epoch", epoch)
            log.info(f"Optuna trial {self.trial_number} pruned at epoch {epoch} ({self.monitor}={float(value):.4f})")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and trainer.is_global_zero and self._trial is not None:
            self._trial.set_user_attr("epochs", trainer.current_epoch)
