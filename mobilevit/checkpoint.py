"""Read checkpoints written by train.py: the run config (checked), the weights record, the classifier and data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L

from mobilevit.data.base import RENAMED_ARGUMENTS, ImageClassificationDataModule
from mobilevit.errors import UserInputError
from mobilevit.models.pretrained import Weights, safe_torch_load, weights_from_loaded
from mobilevit.module import ImageClassifier

# What a checkpoint's stored run config may name: evaluate.py builds its data module with hydra.utils.instantiate,
# so a crafted file (plain containers pass weights_only=True) must not be able to name any other callable. The
# network is built from its variant name alone; a model _target_ naming other code is refused all the same. The
# factory's module path is allowed too, and so are the modules that defined create_model before (registry, pretrained).
MODEL_TARGETS: frozenset[str] = frozenset(
    {
        "mobilevit.models.create_model",
        "mobilevit.models.factory.create_model",
        "mobilevit.models.registry.create_model",
        "mobilevit.models.pretrained.create_model",
    }
)


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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a train.py checkpoint with ``weights_only=True``; check that it carries the run config."""
    checkpoint = safe_torch_load(path)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    run_cfg = hparams.get("cfg") if isinstance(hparams, dict) else None
    if not isinstance(run_cfg, dict) or not {"model", "data"} <= run_cfg.keys() or "state_dict" not in checkpoint:
        raise UserInputError(
            f"Checkpoint '{path}' has no stored run config (hyper_parameters.cfg with model and data); "
            "pass a .ckpt written by train.py."
        )
    check_stored_targets(path, run_cfg)
    return checkpoint


def read_trained(path: str | Path) -> Weights:
    """A train.py checkpoint as a :class:`Weights` record (its run config checked, its preprocessing recorded)."""
    return weights_from_loaded(load_checkpoint(path), str(path))


def classifier_from_weights(weights: Weights, channels_last: bool = True, fuse_bn: bool = False) -> ImageClassifier:
    """An ImageClassifier (eval mode) around ``weights.build()``, with the class names and run config.

    ``fuse_bn`` folds every BatchNorm into the convolution before it: the same function, fewer memory passes.
    """
    classifier = ImageClassifier(
        weights.build(fuse_bn=fuse_bn),
        channels_last=channels_last,
        hflip_tta=bool(((weights.run_config or {}).get("module") or {}).get("hflip_tta", False)),
        cfg=weights.run_config,
        class_names=list(weights.class_names) if weights.class_names else None,
        preprocessing=weights.preprocessing.to_dict(),
    )
    return classifier.eval()


def datamodule_from_weights(weights: Weights, overrides: dict[str, Any] | None = None) -> L.LightningDataModule:
    """The data module of a train.py checkpoint's run config, with non-None ``overrides`` (e.g. split, root).

    No training augmentation is attached: every split uses the evaluation transform.
    """
    if weights.run_config is None:
        raise UserInputError(f"{weights.source} stores no run config (data); pass a .ckpt written by train.py.")
    data_cfg = dict(weights.run_config["data"])
    for old, new in RENAMED_ARGUMENTS.items():  # a config stored before a rename: read under the new name, silently
        if old in data_cfg:
            value = data_cfg.pop(old)
            if value is not None:  # as the data module reads it: a set old name wins
                data_cfg[new] = value
    data_cfg.update({key: value for key, value in (overrides or {}).items() if value is not None})
    datamodule = hydra.utils.instantiate(data_cfg)
    require_trained_classes(weights, datamodule, "evaluate on data with the classes the model was trained on")
    return datamodule


def require_trained_classes(weights: Weights, datamodule: L.LightningDataModule, advice: str) -> None:
    """The one rule where a checkpoint meets data: the data's class names (in label order) must be the ones the
    weights were trained on, or a :class:`UserInputError` line lists the differences and ends with ``advice``. Used
    by evaluate.py and by train.py when it resumes (fine-tuning re-initialises the head instead:
    :func:`mobilevit.models.load_pretrained`)."""
    differences = weights.class_differences(list(datamodule.class_names))
    if differences is not None:
        raise UserInputError(
            f"{weights.source} was trained on other classes than data.root={getattr(datamodule, 'root', '?')} has "
            f"({differences}): {advice}."
        )
