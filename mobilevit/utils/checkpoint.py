"""Rebuild a trained classifier and its data from a checkpoint written by train.py."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch

from mobilevit.errors import UserInputError
from mobilevit.models import fuse_batchnorm
from mobilevit.module import ImageClassifier


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a train.py checkpoint with ``weights_only=True``; check that it carries the run config."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserInputError(f"Checkpoint '{path}' does not exist.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise UserInputError(f"Cannot read checkpoint '{path}' (is it a .ckpt written by train.py?): {exc}") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    run_cfg = hparams.get("cfg") if isinstance(hparams, dict) else None
    if not isinstance(run_cfg, dict) or not {"model", "data"} <= run_cfg.keys() or "state_dict" not in checkpoint:
        raise UserInputError(
            f"Checkpoint '{path}' has no stored run config (hyper_parameters.cfg with model and data); "
            "pass a .ckpt written by train.py."
        )
    return checkpoint


def classifier_from_checkpoint(
    checkpoint: dict[str, Any], channels_last: bool = True, fuse_bn: bool = False
) -> ImageClassifier:
    """The trained ImageClassifier (weights loaded, eval mode) described by a loaded checkpoint.

    ``fuse_bn`` folds every BatchNorm into the convolution before it: the same function, fewer memory passes.
    """
    hparams = checkpoint["hyper_parameters"]
    run_cfg = hparams["cfg"]
    # The weights come from the checkpoint: never re-read the pretrained file used to start training.
    model_cfg = {**run_cfg["model"], "pretrained": None}
    net = hydra.utils.instantiate(model_cfg, num_classes=hparams["num_classes"])
    classifier = ImageClassifier(
        net,
        label_smoothing=hparams.get("label_smoothing", 0.0),
        channels_last=channels_last,
        cfg=run_cfg,
        class_names=hparams.get("class_names"),
    )
    classifier.load_state_dict(checkpoint["state_dict"])
    classifier.eval()
    if fuse_bn:
        classifier.net = fuse_batchnorm(classifier.net)
        if channels_last:  # the folded weights are new tensors in the default layout
            classifier.net = classifier.net.to(memory_format=torch.channels_last)
    return classifier


def datamodule_from_checkpoint(
    checkpoint: dict[str, Any], overrides: dict[str, Any] | None = None
) -> L.LightningDataModule:
    """The data module of the checkpoint's run config, with non-None ``overrides`` (e.g. split, root) applied.

    No training augmentation is attached: every split uses the evaluation transform.
    """
    data_cfg = dict(checkpoint["hyper_parameters"]["cfg"]["data"])
    data_cfg.update({key: value for key, value in (overrides or {}).items() if value is not None})
    datamodule = hydra.utils.instantiate(data_cfg)
    expected = checkpoint["hyper_parameters"]["num_classes"]
    if datamodule.num_classes != expected:
        raise UserInputError(
            f"The model was trained on {expected} classes but data (root={data_cfg.get('root')!r}) has "
            f"{datamodule.num_classes}; evaluate on the dataset it was trained on."
        )
    return datamodule
