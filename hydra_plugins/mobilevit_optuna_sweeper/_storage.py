"""Where a study lives: a journal file (default: ``<sweep dir>/optuna.journal``) or a database URL, opened the same
way by the sweeper and by the jobs that report into its trials (mobilevit.callbacks.OptunaPruning)."""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from mobilevit.errors import UserInputError

JOURNAL_NAME = "optuna.journal"
STORAGE_CHOICES = (
    "null (a journal file in the sweep directory), a journal file path, or a database URL such as "
    "sqlite:///study.db or postgresql://user:password@host/db"
)


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The storage of ``hydra.sweeper.storage`` as an absolute journal file path or a database URL."""
    if not storage:
        return str((Path(sweep_dir) / JOURNAL_NAME).resolve())
    if "://" in str(storage):
        return str(storage)
    return str(Path(storage).expanduser().resolve())


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's storage for ``url`` (from :func:`storage_url`): JournalStorage on a file (several processes, and
    machines sharing the file system, may use it at once) or RDBStorage on a database. UserInputError naming
    ``hydra.sweeper.storage`` when it cannot be opened."""
    try:
        if "://" in url:
            return optuna.storages.RDBStorage(url)
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    except Exception as error:  # noqa: BLE001 - SQLAlchemy, drivers and the file system raise many kinds
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise UserInputError(
            f"hydra.sweeper.storage={url!r} cannot be opened ({type(error).__name__}: {reason}). "
            f"Valid: {STORAGE_CHOICES}."
        ) from None


def _trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def record_job_process(url: str, study_name: str, number: int) -> None:
    """Record this process as the one running trial ``number``'s job (user attribute ``job_pid``): the DDP ranks
    it starts follow it from trial to trial (OptunaSweeperImpl._run_other_rank)."""
    storage = open_storage(url)
    storage.set_trial_user_attr(_trial_id(storage, study_name, number), "job_pid", os.getpid())


def open_trial(url: str, study_name: str, number: int) -> optuna.Trial:
    """Trial ``number`` of study ``study_name`` in storage ``url``, from any process (a job of the sweep), judged
    by the pruner the sweeper recorded in the trial (user attribute ``pruner``: its config)."""
    from hydra.utils import instantiate

    storage = open_storage(url)
    trial_id = _trial_id(storage, study_name, number)
    pruner_cfg = storage.get_trial(trial_id).user_attrs.get("pruner")
    pruner = instantiate(pruner_cfg) if pruner_cfg else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    return optuna.trial.Trial(study, trial_id)
