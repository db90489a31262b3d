"""Quantization-aware training (QAT): fine-tune a trained network through the int8 arithmetic it will ship with.

Post-training int8 quantization rounds weights and activations a network never saw rounded; QAT trains a few epochs
with both fake-quantized (rounded in the forward pass, straight-through in the backward pass; Jacob et al., CVPR
2018), so the weights adapt to the rounding and the activation ranges follow the data. The scheme is XNNPACK's
int8 one (per-channel symmetric weights, per-tensor activations, BatchNorm folded into the convolutions), set up
with PyTorch 2 export QAT (:func:`mobilevit.export.executorch.prepare_qat`). The recipe is
``configs/experiment/flowers102_qat.yaml``; ``python -m mobilevit.export <checkpoint> --format executorch
--quantize int8`` then writes the int8 program with the learned ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L
import torch

from mobilevit.errors import UserInputError

log = logging.getLogger(__name__)


# Data settings the fine-tuning must share with the fp32 run: another split could train on its test images.
MATCHING_DATA_KEYS = ("split_protocol", "image_size")


class QuantizationAwareTraining(L.Callback):
    """Replaces the module's network with its QAT-prepared graph before fit (and before a resume restores it).

    The graph is captured at the one training size: a resolution schedule or multi-scale sizes, or an evaluation size
    that differs, are refused in one line. Checkpoints hold the float weights under their usual names and the
    fake-quantizers' ranges as ``activation_post_process_<n>.*`` (read back by :func:`~mobilevit.models.read_weights`
    as ``Weights.fake_quant_state``); validation and the final test run the fake-quantized network.

    Args:
        source: the fp32 checkpoint fine-tuned (``model.pretrained``); when it is a train.py checkpoint, its
            :data:`MATCHING_DATA_KEYS` must equal this run's.
        float_ops: groups of operations kept float in training and in the int8 program
            (:data:`mobilevit.export.executorch.FLOAT_OP_GROUPS`; read back by :func:`recorded_float_ops`).

    Raises:
        UserInputError: no ``source``; the data plan trains or evaluates at more than one size, or differs from
            ``source``'s.
    """

    def __init__(self, source: str | None = None, float_ops: Sequence[str] = ()) -> None:
        self.source = source
        self.float_ops = tuple(float_ops)

    def _check_data(self, datamodule: L.LightningDataModule) -> None:
        from mobilevit.models import read_weights

        if not self.source:
            raise UserInputError(
                "Quantization-aware training fine-tunes a trained network: set model.pretrained=<fp32 checkpoint>."
            )
        trained = (read_weights(self.source).run_config or {}).get("data", {})
        for key in MATCHING_DATA_KEYS:
            if key in trained and hasattr(datamodule, key) and getattr(datamodule, key) != trained[key]:
                raise UserInputError(
                    f"model.pretrained {self.source} was trained with data.{key}={trained[key]}, this run has "
                    f"data.{key}={getattr(datamodule, key)}: quantization-aware training fine-tunes on the same data "
                    f"(set data.{key}={trained[key]})."
                )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from mobilevit.export.executorch import prepare_qat

        if isinstance(pl_module.net, torch.fx.GraphModule):  # prepared for an earlier stage of this run
            return
        datamodule = trainer.datamodule
        self._check_data(datamodule)
        sizes = sorted({*datamodule.size_plan.sizes(), datamodule.eval_image_size})
        if len(sizes) != 1:
            raise UserInputError(
                f"Quantization-aware training captures the network at one input size, but this run uses {sizes} px: "
                "set data.resolution_schedule=null, data.multiscale=false and data.eval_image_size=null."
            )
        pl_module.net = prepare_qat(pl_module.net, (sizes[0], sizes[0]), self.float_ops)
        floats = ", ".join(self.float_ops) or "none"
        log.info("Quantization-aware training: XNNPACK int8 fake-quantization at %d px (float: %s).", sizes[0], floats)


def recorded_float_ops(run_config: dict | None) -> tuple[str, ...]:
    """The ``float_ops`` a QAT run trained with, from its resolved config (``callbacks.qat.float_ops``): the int8
    program must keep the same groups float, or its graph would not match the learned ranges."""
    qat = ((run_config or {}).get("callbacks") or {}).get("qat") or {}
    return tuple(qat.get("float_ops") or ())
