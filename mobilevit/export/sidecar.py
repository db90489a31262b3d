"""The JSON file next to every exported artifact: what a user needs to run it without this package.

``model.onnx`` gets ``model.onnx.json``; it names the format, the input (name, layout, shape, value range), the
preprocessing (resize, crop, interpolation, mean/std, channel order), the class names and the quantization.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mobilevit.data.transforms import Preprocessing, eval_resize_size
from mobilevit.errors import UserInputError
from mobilevit.models.pretrained import Weights

SIDECAR_SUFFIX = ".json"
SIDECAR_VERSION = 1


def sidecar_path(artifact: str | Path) -> Path:
    """Where the sidecar of ``artifact`` lives: the artifact's name with ``.json`` appended."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def sidecar_record(
    weights: Weights,
    artifact_format: str,
    image_size: tuple[int, int],
    batch: int | None,
    quantization: dict[str, Any] | None,
    io_quantization: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The sidecar content of an export of ``weights`` (``batch`` None: any batch size); ``io_quantization``: the
    dtype, scale and zero point of an input or output that is not float32 (``{"input": {...}, "output": {...}}``)."""
    preprocessing = weights.preprocessing
    run_config = weights.run_config or {}
    io_quantization = io_quantization or {}
    record = {
        "sidecar_version": SIDECAR_VERSION,
        "format": artifact_format,
        "model": weights.variant,
        "source": str(weights.source),
        "num_classes": weights.num_classes,
        "class_names": list(weights.class_names or map(str, range(weights.num_classes))),
        "input": {
            "name": "images",
            "layout": "NCHW",
            "dtype": "float32",
            "shape": [batch if batch is not None else "N", 3, *image_size],
            "channel_order": "RGB",
            "value_range": "[0, 1] pixel values, then (x - mean) / std per channel",
        },
        "output": {"name": "logits", "shape": [batch if batch is not None else "N", weights.num_classes]},
        "preprocessing": {
            **preprocessing.to_dict(),
            "resize_shorter_side": eval_resize_size(preprocessing.image_size, preprocessing.crop_pct),
            "center_crop": list(image_size),
        },
        "quantization": quantization,
        # The training run's data config (train.py checkpoints): evaluate.py rebuilds the dataset from it.
        "data": run_config.get("data"),
        "hflip_tta": bool((run_config.get("module") or {}).get("hflip_tta", False)),
    }
    for role, tensor in io_quantization.items():
        record[role].update(tensor)
    return record


def write_sidecar(artifact: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` next to ``artifact``; return the sidecar's path."""
    path = sidecar_path(artifact)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    """The sidecar of ``artifact``; a UserInputError when it is missing or unreadable."""
    path = sidecar_path(artifact)
    if not path.is_file():
        raise UserInputError(
            f"{artifact} has no sidecar {path.name} (class names and preprocessing); "
            "export it again with python -m mobilevit.export, or copy the sidecar next to it."
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserInputError(f"Cannot read the sidecar {path}: {err}.") from None
    missing = {"format", "class_names", "preprocessing", "input"} - set(record)
    if missing:
        raise UserInputError(f"The sidecar {path} lacks {', '.join(sorted(missing))}; export the artifact again.")
    return record


def preprocessing_of(record: dict[str, Any]) -> Preprocessing:
    """The :class:`Preprocessing` a sidecar records."""
    return Preprocessing.from_dict(record["preprocessing"])
