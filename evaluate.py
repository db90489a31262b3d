"""Evaluate a checkpoint from train.py, or a file exported from one, on the test (or val) split.

    python evaluate.py ckpt_path=logs/train/runs/<time>/checkpoints/epoch_009.ckpt
    python evaluate.py ckpt_path=last data.split=val data.root=/elsewhere/flowers102
    python evaluate.py ckpt_path=logs/train/runs/<time>/checkpoints/last_int8.pte   # ExecuTorch / ONNX Runtime / LiteRT

The model and data are rebuilt from the run config stored in the checkpoint; `data.*` keys override it.
Writes metrics.json, per_class.csv and confusion_matrix.png into the run directory (logs/eval/runs/<time>).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from mobilevit.checkpoint import classifier_from_weights, datamodule_from_weights, read_trained
from mobilevit.errors import UserInputError
from mobilevit.export.runtime import artifact_datamodule, artifact_logits, is_artifact, load_artifact
from mobilevit.metrics import SplitMetrics, split_metrics, write_metrics_json, write_per_class_csv
from mobilevit.plots import plot_confusion_matrix
from mobilevit.utils import (
    display_path,
    exit_on_user_error,
    register_config_resolvers,
    resolve_ckpt_path,
    set_project_root,
    silence_upstream_warnings,
)

set_project_root(Path(__file__).parent)
register_config_resolvers()
silence_upstream_warnings()


def _print_summary(report: SplitMetrics, split: str, ckpt_path: str, output_dir: Path) -> None:
    console = Console(soft_wrap=True)
    table = Table(title=f"{split} split: {report.num_images} images, {len(report.class_names)} classes")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("top-1 accuracy", f"{report.top1:.4f}")
    table.add_row(f"top-{report.top_k} accuracy", f"{report.top5:.4f}")
    table.add_row("macro F1", f"{report.macro_f1:.4f}")
    table.add_row("cross-entropy loss", f"{report.loss:.4f}")
    console.print(table)
    worst = sorted(range(len(report.class_names)), key=lambda i: (report.f1[i], -report.support[i]))[:5]
    hardest = Table(title="Hardest classes (lowest F1)")
    for column in ("class", "support", "precision", "recall", "F1"):
        hardest.add_column(column, justify="left" if column == "class" else "right")
    for i in worst:
        hardest.add_row(
            report.class_names[i],
            str(report.support[i]),
            f"{report.precision[i]:.3f}",
            f"{report.recall[i]:.3f}",
            f"{report.f1[i]:.3f}",
        )
    console.print(hardest)
    console.print(f"Checkpoint: [cyan]{display_path(ckpt_path)}[/]")
    console.print(
        f"Results:    [cyan]{display_path(output_dir)}[/] (metrics.json, per_class.csv, confusion_matrix.png)"
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.data.split``; write the result files; return metrics.json's content."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise UserInputError("evaluate.py needs ckpt_path=<file.ckpt | run directory | last>.")
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, Path(cfg.paths.log_dir) / "train")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    overrides = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    if is_artifact(ckpt_path):  # an exported .onnx / .pte / .tflite / .mlpackage: every image goes through its runtime
        return _evaluate_artifact(cfg, ckpt_path, overrides, output_dir)
    weights = read_trained(ckpt_path)
    datamodule = datamodule_from_weights(weights, overrides)
    channels_last = OmegaConf.select(cfg, "module.channels_last", default=True)
    classifier = classifier_from_weights(weights, channels_last=channels_last, fuse_bn=cfg.get("fuse_bn", True))
    del weights
    if cfg.get("hflip_tta") is not None:
        classifier.hflip_tta = bool(cfg.hflip_tta)

    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[RichProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else [],
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    if trainer.world_size > 1:
        raise UserInputError("evaluate.py runs on a single device: use trainer=cpu, trainer=gpu or trainer=default.")
    datamodule.prepare_data()
    datamodule.setup("test")
    batches = trainer.predict(classifier, dataloaders=datamodule.test_dataloader())
    logits = torch.cat([batch["logits"] for batch in batches])
    targets = torch.cat([batch["targets"] for batch in batches])

    model = classifier.hparams.cfg["model"].get("name")
    return _report(logits, targets, datamodule, classifier.hflip_tta, ckpt_path, model, output_dir)


def _evaluate_artifact(cfg: DictConfig, path: str, overrides: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    artifact = load_artifact(path)
    datamodule = artifact_datamodule(artifact, overrides)
    hflip_tta = artifact.hflip_tta if cfg.get("hflip_tta") is None else bool(cfg.hflip_tta)
    datamodule.prepare_data()
    datamodule.setup("test")
    logits, targets = artifact_logits(artifact, datamodule.test_dataloader(), hflip_tta)
    quantization = (artifact.sidecar.get("quantization") or {}).get("scheme", "fp32")
    model = artifact.sidecar["model"]
    return _report(
        logits, targets, datamodule, hflip_tta, path, model, output_dir, artifact=artifact.format, weights=quantization
    )


def _report(
    logits: torch.Tensor,
    targets: torch.Tensor,
    datamodule: L.LightningDataModule,
    hflip_tta: bool,
    ckpt_path: str,
    model: str,
    output_dir: Path,
    **more: str,
) -> dict[str, Any]:
    """Write metrics.json, per_class.csv and confusion_matrix.png of ``logits`` (``more``: extra metrics.json
    fields); print the summary."""
    report = split_metrics(logits, targets, list(datamodule.class_names))
    split = datamodule.split
    extra = {"split": split, "hflip_tta": hflip_tta, "ckpt_path": str(Path(ckpt_path).resolve()), "model": model, **more}
    write_metrics_json(report, output_dir / "metrics.json", **extra)
    write_per_class_csv(report, output_dir / "per_class.csv")
    title = f"{extra['model']} on {split} ({report.num_images} images)\ntop-1 {report.top1:.3f}, rows normalised"
    plot_confusion_matrix(report, output_dir / "confusion_matrix.png", title=title)
    _print_summary(report, split, ckpt_path, output_dir)
    return {**report.summary(), **extra}


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        evaluate(cfg)


if __name__ == "__main__":
    main()
