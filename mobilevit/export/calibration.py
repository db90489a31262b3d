"""Calibration images for post-training quantization: the training split of the checkpoint's own dataset, each image
passed through the evaluation transform recorded with the weights (what the shipped model will see)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mobilevit.checkpoint import datamodule_from_weights
from mobilevit.errors import UserInputError
from mobilevit.models.pretrained import Weights

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_IMAGES = 300
CALIBRATION_SPLIT = "train"


def calibration_images(
    weights: Weights, count: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0, root: str | Path | None = None
) -> torch.Tensor:
    """``count`` images (float32 (count, 3, S, S), fewer when the split is smaller) drawn at random (``seed``) from
    the training split of the dataset ``weights`` were trained on (``root`` overrides its ``data.root``).

    Raises UserInputError when ``weights`` carry no run config (not a train.py checkpoint) or the split is empty.
    """
    if weights.run_config is None:
        raise UserInputError(
            f"int8 calibration reads the training split of the checkpoint's dataset, but {weights.source} is not a "
            "train.py checkpoint (no run config): quantize a .ckpt written by train.py."
        )
    overrides = {"num_workers": 0, "cache_images": False, "root": str(root) if root is not None else None}
    datamodule = datamodule_from_weights(weights, overrides)
    datamodule.prepare_data()
    datamodule.check_images((CALIBRATION_SPLIT,))
    dataset = datamodule.raw_dataset(CALIBRATION_SPLIT)
    if len(dataset) == 0:
        raise UserInputError(
            f"The {CALIBRATION_SPLIT} split of {datamodule.root} has no images: int8 calibration needs some "
            "(point data.root at the training data with --data-root)."
        )
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:count].tolist()
    transform = weights.eval_transform()
    images = torch.stack([transform(dataset[index][0]) for index in indices])
    log.info("Calibration: %d images of the %s split of %s.", len(indices), CALIBRATION_SPLIT, datamodule.root)
    return images
