"""Helpers shared by the train and evaluate entry points: errors, config, checkpoints, summaries."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.text import Text

from mobilevit.errors import UserInputError
from mobilevit.utils.budget import validation_interval
from mobilevit.utils.precision import fast_precision

USER_ERROR_EXIT_CODE = 2
# Config options renamed: {group: {old name: new name}}; the old names still work, with a warning, until 0.2.0.
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "augmentation": {"seed": "crop_flip_jitter"},
    "experiment": {"flowers102_seed": "flowers102_stratified", "flowers102_seed_cpu": "flowers102_stratified_cpu"},
}
log = logging.getLogger(__name__)


def find_user_error(exc: BaseException | None) -> UserInputError | None:
    """The UserInputError behind ``exc``, following wrappers such as Hydra's InstantiationException."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a UserInputError raised inside the block into one red line on stderr and exit code 2 (no traceback)."""
    try:
        yield
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None:
            raise
        Console(stderr=True, soft_wrap=True).print(Text(f"Error: {user_error}", style="bold red"))
        sys.exit(USER_ERROR_EXIT_CODE)


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def silence_upstream_warnings() -> None:
    """Hide known upstream noise that users cannot act on: Lightning's use of torch's LeafSpec, its model summary's
    "precision not supported" warning for mixed precision (the size column assumes float32 weights, which they are),
    and its advertisement for the litlogger package."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Precision \S+ is not supported by the model summary")
    for package in ("pytorch", "fabric"):  # the loggers rank_zero_info writes to
        logging.getLogger(f"lightning.{package}.utilities.rank_zero").addFilter(_not_an_advert)


def warn_renamed_options() -> list[str]:
    """Log a deprecation line for each renamed config option this Hydra run chose; returns the lines."""
    if not HydraConfig.initialized():
        return []
    choices = HydraConfig.get().runtime.choices
    lines = [
        f"{group}={old} is deprecated: use {group}={new} (the same settings under a name that says what they do; "
        "the old name is removed in 0.2.0)."
        for group, renamed in RENAMED_OPTIONS.items()
        for old, new in renamed.items()
        if choices.get(group) == old
    ]
    for line in lines:
        log.warning(line)
    return lines


_CLAIMED_DIRS: dict[str, str] = {}


def claim_run_dir(path: str, mode: Any = "RUN") -> str:
    """Create and return a directory of its own for this run: ``path`` itself, or ``path_2``, ``path_3``, ... when
    another run (another process, started in the same second) has it already.

    ``os.mkdir`` is atomic, also on shared network file systems, so two runs never get the same directory. The same
    ``path`` gives the same answer for the rest of the process (Hydra resolves ``hydra.run.dir`` more than once).
    ``mode`` is Hydra's run mode for ``hydra.run.dir``: a multirun does not use that directory, so it is not made.
    """
    if "MULTIRUN" in str(mode):
        return path
    if path not in _CLAIMED_DIRS:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 10_000):
            candidate = path if attempt == 1 else f"{path}_{attempt}"
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            _CLAIMED_DIRS[path] = candidate
            break
        else:
            raise UserInputError(f"Could not create a run directory next to '{path}': 10,000 names are taken.")
    return _CLAIMED_DIRS[path]


def register_config_resolvers() -> None:
    """Register the resolvers the configs use (``${fast_precision:<accelerator>}``, ``${claim_run_dir:<path>}``,
    ``${validation_interval:<max_epochs>}``); call before composing them."""
    OmegaConf.register_new_resolver("fast_precision", fast_precision, replace=True)
    # Cached like Hydra's ${now:}: Hydra copies the cache into each job's config, so jobs that run in other processes
    # (joblib, SLURM) see the sweep directory their sweep claimed instead of claiming another.
    OmegaConf.register_new_resolver("claim_run_dir", claim_run_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("validation_interval", validation_interval, replace=True)


def set_project_root(path: str | Path) -> None:
    """Default ``PROJECT_ROOT`` (read by ``configs/paths/default.yaml``) to ``path`` unless already set."""
    os.environ.setdefault("PROJECT_ROOT", str(Path(path).resolve()))


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run config as plain, fully resolved containers (the ``hydra`` node left out)."""
    keys = [key for key in cfg.keys() if key != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)  # type: ignore[return-value]


def resolve_ckpt_path(ckpt_path: str | None, runs_root: str | Path, exclude: str | Path | None = None) -> str | None:
    """Turn ``ckpt_path`` into an existing checkpoint file.

    ``last`` means ``checkpoints/last.ckpt`` of the most recent run under ``runs_root`` (``exclude`` is the
    current run's directory, skipped); a run directory means its ``checkpoints/last.ckpt``; otherwise a file.
    """
    if ckpt_path is None:
        return None
    ckpt_path = str(ckpt_path)
    if ckpt_path == "last":
        excluded = Path(exclude).resolve() if exclude else None
        candidates = [
            path
            for path in Path(runs_root).glob("**/checkpoints/last.ckpt")
            if excluded is None or excluded not in path.resolve().parents
        ]
        if not candidates:
            raise UserInputError(
                f"ckpt_path=last: no checkpoints/last.ckpt found under '{runs_root}'. "
                "Train a run first or pass ckpt_path=/path/to/file.ckpt."
            )
        return str(max(candidates, key=lambda path: path.stat().st_mtime))
    from mobilevit.export.runtime import is_artifact  # an exported file, or folder (.mlpackage)

    path = Path(ckpt_path).expanduser()
    if path.is_dir() and not is_artifact(path):
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return str(candidate)
        raise UserInputError(f"ckpt_path='{ckpt_path}' is a directory without checkpoints/last.ckpt.")
    if not path.exists():
        raise UserInputError(
            f"ckpt_path='{ckpt_path}' does not exist. Pass a .ckpt file, a run directory, or ckpt_path=last."
        )
    return str(path)


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when inside it, else absolute (for copy-paste commands)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def ddp_children_share_dirs() -> Iterator[None]:
    """While active, the processes that Lightning starts for the other DDP ranks write into this run's folders.

    Lightning starts them by re-running the script with ``sys.argv`` plus ``hydra.run.dir=<this run's dir>``
    (``_hydra_subprocess_cmd``), which covers a single run. In a multirun (``-m``) every child re-runs the whole
    sweep, as Lightning intends (each rank runs the same program, job after job), but Hydra would give each child a
    sweep folder of its own, named after its own start time. So while active, ``sys.argv`` also pins
    ``hydra.sweep.dir`` to this sweep's folder: every rank writes job N into the same ``<sweep dir>/N``.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    saved_argv = sys.argv
    sys.argv = [*saved_argv, f'hydra.sweep.dir="{HydraConfig.get().sweep.dir}"']
    try:
        yield
    finally:
        sys.argv = saved_argv
