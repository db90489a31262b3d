"""Rebuild a trained classifier and its data from a checkpoint written by train.py."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch

from mobilevit.data.base import ImageClassificationDataModule
from mobilevit.errors import UserInputError
from mobilevit.models import fuse_batchnorm
from mobilevit.module import ImageClassifier

# What a checkpoint's stored run config may name: evaluate.py and predict rebuild it with hydra.utils.instantiate,
# so a crafted file (plain containers pass weights_only=True) must not be able to name any other callable.
MODEL_TARGETS: frozenset[str] = frozenset({"mobilevit.models.create_model", "mobilevit.models.registry.create_model"})


def _is_data_module(target: Any) -> bool:
    """Whether ``target`` names one of this project's data modules (only ``mobilevit.data.*`` is imported)."""
    if not isinstance(target, str) or not target.startswith("mobilevit.data."):
        return False
    try:
        cls = hydra.utils.get_class(target)
    except Exception:  # noqa: BLE001 - not importable: not allowed
        return False
    return issubclass(cls, ImageClassificationDataModule)


def _nested_targets(node: Any, key: str) -> list[str]:
    """Config paths below ``node`` (not ``node`` itself) that carry a ``_target_``: Hydra would call them too."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    found = []
    for name, child in children:
        path = f"{key}.{name}"
        if isinstance(child, dict) and "_target_" in child:
            found.append(f"{path}._target_={child['_target_']!r}")
        found.extend(_nested_targets(child, path))
    return found


def check_stored_targets(path: str | Path, run_cfg: dict[str, Any]) -> None:
    """Refuse a checkpoint whose stored model/data config names anything but this project's model factory and data
    modules (``_target_`` at the top, nothing nested): Hydra instantiation only ever runs the project's code."""
    problems = [] if run_cfg["model"].get("_target_") in MODEL_TARGETS else [
        f"model._target_={run_cfg['model'].get('_target_')!r}"
    ]  # fmt: skip
    if not _is_data_module(run_cfg["data"].get("_target_")):
        problems.append(f"data._target_={run_cfg['data'].get('_target_')!r}")
    problems += _nested_targets(run_cfg["model"], "model") + _nested_targets(run_cfg["data"], "data")
    if problems:
        raise UserInputError(
            f"Refusing checkpoint '{path}': its stored run config names code that is never built from a checkpoint "
            f"({', '.join(problems)}); only mobilevit.models.create_model and the mobilevit.data data modules are."
        )


def refused_pickle_message(path: str | Path, error: BaseException) -> str:
    """One line for a file that ``torch.load(weights_only=True)`` refused because it holds pickled objects."""
    found = re.search(r"(Unsupported global: [^ ]+ [^ ]+|Unsupported operand [^ ]+)", str(error))
    detail = found.group(1) if found else type(error).__name__
    return (
        f"Refusing to load checkpoint '{path}': it holds pickled Python objects ({detail}), and checkpoints are only "
        "read with torch.load(weights_only=True), which allows tensors and plain containers. Pass a checkpoint "
        "written by train.py."
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a train.py checkpoint with ``weights_only=True``; check that it carries the run config."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserInputError(f"Checkpoint '{path}' does not exist.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        if "Weights only load failed" in str(exc):
            raise UserInputError(refused_pickle_message(path, exc)) from None
        raise UserInputError(f"Cannot read checkpoint '{path}' (is it a .ckpt written by train.py?): {exc}") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    run_cfg = hparams.get("cfg") if isinstance(hparams, dict) else None
    if not isinstance(run_cfg, dict) or not {"model", "data"} <= run_cfg.keys() or "state_dict" not in checkpoint:
        raise UserInputError(
            f"Checkpoint '{path}' has no stored run config (hyper_parameters.cfg with model and data); "
            "pass a .ckpt written by train.py."
        )
    check_stored_targets(path, run_cfg)
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
        hflip_tta=hparams.get("hflip_tta", False),
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
