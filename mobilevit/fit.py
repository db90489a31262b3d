"""The training run's policy after its objects are built: fit until something stops it, say why it stopped, and test
the weights ``test_weights`` names. train.py wires the objects and calls these."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.console import Console

from mobilevit.callbacks import NonFiniteLossError, OptunaPruning
from mobilevit.utils import ddp_children_share_dirs
from mobilevit.utils.validation import DEFAULT_TEST_WEIGHTS


def fit(trainer: L.Trainer, **kwargs: Any) -> BaseException | None:
    """``trainer.fit(**kwargs)``; an exception that stopped training early (NaN guard, Ctrl-C, SIGTERM) is returned
    instead of raised, once Lightning has handled it (``on_exception`` hooks: last.ckpt and the final reports are
    written). Any other exception propagates."""
    try:
        with ddp_children_share_dirs():  # DDP ranks started by Lightning write into this run's directory
            trainer.fit(**kwargs)
    except (SystemExit, NonFiniteLossError) as error:
        if not trainer.interrupted:
            raise
        return error
    return None


def stop_reason(trainer: L.Trainer, error: BaseException | None = None) -> str:
    """Why ``trainer.fit`` ended: ``sigterm``, ``interrupted`` (Ctrl-C), ``non_finite_loss`` (NaN guard), another
    exception's type name, or, when fit returned, ``pruned`` (an Optuna sweep's pruner stopped the trial),
    ``max_epochs``, ``max_steps``, ``max_time``, ``early_stopping`` or ``callback`` (another callback set
    ``trainer.should_stop``)."""
    if isinstance(error, SIGTERMException):
        return "sigterm"
    if isinstance(error, SystemExit):  # Lightning turns Ctrl-C (KeyboardInterrupt) into sys.exit(1)
        return "interrupted"
    if isinstance(error, NonFiniteLossError):
        return "non_finite_loss"
    if error is not None:
        return type(error).__name__
    if any(isinstance(cb, OptunaPruning) and cb.pruned for cb in trainer.callbacks):
        return "pruned"
    if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch:
        return "max_epochs"
    if 0 <= trainer.max_steps <= trainer.global_step:
        return "max_steps"
    if any(isinstance(cb, Timer) and (cb.time_remaining() or 0.0) <= 0 for cb in trainer.callbacks):
        return "max_time"
    if any(isinstance(cb, EarlyStopping) and cb.stopped_epoch > 0 for cb in trainer.callbacks):
        return "early_stopping"
    return "callback"


def stop_record(trainer: L.Trainer, error: BaseException | None = None) -> dict[str, Any]:
    """summary.json's ``stopped``: the reason (:func:`stop_reason`), epochs completed, the global step and the UTC
    time (ISO 8601, seconds)."""
    return {
        "reason": stop_reason(trainer, error),
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def fit_metrics(trainer: L.Trainer) -> tuple[dict[str, float], ModelCheckpoint | None]:
    """The metrics at the end of fit, with ``<monitor>_best`` of the checkpoint callback when it tracked one, and
    that callback (None without a ModelCheckpoint)."""
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if checkpoint and checkpoint.monitor and checkpoint.best_model_score is not None:
        metrics[f"{checkpoint.monitor}_best"] = float(checkpoint.best_model_score)
    return metrics, checkpoint


def final_test(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    weights: str | None,
    best_ckpt: str | None,
) -> dict[str, float]:
    """Test after fit and return the metrics it adds.

    ``weights`` is train.py's ``test_weights`` (None: :data:`DEFAULT_TEST_WEIGHTS`). ``last`` validates the final
    weights first and adds their ``val/*_last`` metrics; ``best`` tests ``best_ckpt`` (the final weights, with a
    warning, when no best checkpoint was saved). Returns ``val/*_last`` and ``test/*`` metrics.
    """
    # Test the averaged weights: the checkpoint's state_dict holds them, but a weight-averaging callback still
    # attached would reload the raw weights it keeps beside them (`current_model_state`).
    trainer.callbacks = [callback for callback in trainer.callbacks if not isinstance(callback, WeightAveraging)]
    metrics: dict[str, float] = {}
    tested_ckpt = best_ckpt
    if (weights or DEFAULT_TEST_WEIGHTS) == "last":
        trainer.validate(model=model, datamodule=datamodule, verbose=False)  # val metrics of the tested weights
        metrics.update({f"{name}_last": float(value) for name, value in trainer.callback_metrics.items()
                        if name.startswith("val/") and not name.endswith("_best")})  # fmt: skip
        tested_ckpt = None
    elif best_ckpt is None:
        Console().print("[yellow]No best checkpoint was saved: testing the weights at the end of training.[/]")
    trainer.test(model=model, datamodule=datamodule, ckpt_path=tested_ckpt, weights_only=True)
    metrics.update({name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("test/")})
    return metrics
