"""Train a MobileViT classifier: `python train.py [group=option ...] [key=value ...]`.

Examples:
    python train.py experiment=quickstart
    python train.py model=mobilevitv2_050 optimizer.lr=1e-3 trainer.max_epochs=50
    python train.py experiment=quickstart ckpt_path=last trainer.max_epochs=20   # resume the newest run
    python train.py -m experiment=quickstart model=mobilevit_xxs,mobilevitv2_050   # one run per option
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from rich.console import Console

from mobilevit.callbacks import ResolutionScheduler, TimeToAccuracy
from mobilevit.data.transforms import Preprocessing
from mobilevit.fit import final_test, fit, fit_metrics, stop_record
from mobilevit.run_summary import write_run_summary
from mobilevit.utils import (
    display_path,
    exit_on_user_error,
    instantiate_callbacks,
    instantiate_loggers,
    instantiate_optional,
    register_config_resolvers,
    resolved_config,
    set_project_root,
    silence_upstream_warnings,
    warn_renamed_options,
)
from mobilevit.resume import restore_run_config, write_resume_record
from mobilevit.checkpoint import read_trained, require_trained_classes
from mobilevit.utils.validation import check_train_data, validate_train_config

set_project_root(Path(__file__).parent)
register_config_resolvers()
silence_upstream_warnings()


# Final metrics shown next to the hyper-parameters in TensorBoard's HPARAMS tab (as hp/<stage>_<name>).
HP_METRICS: tuple[str, ...] = (
    "val/acc_best", "val/acc", "val/acc_top5", "val/f1", "val/loss", "test/acc", "test/acc_top5", "test/f1", "test/loss"
)  # fmt: skip


def _hp_name(metric: str) -> str:
    return "hp/" + metric.replace("/", "_")


def _reported_hp_metrics(cfg: DictConfig, trainer: L.Trainer) -> list[str]:
    """The HP_METRICS this run computes: no test/* with test=false, no val/* without validation batches."""
    stages = {"val": trainer.limit_val_batches != 0, "test": bool(cfg.get("test"))}
    return [name for name in HP_METRICS if stages[name.split("/")[0]]]


@rank_zero_only
def _log_hyperparameters(loggers: list[Logger], run_cfg: dict[str, Any], hp_metrics: list[str]) -> None:
    """Log the run's settings before training; TensorBoard also gets placeholders (-1) for the final metrics this
    run computes (``hp_metrics``): a metric that is never computed is left out, not shown as -1."""
    params = {key: run_cfg.get(key) for key in ("model", "data", "augmentation", "optimizer", "scheduler", "module")}
    params["trainer"] = {
        key: run_cfg["trainer"].get(key) for key in ("max_epochs", "precision", "accumulate_grad_batches")
    }
    params["seed"] = run_cfg.get("seed")
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics={_hp_name(name): -1.0 for name in hp_metrics})
        else:
            logger.log_hyperparams(params)
        logger.save()


@rank_zero_only
def _log_final_metrics(loggers: list[Logger], metrics: dict[str, float], step: int) -> None:
    values = {_hp_name(name): metrics[name] for name in HP_METRICS if name in metrics}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and values:
            logger.log_metrics(values, step=step)
            logger.save()


@rank_zero_only
def _print_next_steps(
    output_dir: str, loggers: list[Logger], checkpoint: str | None, metrics: dict[str, float]
) -> None:
    console = Console(soft_wrap=True)  # never break the commands below
    console.rule("[bold green]Training finished")
    shown = {name: value for name, value in metrics.items() if name.split("/")[0] in ("val", "test")}
    if shown:
        console.print("  ".join(f"{name}={value:.4f}" for name, value in sorted(shown.items())))
    console.print(f"Run directory: [cyan]{display_path(output_dir)}[/]")
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            console.print(f"TensorBoard:   [cyan]tensorboard --logdir {display_path(logger.log_dir)}[/]")
    if checkpoint:
        console.print(f"Evaluate:      [cyan]python evaluate.py ckpt_path={display_path(checkpoint)}[/]")


def _experiment_name() -> str | None:
    """The ``experiment=`` option of this run (None outside a Hydra run or without one)."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("experiment")


def _command_overrides() -> list[str]:
    """This run's command-line overrides (empty outside a Hydra run)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit (and optionally test) the configured model; returns (metrics, objects built).

    With ``ckpt_path`` the run resumes from the checkpoint's stored config plus this command's overrides
    (:func:`mobilevit.resume.restore_run_config`)."""
    started = time.perf_counter()
    warn_renamed_options()
    cfg, resume = restore_run_config(cfg, _command_overrides())
    validate_train_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = cfg.paths.output_dir
    ckpt_path = resume.ckpt_path if resume else None
    if resume and rank_zero_only.rank == 0:
        write_resume_record(output_dir, resume)

    augmentation = instantiate_optional(cfg.get("augmentation"))
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data, augmentation=augmentation)
    check_train_data(cfg, datamodule)
    if ckpt_path:  # read with weights_only=True: an unsafe file is refused here, before training
        advice = (f"resume on the same dataset, or start a new run with model.pretrained={ckpt_path} to fine-tune on "
                  "this one (the classifier is then re-initialised)")  # fmt: skip
        require_trained_classes(read_trained(ckpt_path), datamodule, advice)
    net = hydra.utils.instantiate(
        cfg.model, num_classes=datamodule.num_classes, class_names=list(datamodule.class_names)
    )
    run_cfg = resolved_config(cfg)
    # Partial first: the plain run config must reach the module as is, not be instantiated by Hydra.
    module_factory = hydra.utils.instantiate(cfg.module, _partial_=True)
    model = module_factory(
        net=net,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=instantiate_optional(cfg.get("scheduler")),
        cfg=run_cfg,
        class_names=list(datamodule.class_names),
        preprocessing=Preprocessing.from_data_config(run_cfg["data"]).to_dict(),
    )
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = instantiate_callbacks(
        cfg.get("callbacks"), has_logger=bool(loggers), progress_bar=cfg.trainer.get("enable_progress_bar", True)
    )
    callbacks.append(ResolutionScheduler())  # the loop decides each epoch's training size; none without a schedule
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    _log_hyperparameters(trainer.loggers, run_cfg, _reported_hp_metrics(cfg, trainer))
    error = fit(trainer, model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    stopped = stop_record(trainer, error)
    metrics, checkpoint_cb = fit_metrics(trainer)
    best_ckpt = checkpoint_cb.best_model_path if checkpoint_cb and checkpoint_cb.best_model_path else None
    # No final test when a signal stopped the run: the user or the scheduler wants the process to end now.
    if cfg.get("test") and not isinstance(error, SystemExit):
        metrics.update(final_test(trainer, model, datamodule, cfg.get("test_weights"), best_ckpt))

    _log_final_metrics(trainer.loggers, metrics, trainer.global_step)
    if trainer.is_global_zero:
        write_run_summary(
            output_dir,
            run_cfg,
            metrics,
            net,
            epochs=trainer.current_epoch,
            wall_time_s=time.perf_counter() - started,
            device=trainer.strategy.root_device,
            experiment=_experiment_name(),
            overrides=_command_overrides(),
            time_to_accuracy=next(
                (callback.points for callback in trainer.callbacks if isinstance(callback, TimeToAccuracy)), ()
            ),
            stopped=stopped,
            resumed_from=resume.to_dict() if resume else None,
        )
    last_ckpt = checkpoint_cb.last_model_path if checkpoint_cb else None
    _print_next_steps(output_dir, trainer.loggers, best_ckpt or last_ckpt, metrics)
    if error is not None:  # the final reports, summary and test are written: now stop as the error asks
        raise error
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer, "best_ckpt": best_ckpt}
    return metrics, objects


def optimized_metric(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """Value of ``cfg.optimized_metric`` for sweepers; the best value when the checkpoint callback tracked it."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    for key in (f"{name}_best", name):
        if key in metrics:
            return metrics[key]
    Console(stderr=True).print(f"[yellow]optimized_metric={name!r} was not logged; logged: {sorted(metrics)}[/]")
    return None


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        metrics, _ = train(cfg)
        return optimized_metric(cfg, metrics)


if __name__ == "__main__":
    main()
