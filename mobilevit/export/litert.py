"""LiteRT (formerly TensorFlow Lite) ``.tflite`` export through litert-torch: fp32, or int8 with XNNPACK's scheme.

LiteRT is Android's on-device runtime (also iOS, embedded Linux, microcontrollers); its CPU path runs on XNNPACK,
as ExecuTorch's does, so the int8 program is made by the ExecuTorch export's quantizer
(:func:`mobilevit.export.executorch.quantize_pt2e`: the same calibration methods and ``--float-ops`` groups) and
converted by litert-torch, which turns each quantize / dequantize pair into LiteRT's int8 operations. The graph is
the ExecuTorch export's too (:func:`~mobilevit.export.executorch.export_ready`: unfused attention, SiLU as
``x * sigmoid(x)``). An int8 file takes int8 images and gives int8 logits, each with the scale and zero point in
the file (and the sidecar): ``q = round(x / scale) + zero_point``.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from mobilevit.errors import UserInputError
from mobilevit.export import executorch as executorch_export
from mobilevit.export.runtime import require_extra
from mobilevit.models import mobilevit_v2

MAX_BATCH = 1  # one image per call, as the ExecuTorch program (runtime.TFLITE_MAX_BATCH)


def check_float_ops(variant: str, float_ops: Collection[str]) -> None:
    """Refuse an int8 MobileViT v2 program whose attention products are int8: their softmax input would become an
    int8 SOFTMAX with a calibrated output scale, which LiteRT refuses to load (its int8 softmax needs 1/256; measured
    with ai-edge-litert 2.3: "output->params.scale not near 1.f / 256"). v1's softmax feeds float matmuls only."""
    if variant in mobilevit_v2.VARIANTS and "attention" not in float_ops:
        raise UserInputError(
            f"--format litert --quantize int8 of {variant} needs 'attention' in --float-ops (LiteRT's int8 softmax "
            "takes only a fixed output scale); the default (residual attention silu) has it."
        )


def export_litert(
    model: nn.Module,
    output: str | Path,
    image_size: tuple[int, int],
    images: torch.Tensor | None = None,
    method: str = "minmax",
    float_ops: Collection[str] = (),
) -> Path:
    """Write ``model`` as a LiteRT flatbuffer at ``output``: input (1, 3, H, W), output logits (1, C); int8 when
    calibration ``images`` (N, 3, H, W) are given, with the activation ranges of ``method`` and the groups
    ``float_ops`` kept float32. Raises UserInputError when litert-torch (or, for int8, executorch) is missing."""
    require_extra("litert_torch", "litert")
    import litert_torch

    model = executorch_export.export_ready(model)
    quant_config = None
    if images is not None:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

        model = executorch_export.quantize_pt2e(model, image_size, images, method, float_ops, fold_weights=False)
        # The converter reads only whether the quantizer was static; the graph's own Q/DQ pairs say what is int8.
        static = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
        quant_config = QuantConfig(pt2e_quantizer=PT2EQuantizer().set_global(static))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(MAX_BATCH, 3, *image_size)
    litert_torch.convert(model, (example,), quant_config=quant_config).export(str(output))
    return output


def io_quantization(path: str | Path) -> dict[str, dict[str, float | int | str]]:
    """The dtype, scale and zero point of the file's input and output tensors, for those that are not float32 (an
    int8 file's): ``{"input": {"dtype": "int8", "scale": ..., "zero_point": ...}, "output": ...}``."""
    import numpy as np

    from mobilevit.export.runtime import litert_interpreter

    interpreter = litert_interpreter(path)
    tensors = {"input": interpreter.get_input_details()[0], "output": interpreter.get_output_details()[0]}
    found = {}
    for role, tensor in tensors.items():
        if tensor["dtype"] != np.float32:
            scale, zero_point = tensor["quantization"]
            found[role] = {
                "dtype": np.dtype(tensor["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point),
                "quantized": "q = round(x / scale) + zero_point; x = (q - zero_point) * scale",
            }  # fmt: skip
    return found
