"""Pretrained weights as one typed record that knows its preprocessing: reading, recognising and loading them.

:func:`read_weights` is the one reader of weights. It accepts any source :func:`mobilevit.models.hub.resolve_source`
resolves (``hf-hub:<repo_id>``, ``imagenet`` or a local path; the Hub download is :mod:`mobilevit.models.hub`'s) and
reads

- a file (.pth/.pt/.bin/.ckpt/.safetensors), or
- a folder holding ``model.safetensors``/``pytorch_model.bin`` and ``config.json`` (a transformers
  ``save_pretrained`` folder or a Hub snapshot).

Keys in our, timm's, transformers' or ml-cvnets' layout are detected (:mod:`mobilevit.models.layouts`), under any
chain of ``module.``/``model.``/``net.``/``_orig_mod.`` prefixes and inside ``state_dict``/``model``/
``model_state_dict``/``state_dict_ema``/``model_ema`` containers (EMA weights preferred). Files are read with
``torch.load(weights_only=True)`` (:func:`safe_torch_load`, also the reader of train.py checkpoints); the only class
it may rebuild is ``argparse.Namespace`` (timm saves its arguments in checkpoints). :func:`load_pretrained` loads
the record into a network; :func:`mobilevit.models.factory.create_model` builds a network with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mobilevit.data.transforms import Preprocessing
from mobilevit.errors import UserInputError
from mobilevit.models.base import MobileViTClassifier
from mobilevit.models.fuse import fuse_batchnorm
from mobilevit.models.hub import HUB_PREFIX, HUB_WEIGHT_FILES, resolve_source
from mobilevit.models.layouts import detect_layout, fold_bgr_into_stem, infer_variant, to_our_layout
from mobilevit.models.registry import build_model, list_models

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
EMA_CONTAINERS = ("state_dict_ema", "model_ema")
CONTAINERS = ("state_dict", "model", "model_state_dict")
PREFIXES = ("module.", "model.", "net.", "_orig_mod.")
SAFE_GLOBALS: list[type] = [argparse.Namespace]  # timm's training checkpoints store their args
PASS_INSTEAD = (
    "pass a state dict saved with torch.save(model.state_dict()), a .safetensors file, a train.py checkpoint "
    "or hf-hub:<repo_id>"
)
# The ImageNet-1k preprocessing each layout's published weights were evaluated with, when the source says nothing.
# timm: its pretrained_cfg for these models; transformers / ml-cvnets: resize to 288, crop 256, bilinear, BGR.
DEFAULT_PREPROCESSING: dict[str, Preprocessing] = {
    "ours": Preprocessing(),
    "timm": Preprocessing(crop_pct=0.9, interpolation="bicubic"),
    "transformers": Preprocessing(crop_pct=256 / 288, interpolation="bilinear", channel_order="BGR"),
    "cvnets": Preprocessing(crop_pct=256 / 288, interpolation="bilinear", channel_order="BGR"),
}
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # transformers' preprocessor_config "resample"
# The state a quantization-aware training checkpoint adds: PT2E names its fake-quantizer modules so.
FAKE_QUANT_PREFIX = "activation_post_process_"


@dataclass(frozen=True, eq=False)
class Weights:
    """Weights for one zoo variant with what is needed to use them: class names and preprocessing.

    ``state_dict`` is in this package's layout and for RGB input (a BGR source has its flip folded into the
    stem); ``preprocessing.channel_order`` still says what the source was trained on. ``run_config`` is the
    resolved run config stored in train.py checkpoints (None for other sources). ``fake_quant_state`` holds the
    learned int8 ranges of a quantization-aware training checkpoint (``activation_post_process_<n>.*``, see
    :func:`mobilevit.export.executorch.prepare_qat`), None otherwise; ``state_dict`` is then its float weights.
    """

    source: str
    layout: str
    variant: str
    num_classes: int
    class_names: tuple[str, ...] | None
    preprocessing: Preprocessing
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    run_config: dict[str, Any] | None = field(default=None, repr=False)
    fake_quant_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def build(self, fuse_bn: bool = False) -> MobileViTClassifier:
        """The network with these weights, in eval mode; ``fuse_bn`` folds BatchNorm into the convs."""
        net = build_model(self.variant, num_classes=self.num_classes)
        net.load_state_dict(self.state_dict)
        net.eval()
        return fuse_batchnorm(net) if fuse_bn else net

    def eval_transform(self) -> Any:
        """The evaluation transform these weights expect (image → float32 (3, S, S) RGB tensor)."""
        return self.preprocessing.eval_transform()

    def class_differences(self, class_names: Sequence[str]) -> str | None:
        """How ``class_names`` (a dataset's, in label order) differ from the classes these weights were trained on
        (one line), or None when they are the same in the same order. Without stored names only the counts are
        compared."""
        if self.class_names is None:
            count = len(class_names)
            return None if count == self.num_classes else f"{self.num_classes} classes in the weights, {count} in the data"
        if list(self.class_names) == list(class_names):
            return None
        trained, data = set(self.class_names), set(class_names)
        parts = [
            f"{label}: {names}"
            for label, names in (
                ("only in the data", [name for name in class_names if name not in trained]),
                ("only in the weights", [name for name in self.class_names if name not in data]),
            )
            if names
        ]
        return "; ".join(parts) or "the same classes in another label order"


# ----------------------------------------------------------------------------- reading files


def refused_pickle_message(path: str | Path, error: BaseException, what: str, instead: str) -> str:
    """One line for a file that ``torch.load(weights_only=True)`` refused because it holds pickled objects."""
    found = re.search(r"(Unsupported global: [^ ]+ [^ ]+|Unsupported operand [^ ]+)", str(error))
    detail = found.group(1) if found else type(error).__name__
    return (
        f"Refusing to load {what} '{path}': it holds pickled Python objects ({detail}), and checkpoints are only "
        f"read with torch.load(weights_only=True), which allows tensors and plain containers. {instead}."
    )


def safe_torch_load(path: str | Path, what: str = "checkpoint", instead: str = "Pass a checkpoint written by train.py") -> Any:
    """``torch.load(path, weights_only=True)`` with ``argparse.Namespace`` allowed; failures are one-line errors."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserInputError(f"{what.capitalize()} '{path}' does not exist.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        if "Weights only load failed" in str(exc):
            raise UserInputError(refused_pickle_message(path, exc, what, instead)) from None
        raise UserInputError(f"Cannot read {what} '{path}' ({instead}): {exc}") from None


def _describe(value: Any) -> str:
    """A short description of what a loaded object holds, for error messages."""
    if isinstance(value, dict):
        keys = list(value)
        shown = ", ".join(map(str, keys[:8])) + (", ..." if len(keys) > 8 else "")
        tensors = sum(isinstance(v, torch.Tensor) for v in value.values())
        return f"a dict of {len(keys)} entries ({tensors} tensors; keys: {shown or '-'})"
    return f"a {type(value).__name__}"


def _unwrap(loaded: Any, source: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside a checkpoint container (EMA weights first) and the container's name."""
    if isinstance(loaded, dict):
        for container in (*EMA_CONTAINERS, *CONTAINERS):
            if isinstance(loaded.get(container), dict) and loaded[container]:
                if container in EMA_CONTAINERS:
                    others = [name for name in CONTAINERS if isinstance(loaded.get(name), dict)]
                    log.info("%s: using the EMA weights '%s'%s.", source, container,
                             f" (not '{others[0]}')" if others else "")  # fmt: skip
                return loaded[container], container
    return loaded, "-"


def _strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Remove any chain of wrapper prefixes (DataParallel/DDP ``module.``, ``model.``, Lightning ``net.``,
    torch.compile ``_orig_mod.``) shared by every key."""
    while state:
        prefix = next((p for p in PREFIXES if all(key.startswith(p) for key in state)), None)
        if prefix is None:
            break
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def _read_json(path: Path | None) -> dict[str, Any]:
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


# ----------------------------------------------------------------------------- the record


def _preprocessing(layout: str, config: dict[str, Any], processor: dict[str, Any]) -> Preprocessing:
    """Preprocessing from a timm/transformers ``config.json`` and ``preprocessor_config.json``, else the
    layout's default."""
    default = DEFAULT_PREPROCESSING[layout]
    timm_cfg = config.get("pretrained_cfg")
    if isinstance(timm_cfg, dict):
        return Preprocessing(
            image_size=int(timm_cfg.get("input_size", [3, default.image_size])[-1]),
            crop_pct=float(timm_cfg.get("crop_pct", default.crop_pct)),
            interpolation=str(timm_cfg.get("interpolation", default.interpolation)),
            mean=tuple(float(v) for v in timm_cfg.get("mean", default.mean)),
            std=tuple(float(v) for v in timm_cfg.get("std", default.std)),
            channel_order=default.channel_order,
        )
    if processor:
        crop = processor.get("crop_size", config.get("image_size", default.image_size))
        crop = int(crop["height"] if isinstance(crop, dict) else crop)
        size = processor.get("size", crop / default.crop_pct)
        size = size.get("shortest_edge", crop) if isinstance(size, dict) else size
        return Preprocessing(
            image_size=crop,
            crop_pct=crop / float(size) if processor.get("do_center_crop", True) else 1.0,
            interpolation=PIL_RESAMPLE.get(processor.get("resample"), default.interpolation),
            mean=tuple(processor["image_mean"]) if processor.get("do_normalize") else default.mean,
            std=tuple(processor["image_std"]) if processor.get("do_normalize") else default.std,
            channel_order="BGR" if processor.get("do_flip_channel_order", True) else "RGB",
        )
    return dataclasses.replace(default, image_size=int(config.get("image_size", default.image_size)))


def _class_names(config: dict[str, Any], hparams: dict[str, Any]) -> tuple[str, ...] | None:
    names = hparams.get("class_names") or config.get("label_names")  # train.py / timm
    if not names and isinstance(config.get("id2label"), dict):  # transformers
        id2label = config["id2label"]
        names = [id2label[key] for key in sorted(id2label, key=int)]
    return tuple(map(str, names)) if names else None


def _weights_file(path: Path, name: str) -> Path:
    if path.is_dir():
        found = next((path / file for file in HUB_WEIGHT_FILES if (path / file).is_file()), None)
        if found is None:
            raise UserInputError(f"model.pretrained: folder {name} holds none of {HUB_WEIGHT_FILES}; {PASS_INSTEAD}.")
        return found
    if not path.is_file():
        raise UserInputError(f"model.pretrained: file not found: {name}")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise UserInputError(f"model.pretrained: unsupported file type '{path.suffix}' ({name}); use one of {WEIGHT_SUFFIXES}")
    return path


def read_weights(source: str | Path, variant: str | None = None) -> Weights:
    """Read weights from ``source`` (see the module docstring) into a :class:`Weights` record.

    ``variant`` is required for ``imagenet``; otherwise the variant comes from a train.py checkpoint's run
    config or from the tensor shapes, and a ``variant`` that disagrees with them is an error.

    Raises:
        UserInputError: one line naming the source and the problem (missing, offline and not cached, pickled
            objects, no MobileViT weights in a known layout, another variant).
    """
    name, path = resolve_source(source, variant)
    file = _weights_file(path, name)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        loaded: Any = load_file(str(file), device="cpu")
    else:
        loaded = safe_torch_load(file, what="weights file", instead=PASS_INSTEAD[0].upper() + PASS_INSTEAD[1:])
    folder = file.parent if path.is_dir() or name.startswith(HUB_PREFIX) else None
    return weights_from_loaded(loaded, name, variant, folder)


def weights_from_loaded(
    loaded: Any, source: str, variant: str | None = None, folder: Path | None = None
) -> Weights:
    """The :class:`Weights` record of an already loaded file (``folder``: where its config.json files are)."""
    hparams = loaded.get("hyper_parameters") if isinstance(loaded, dict) else None
    hparams = hparams if isinstance(hparams, dict) else {}
    state, container = _unwrap(loaded, source)
    state = _strip_prefixes(state) if isinstance(state, dict) else state
    fake_quant = {}
    if isinstance(state, dict):
        fake_quant = {key: value for key, value in state.items() if key.startswith(FAKE_QUANT_PREFIX)}
        state = {key: value for key, value in state.items() if key not in fake_quant}
    if fake_quant:
        log.info("%s is a quantization-aware training checkpoint: float weights and learned int8 ranges.", source)
    layout = detect_layout(state) if isinstance(state, dict) else None
    if layout is None or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise UserInputError(
            f"model.pretrained: {source} holds {_describe(loaded)}, not MobileViT weights in a known layout "
            f"(ours, timm, transformers, ml-cvnets); {PASS_INSTEAD}."
        )
    state = to_our_layout(state, layout)
    config = _read_json(folder / "config.json" if folder else None)
    processor = _read_json(folder / "preprocessor_config.json" if folder else None)
    run_config = hparams.get("cfg") if isinstance(hparams.get("cfg"), dict) else None

    if run_config is not None:  # a train.py checkpoint
        stored = hparams.get("preprocessing")
        preprocessing = (
            Preprocessing.from_dict(stored)
            if isinstance(stored, dict)
            else Preprocessing.from_data_config(run_config["data"])
        )
    else:
        preprocessing = _preprocessing(layout, config, processor)
    if preprocessing.channel_order == "BGR":
        state = fold_bgr_into_stem(state)

    found = (run_config or {}).get("model", {}).get("name") or infer_variant(state)
    if variant is not None and found is not None and found != variant:
        raise UserInputError(
            f"model.pretrained: {source} holds {found} weights, but the model is {variant}: use model={found} "
            f"(or --model {found}), or weights of {variant}."
        )
    found = found or variant
    if found not in list_models():
        raise UserInputError(
            f"model.pretrained: cannot tell which variant {source} holds ({found!r}); pass it (model=<name> or "
            f"--model <name>), one of {', '.join(list_models())}."
        )
    num_classes = int(state["classifier.weight"].shape[0]) if "classifier.weight" in state else 0
    log.info("Read %s weights from %s (%s layout, container %s).", found, source, layout, container)
    return Weights(
        source=source,
        layout=layout,
        variant=found,
        num_classes=num_classes,
        class_names=_class_names(config, hparams),
        preprocessing=preprocessing,
        state_dict=state,
        run_config=run_config,
        fake_quant_state=fake_quant or None,
    )


# ----------------------------------------------------------------------------- loading into a model


def load_pretrained(
    model: MobileViTClassifier, source: str | Path, variant: str | None = None, class_names: Sequence[str] | None = None
) -> Weights:
    """Load ``source`` into ``model``; re-initialise the classifier when the class count differs, or when
    ``class_names`` (the data's, in label order) differ from the classes stored with the weights
    (:meth:`Weights.class_differences`): a head trained on other classes would give their labels to these.

    Raises :class:`UserInputError` listing every missing and unexpected key, or tensors of the wrong shape.
    """
    weights = read_weights(source, variant)
    state = weights.state_dict
    own = model.state_dict()
    head_keys = [key for key in state if key.startswith("classifier.")]
    other_classes = weights.class_differences(class_names) if class_names is not None and weights.class_names else None
    if other_classes or any(key not in own or own[key].shape != state[key].shape for key in head_keys):
        log.info(
            "Re-initialised the classifier: %s has %s classes, the model has %d%s.",
            weights.source, weights.num_classes or "no", getattr(model, "num_classes", 0),
            f" ({other_classes})" if other_classes else "",
        )  # fmt: skip
        state = {key: value for key, value in state.items() if key not in head_keys}
        own_head = {key for key in own if key.startswith("classifier.")}
    else:
        own_head = set()
    missing = sorted(set(own) - set(state) - own_head)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserInputError(
            f"model.pretrained: {weights.source} does not fit {type(model).__name__}.\n"
            f"  missing keys ({len(missing)}): {', '.join(missing) or '-'}\n"
            f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected) or '-'}"
        )
    mismatched = [key for key in state if state[key].shape != own[key].shape]
    if mismatched:
        shapes = ", ".join(f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}" for key in mismatched)
        raise UserInputError(f"model.pretrained: {weights.source} has tensors of the wrong shape (file vs model): {shapes}")
    model.load_state_dict(state, strict=not own_head)
    log.info("Loaded weights from %s", weights.source)
    return weights
