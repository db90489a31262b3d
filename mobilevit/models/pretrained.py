"""Load weights from a file into a zoo model: our own layout, a Lightning checkpoint, or timm's layout."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from mobilevit.errors import UserInputError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")

# timm's module names → ours. Applied as substring renames on ".name." boundaries.
TIMM_TO_OURS: tuple[tuple[str, str], ...] = (
    (".conv1_1x1.", ".expand."),  # MV2 expansion
    (".conv2_kxk.", ".depthwise."),  # MV2 depthwise
    (".conv3_1x1.", ".project."),  # MV2 projection
    (".conv_kxk.", ".local_conv."),  # MobileViT block: local 3x3
    (".conv_1x1.", ".local_proj."),  # MobileViT block: 1x1 to transformer width
    (".conv_proj.", ".fold_proj."),  # MobileViT block: 1x1 back to stage width
    (".conv_fusion.", ".fusion."),  # MobileViT v1 block: fusion 3x3
    (".attn.qkv_proj.", ".attn.qkv."),  # v2 separable attention
    (".attn.out_proj.", ".attn.proj."),
)


def is_timm_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    """True when the keys follow timm's ``ByobNet`` naming (``head.fc``, ``conv1_1x1``, ...)."""
    return any(key.startswith("head.fc.") or ".conv1_1x1." in key for key in state_dict)


def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm MobileViT/MobileViTv2 state dict to this package's module names."""
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("head.fc."):
            key = "classifier." + key.removeprefix("head.fc.")
        for timm_name, our_name in TIMM_TO_OURS:
            key = key.replace(timm_name, our_name)
        converted[key] = value
    return converted


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely (``weights_only=True`` / safetensors) and unwrap checkpoint containers.

    Accepts a bare state dict, a Lightning checkpoint (``state_dict`` with a ``net.`` prefix) or a
    ``{"model": state_dict}`` wrapper, in our layout or timm's.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"model.pretrained: file not found: {path}")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise UserInputError(f"model.pretrained: unsupported file type '{path.suffix}' ({path}); use one of {WEIGHT_SUFFIXES}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors, truncated files, non-tensor objects
            raise UserInputError(f"model.pretrained: cannot load {path} with weights_only=True: {err}") from err
    for container in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
            break
    if not isinstance(state, dict) or not state:
        raise UserInputError(f"model.pretrained: {path} holds no state dict")
    for prefix in ("net.", "module.", "model."):
        if all(key.startswith(prefix) for key in state):
            state = {key.removeprefix(prefix): value for key, value in state.items()}
    return convert_timm_state_dict(state) if is_timm_layout(state) else state


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model``; re-initialise the classifier when the class count differs.

    Raises :class:`UserInputError` listing every missing and unexpected key otherwise.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    head_keys = [key for key in state if key.startswith("classifier.")]
    if any(key not in own or own[key].shape != state[key].shape for key in head_keys):
        file_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else "no"
        log.info(
            "Re-initialised the classifier: %s has %s classes, the model has %d.",
            path, file_classes, getattr(model, "num_classes", 0),
        )
        state = {key: value for key, value in state.items() if key not in head_keys}
        own_head = {key for key in own if key.startswith("classifier.")}
    else:
        own_head = set()
    missing = sorted(set(own) - set(state) - own_head)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserInputError(
            f"model.pretrained: {path} does not fit {type(model).__name__}.\n"
            f"  missing keys ({len(missing)}): {', '.join(missing) or '-'}\n"
            f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected) or '-'}"
        )
    mismatched = [key for key in state if state[key].shape != own[key].shape]
    if mismatched:
        shapes = ", ".join(f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}" for key in mismatched)
        raise UserInputError(f"model.pretrained: {path} has tensors of the wrong shape (file vs model): {shapes}")
    model.load_state_dict(state, strict=not own_head)
    log.info("Loaded weights from %s", path)


def model_from_checkpoint(path: str | Path, name: str | None = None) -> nn.Module:
    """Rebuild a zoo model from a training checkpoint or weights file, in eval mode.

    The variant comes from ``name`` or, for checkpoints written by ``train.py``, from the run config
    stored in them; the class count comes from the classifier's shape.
    """
    from mobilevit.models.registry import create_model

    if name is None:
        name = checkpoint_model_name(path)
    state = read_state_dict(path)
    num_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
    model = create_model(name, num_classes=num_classes)
    load_pretrained(model, path)
    return model.eval()


def checkpoint_model_name(path: str | Path) -> str:
    """The model variant recorded in a ``train.py`` checkpoint's hyper-parameters."""
    ckpt = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    try:
        return ckpt["hyper_parameters"]["cfg"]["model"]["name"]
    except (KeyError, TypeError):
        raise UserInputError(
            f"{path} records no model name (not a train.py checkpoint); pass the variant explicitly, e.g. --model mobilevit_xs"
        ) from None
