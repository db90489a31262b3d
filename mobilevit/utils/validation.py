"""Start-up checks for train.py and evaluate.py: every config problem becomes one line that names the key and
what is valid, raised as a :class:`UserInputError` before any heavy work (no model, data or Trainer yet)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from mobilevit.data.base import EVAL_SPLITS
from mobilevit.errors import UserInputError
from mobilevit.models import list_models
from mobilevit.utils.checkpoint import load_checkpoint

# MobileViT downsamples by 32: smaller images have no pixels left in the last stage.
MIN_IMAGE_SIZE = 32
GRADIENT_CLIP_ALGORITHMS: tuple[str, ...] = ("norm", "value")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_problem(key: str, value: Any, minimum: int, why: str = "") -> str | None:
    if _is_int(value) and value >= minimum:
        return None
    return f"{key} must be an integer >= {minimum}{why}, got {value!r}."


def _missing_problems(cfg: DictConfig) -> Iterator[str]:
    """Keys marked ``???`` (required, no default) that the command line did not set."""
    for key in sorted(OmegaConf.missing_keys(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))):
        example = "/path/to/dataset" if key == "data.root" else "<value>"
        yield f"{key} is required: set it on the command line, e.g. {key}={example}."


def _model_problems(model: DictConfig | None) -> Iterator[str]:
    if not model or "name" not in model:
        return
    if model.name not in list_models():
        yield f"model.name={model.name!r} is not a MobileViT variant; valid: {', '.join(list_models())}."


def _optimizer_problems(optimizer: DictConfig | None) -> Iterator[str]:
    if not optimizer:
        return
    lr = optimizer.get("lr")
    if not (_is_number(lr) and lr > 0):
        yield f"optimizer.lr must be a number > 0 (e.g. 1e-3), got {lr!r}."
    weight_decay = optimizer.get("weight_decay", 0.0)
    if not (_is_number(weight_decay) and weight_decay >= 0):
        yield f"optimizer.weight_decay must be a number >= 0, got {weight_decay!r}."


def _data_problems(data: DictConfig | None, optional: bool = False) -> Iterator[str]:
    """Problems of ``data.*``; with ``optional`` (evaluate.py's overrides) null means "keep the stored value"."""
    if not data:
        return
    checks = (  # key, minimum, why, null allowed
        ("batch_size", 1, "", optional),
        ("image_size", MIN_IMAGE_SIZE, " (MobileViT downsamples by 32)", optional),
        ("eval_image_size", MIN_IMAGE_SIZE, " or null (= data.image_size)", True),
        ("num_workers", 0, "", optional),
    )
    for key, minimum, why, nullable in checks:
        if key not in data or (nullable and data.get(key) is None):
            continue
        problem = _int_problem(f"data.{key}", data.get(key), minimum, why)
        if problem:
            yield problem
    split = data.get("split")
    if "split" in data and split not in EVAL_SPLITS and not (optional and split is None):
        yield f"data.split must be one of {list(EVAL_SPLITS)}, got {split!r}."


def _trainer_problems(trainer: DictConfig | None) -> Iterator[str]:
    if not trainer:
        return
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (_is_number(clip) and clip >= 0):
        yield f"trainer.gradient_clip_val must be null (no clipping) or a number >= 0, got {clip!r}."
    algorithm = trainer.get("gradient_clip_algorithm")
    if algorithm is not None and algorithm not in GRADIENT_CLIP_ALGORITHMS:
        yield f"trainer.gradient_clip_algorithm must be one of {list(GRADIENT_CLIP_ALGORITHMS)}, got {algorithm!r}."


def _module_problems(cfg: DictConfig) -> Iterator[str]:
    scale = OmegaConf.select(cfg, "module.backbone_lr_scale", default=1.0)
    if not (_is_number(scale) and scale > 0):
        yield f"module.backbone_lr_scale must be a number > 0, got {scale!r}."
    elif scale != 1.0 and not OmegaConf.select(cfg, "model.pretrained", default=None):
        yield (
            f"module.backbone_lr_scale={scale} slows the backbone for fine-tuning, but model.pretrained is not set: "
            "pass model.pretrained=/path/to/weights (.pth/.pt/.bin/.safetensors), or module.backbone_lr_scale=1."
        )


def _raise(problems: list[str]) -> None:
    if problems:
        raise UserInputError("\n".join(problems))


def validate_train_config(cfg: DictConfig) -> None:
    """Check the values of a train.py config; raise one UserInputError with a line per problem."""
    _raise(
        [
            *_missing_problems(cfg),
            *_model_problems(cfg.get("model")),
            *_optimizer_problems(cfg.get("optimizer")),
            *_module_problems(cfg),
            *_data_problems(cfg.get("data")),
            *_trainer_problems(cfg.get("trainer")),
        ]
    )


def validate_eval_config(cfg: DictConfig) -> None:
    """Check evaluate.py's ``data.*`` overrides (null keeps the checkpoint's value)."""
    _raise(list(_data_problems(cfg.get("data"), optional=True)))


def check_train_data(cfg: DictConfig, datamodule: L.LightningDataModule, ckpt_path: str | None) -> None:
    """Checks that need the data module: BatchNorm can train on the configured batches, the split the final test
    uses exists, and a checkpoint to resume from has
    the data's class count (read with ``weights_only=True``, so an unsafe file is refused here)."""
    check_batch_sizes = getattr(datamodule, "check_train_batch_sizes", None)
    if check_batch_sizes is not None:
        check_batch_sizes()
    split = getattr(datamodule, "split", "test")
    has_split = getattr(datamodule, "has_split", None)
    if cfg.get("test") and has_split is not None and not has_split(split):
        raise UserInputError(
            f"data.split={split}: the dataset has no {split} split (no {getattr(datamodule, 'root', '?')}/{split} "
            f"folder), so the test after training would fail. Use data.split=val, add the folder, or set test=false."
        )
    if ckpt_path is None:
        return
    expected = load_checkpoint(ckpt_path)["hyper_parameters"].get("num_classes")
    if expected is not None and expected != datamodule.num_classes:
        raise UserInputError(
            f"ckpt_path={ckpt_path} was trained on {expected} classes but the data has {datamodule.num_classes} "
            f"(data.root / data.num_classes). Resume on the same dataset, or start a new run with "
            f"model.pretrained={ckpt_path} to fine-tune on this one (the classifier is then re-initialised)."
        )
