"""The sweep loop: ask Optuna for a trial, launch it as a Hydra job named after its trial number, tell the outcome.

The study lives in a storage (a journal file in the sweep directory by default), so the same command with the same
``hydra.sweep.dir`` continues it, and several sweeper processes may work on one study at once: trial numbers come
from the storage, and job directories are named after them. Each job gets ``optuna_trial.{storage,study_name,
number}`` as overrides, so the pruning callback (mobilevit.callbacks.OptunaPruning) can report into its trial from
whichever process runs it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.mobilevit_optuna_sweeper._results import write_results
from hydra_plugins.mobilevit_optuna_sweeper.config import TRIAL_ENV
from hydra_plugins.mobilevit_optuna_sweeper._search_space import SearchSpace, format_value, parse_search_space
from hydra_plugins.mobilevit_optuna_sweeper._storage import open_storage, storage_url
from mobilevit.errors import UserInputError
from mobilevit.utils import exit_on_user_error

log = logging.getLogger(__name__)

# States that use up the budget: a failed trial is replaced.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
SAMPLERS = "hydra/sweeper/sampler=tpe | random | grid"
PRUNERS = "hydra/sweeper/pruner=median | hyperband | none"


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Sample ``name`` from ``distribution`` with the trial's public suggest API."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    raise TypeError(f"unsupported distribution {distribution!r}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def find_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """The trial numbered ``number`` (fresh from the storage)."""
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            return trial
    raise KeyError(f"trial {number} is not in study {study.study_name!r}")


class OptunaSweeperImpl(Sweeper):
    """See hydra_plugins.mobilevit_optuna_sweeper.config.OptunaSweeperConf for the arguments."""

    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: str,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
    ) -> None:
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # ------------------------------------------------------------------------------------------------- checks

    def _check_settings(self) -> None:
        if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
            raise UserInputError(
                "hydra-optuna-sweeper is installed: its configs clash with this project's Optuna sweeper "
                "(hydra/sweeper=mobilevit_optuna). Remove it: pip uninstall hydra-optuna-sweeper"
            )
        if self.direction not in ("minimize", "maximize"):
            raise UserInputError(f"hydra.sweeper.direction={self.direction!r}: choose minimize or maximize.")
        for key, value, minimum in (("n_trials", self.n_trials, 1), ("n_jobs", self.n_jobs, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise UserInputError(f"hydra.sweeper.{key}={value!r}: must be an integer >= {minimum}.")
        if not 0.0 <= float(self.max_failure_rate) <= 1.0:
            raise UserInputError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate!r}: must be in [0, 1].")

    @staticmethod
    def _build(cfg: DictConfig, key: str, base: type, choices: str) -> Any:
        target = cfg.get("_target_") if isinstance(cfg, DictConfig) else cfg
        try:
            built = instantiate(cfg)
        except Exception as error:  # noqa: BLE001 - a bad class path or argument
            cause = error.__cause__ or error
            raise UserInputError(
                f"hydra.sweeper.{key}: cannot build {target!r} ({str(cause).strip().splitlines()[0]}). Valid: "
                f"{choices}, or the class path of an Optuna {key} with its arguments."
            ) from None
        made = built.func if isinstance(built, functools.partial) else built
        if not (isinstance(made, base) or (isinstance(made, type) and issubclass(made, base))):
            raise UserInputError(f"hydra.sweeper.{key}._target_={target!r} is not an Optuna {key}. Valid: {choices}.")
        return built

    # ------------------------------------------------------------------------------------------------- sweep

    def sweep(self, arguments: list[str]) -> None:
        with exit_on_user_error():
            self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> None:
        self._check_settings()
        space = parse_search_space(self.params, arguments)
        n_trials = self.n_trials
        sampler = self._build(self.sampler_cfg, "sampler", optuna.samplers.BaseSampler, SAMPLERS)
        if isinstance(sampler, functools.partial):  # the grid sampler: built from the search space
            grid = space.grid()
            sampler = sampler(search_space=grid)
            size = math.prod(len(values) for values in grid.values())
            if size < n_trials:
                log.info(f"Grid sampler: {size} points, so n_trials={size} (of {n_trials})")
                n_trials = size
        pruner = self._build(self.pruner_cfg, "pruner", optuna.pruners.BasePruner, PRUNERS)
        self.url = storage_url(self.storage, self.sweep_dir)
        storage = open_storage(self.url)

        marker = os.environ.get(TRIAL_ENV)
        if marker and os.environ.get("LOCAL_RANK", "0") != "0":
            self._run_other_rank(storage, json.loads(marker))
            return

        try:
            study = optuna.create_study(
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                study_name=self.study_name,
                direction=self.direction,
                load_if_exists=True,
            )
        except ValueError as error:  # e.g. the stored study optimises in the other direction
            raise UserInputError(f"hydra.sweeper.study_name={self.study_name!r}: {error}") from None
        if study.direction.name.lower() != self.direction:
            raise UserInputError(
                f"hydra.sweeper.direction={self.direction}: study {self.study_name!r} in {self.url} was created to "
                f"{study.direction.name.lower()}; use that direction or another study_name."
            )
        log.info(f"Study {self.study_name!r} in {self.url}: {len(study.trials)} trials so far, budget {n_trials}")
        self._fail_interrupted_trials(study)
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        self._run_trials(study, space, n_trials)
        write_results(study, self.sweep_dir, self.url, tensorboard=self._tensorboard_configured())

    def _tensorboard_configured(self) -> bool:
        loggers = self.config.get("logger") or {}
        return any(
            isinstance(entry, DictConfig) and "TensorBoardLogger" in str(entry.get("_target_", ""))
            for entry in loggers.values()
        )

    def _fail_interrupted_trials(self, study: optuna.Study) -> None:
        """Mark FAIL the trials left RUNNING by a sweeper process of this machine that no longer exists (killed,
        crashed): they are replaced. Trials of live processes, or of other machines, are left as they are."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get("sweeper") or {}
            if owner.get("host") != self.owner["host"]:
                log.warning(
                    f"Trial {trial.number} is running on {owner.get('host', 'an unknown machine')}: left as it is "
                    "(its sweeper's machine tells whether it is alive)"
                )
                continue
            if _process_alive(int(owner["pid"])):
                continue
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):  # another sweeper failed it first
                continue
            log.warning(f"Trial {trial.number} was interrupted (its sweeper, pid {owner['pid']}, is gone): failed")

    def _run_other_rank(self, storage: optuna.storages.BaseStorage, marker: dict[str, Any]) -> None:
        """In a DDP rank > 0 that Lightning started by re-running the command: run the job of rank 0's trial (its
        overrides from the study) in the same directory, without touching the study. Lightning starts these
        processes once per job process, so this one then follows its parent from trial to trial until it ends."""
        study = optuna.load_study(study_name=marker["study_name"], storage=storage)
        parent = os.getppid()
        number: int | None = int(marker["number"])
        while number is not None:
            overrides = find_trial(study, number).user_attrs["overrides"]
            self.launcher.launch([overrides], initial_job_idx=number)
            number = self._next_trial_of(study, parent, after=number)

    @staticmethod
    def _next_trial_of(study: optuna.Study, parent: int, after: int) -> int | None:
        """The number of the next trial whose job process is ``parent`` (user attribute ``job_pid``, recorded by
        OptunaPruning); None once ``parent`` has ended."""
        while os.getppid() == parent:
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.number > after and trial.user_attrs.get("job_pid") == parent:
                    return trial.number
            time.sleep(0.5)
        return None

    # ------------------------------------------------------------------------------------------------- trials

    def _job_overrides(self, trial: optuna.Trial, space: SearchSpace) -> list[str]:
        identity = {"storage": self.url, "study_name": self.study_name, "number": trial.number}
        return space.overrides(trial.params) + [
            f"++optuna_trial.{key}={format_value(value)}" for key, value in identity.items()
        ]

    def _ask(self, study: optuna.Study, space: SearchSpace, n_trials: int) -> tuple[optuna.Trial, list[str]] | None:
        """The next trial and its job's overrides; None once the study's budget is used up."""
        if sum(1 for t in study.get_trials(deepcopy=False) if t.state in COUNTED) >= n_trials:
            return None
        trial = study.ask()
        # Another sweeper process on this study may have asked at the same moment: numbers decide who runs.
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and t.state in COUNTED]
        if len(earlier) >= n_trials:
            trial.set_user_attr("skipped", "the budget was used up by other sweepers")
            study.tell(trial, state=TrialState.FAIL)
            return None
        for name, distribution in space.distributions.items():
            suggest(trial, name, distribution)
        overrides = self._job_overrides(trial, space)
        trial.set_user_attr("sweeper", self.owner)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("pruner", OmegaConf.to_container(self.pruner_cfg, resolve=True))
        return trial, overrides

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> TrialState:
        """Record the job's outcome: PRUNED when OptunaPruning stopped it, COMPLETE with its returned value, else
        FAIL."""
        reported = find_trial(study, trial.number)
        value = result.return_value if result.status == JobStatus.COMPLETED else None
        if reported.user_attrs.get("pruned_epoch") is not None:
            state, values = TrialState.PRUNED, None
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            state, values = TrialState.COMPLETE, [float(value)]
        else:
            if result.status == JobStatus.COMPLETED:
                log.warning(f"Trial {trial.number} returned {value!r}, not a number: failed")
            state, values = TrialState.FAIL, None
        try:
            study.tell(trial, values=values, state=state)
        except RuntimeError as error:  # the grid sampler stops the study once every point is taken
            if "Study.stop" not in str(error):
                raise
        return state

    def _run_trials(self, study: optuna.Study, space: SearchSpace, n_trials: int) -> None:
        """Run trials until the budget is used up: ``n_jobs`` at once, each launched on its own as soon as a slot is
        free (Hydra's basic launcher runs jobs in this process: one at a time)."""
        workers = self.n_jobs
        if workers > 1 and type(self.launcher).__name__ == "BasicLauncher":
            log.warning(
                f"hydra.sweeper.n_jobs={workers} with Hydra's basic launcher, which runs jobs in this process: "
                "trials run one at a time. Use hydra/launcher=joblib (local processes) or slurm."
            )
            workers = 1
        lock = threading.Lock()
        stop = threading.Event()
        finished: list[tuple[TrialState, JobReturn]] = []
        errors: list[BaseException] = []

        def work() -> None:
            while not stop.is_set():
                with lock:
                    asked = None if stop.is_set() else self._ask(study, space, n_trials)
                if asked is None:
                    return
                trial, overrides = asked
                try:
                    (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
                except BaseException as error:  # SIGTERM, Ctrl-C, a job's user error (exit 2): fail, then stop
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning(f"Trial {trial.number} was interrupted ({type(error).__name__}): failed")
                    stop.set()
                    # Lightning's SIGTERMException exits with status 0: a sweep stopped by SIGTERM exits with 143.
                    errors.append(SystemExit(128 + signal.SIGTERM) if isinstance(error, SIGTERMException) else error)
                    return
                state = self._tell(study, trial, result)
                with lock:
                    finished.append((state, result))
                    failed = [r for s, r in finished if s == TrialState.FAIL]
                    log.info(f"Trial {trial.number}: {state.name}" + (f", value {result.return_value}" if
                                                                    state == TrialState.COMPLETE else ""))
                    if failed and len(failed) / len(finished) > self.max_failure_rate:
                        log.error(
                            f"{len(failed)} of {len(finished)} trials failed (max_failure_rate="
                            f"{self.max_failure_rate}): stopping the sweep"
                        )
                        stop.set()

        if workers == 1:
            work()  # in the main thread: Lightning's signal handlers need it
        else:
            threads = [threading.Thread(target=work, name=f"trial-slot-{i}") for i in range(workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]
        failed = [r for s, r in finished if s == TrialState.FAIL and r.status == JobStatus.FAILED]
        if stop.is_set() and failed:
            failed[0].return_value  # noqa: B018 - raises the job's exception, with its traceback
