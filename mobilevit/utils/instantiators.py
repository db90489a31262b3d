"""Build optional objects (callbacks, loggers, scheduler) from Hydra config groups."""

from __future__ import annotations

from typing import Any

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from mobilevit.errors import UserInputError


def _targets(cfg: DictConfig | None, group: str) -> list[DictConfig]:
    """Entries of a dict-of-targets group (``callbacks``, ``logger``); empty for ``null``/``{}``."""
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise UserInputError(f"Config '{group}' must be a mapping of named entries, got {type(cfg).__name__}.")
    entries = []
    for name, entry in cfg.items():
        if entry is None:  # disabled from the command line, e.g. callbacks.rich_progress_bar=null
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise UserInputError(f"Config '{group}.{name}' needs a '_target_' key (a class to instantiate).")
        entries.append(entry)
    return entries


def instantiate_callbacks(
    cfg: DictConfig | None, has_logger: bool = True, progress_bar: bool = True
) -> list[Callback]:
    """Instantiate every entry of the ``callbacks`` group, less those the Trainer would refuse: a
    LearningRateMonitor without a logger (``has_logger=False``), a progress bar with ``enable_progress_bar=false``
    (``progress_bar=False``)."""
    callbacks = [hydra.utils.instantiate(entry) for entry in _targets(cfg, "callbacks")]
    refused = (() if has_logger else (LearningRateMonitor,)) + (() if progress_bar else (ProgressBar,))
    return [callback for callback in callbacks if not isinstance(callback, refused)]


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Instantiate every entry of the ``logger`` group."""
    return [hydra.utils.instantiate(entry) for entry in _targets(cfg, "logger")]


def instantiate_optional(cfg: DictConfig | None) -> Any | None:
    """Instantiate ``cfg`` if it names a target; ``null`` or ``{}`` (e.g. ``scheduler=none``) gives None."""
    if not cfg or "_target_" not in cfg:
        return None
    return hydra.utils.instantiate(cfg)
