"""Start-up checks of train.py: the rules no single constructor can check, raised as one :class:`UserInputError`
(a line per problem) before any heavy work.

Every argument of this project's classes is checked by its constructor (data module, network, LightningModule,
callbacks). What is left here: required keys (``???``) the command line did not set, rules across config groups,
and the values of the third-party objects built late or without a clear message (the optimizer, which Hydra
builds as a partial and Lightning calls only after the data is set up, and Lightning's Trainer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from mobilevit.errors import UserInputError, is_number, require_choice, require_positive

GRADIENT_CLIP_ALGORITHMS: tuple[str, ...] = ("norm", "value")


def _problem(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[str]:
    """The message of the UserInputError ``check`` raises, if any."""
    try:
        check(*args, **kwargs)
    except UserInputError as error:
        yield str(error)


def _missing_problems(cfg: DictConfig) -> Iterator[str]:
    """Keys marked ``???`` (required, no default) that the command line did not set."""
    for key in sorted(OmegaConf.missing_keys(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))):
        example = "/path/to/dataset" if key == "data.root" else "<value>"
        yield f"{key} is required: set it on the command line, e.g. {key}={example}."


def _optimizer_problems(optimizer: DictConfig | None) -> Iterator[str]:
    if not optimizer:
        return
    yield from _problem(require_positive, optimizer.get("lr"), "optimizer.lr", example=" (e.g. 1e-3)")
    weight_decay = optimizer.get("weight_decay", 0.0)
    if not (is_number(weight_decay) and weight_decay >= 0):
        yield f"optimizer.weight_decay must be a number >= 0, got {weight_decay!r}."


def _trainer_problems(trainer: DictConfig | None) -> Iterator[str]:
    if not trainer:
        return
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (is_number(clip) and clip >= 0):
        yield f"trainer.gradient_clip_val must be null (no clipping) or a number >= 0, got {clip!r}."
    algorithm = trainer.get("gradient_clip_algorithm")
    if algorithm is not None:
        yield from _problem(require_choice, algorithm, "trainer.gradient_clip_algorithm", GRADIENT_CLIP_ALGORITHMS)
    if trainer.get("use_distributed_sampler", False):
        yield (
            "trainer.use_distributed_sampler must be false: the data modules shard their own loaders under DDP "
            "(mobilevit/data/base.py), and Lightning's sampler would replace a multi-scale batch sampler."
        )


def _fine_tuning_problems(cfg: DictConfig) -> Iterator[str]:
    """module.backbone_lr_scale != 1 only makes sense with pretrained weights (the value itself: ImageClassifier)."""
    scale = OmegaConf.select(cfg, "module.backbone_lr_scale", default=1.0)
    if is_number(scale) and scale > 0 and scale != 1.0 and not OmegaConf.select(cfg, "model.pretrained"):
        yield (
            f"module.backbone_lr_scale={scale} slows the backbone for fine-tuning, but model.pretrained is not set: "
            "pass model.pretrained=imagenet, hf-hub:<repo_id> or /path/to/weights, or module.backbone_lr_scale=1."
        )


TEST_WEIGHTS: tuple[str, ...] = ("best", "last")  # test_weights
DEFAULT_TEST_WEIGHTS = "last"  # when a config lacks test_weights, as configs/train.yaml


def _test_problems(cfg: DictConfig) -> Iterator[str]:
    weights = cfg.get("test_weights", DEFAULT_TEST_WEIGHTS)
    if weights not in TEST_WEIGHTS:
        yield f"test_weights must be one of {list(TEST_WEIGHTS)}, got {weights!r}."


def validate_train_config(cfg: DictConfig) -> None:
    """Check a train.py config before anything is built; raise one UserInputError with a line per problem."""
    problems = [
        *_missing_problems(cfg),
        *_optimizer_problems(cfg.get("optimizer")),
        *_fine_tuning_problems(cfg),
        *_test_problems(cfg),
        *_trainer_problems(cfg.get("trainer")),
    ]
    if problems:
        raise UserInputError("\n".join(problems))


def check_train_data(cfg: DictConfig, datamodule: L.LightningDataModule) -> None:
    """Checks across the data module and the rest of the run: BatchNorm can train on the configured batches, and the
    split the final test uses exists. (The classes of a checkpoint to resume from: mobilevit.checkpoint.)"""
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
