"""Core ML ``.mlpackage`` export through coremltools: float16, or int8 weights and activations with XNNPACK's scheme.

Core ML is the on-device runtime of iPhone, iPad and Mac (CPU, GPU and Neural Engine). The file is an ML program
(``convert_to="mlprogram"``, iOS 17 / macOS 14 and newer) with Core ML's default precision: float16 weights and
compute, what the Neural Engine runs. ``--quantize int8`` converts the ExecuTorch export's int8 program
(:func:`mobilevit.export.executorch.quantize_pt2e`: the same calibration methods and ``--float-ops`` groups):
every convolution and linear layer reads int8 weights (``constexpr_affine_dequantize``), and the activations
between them pass through int8 ``quantize`` / ``dequantize`` pairs, Core ML's W8A8 form.

Core ML runs only on Apple platforms: this module converts and inspects anywhere (coremltools'
``skip_model_load``); :class:`mobilevit.export.runtime.Artifact` runs a ``.mlpackage`` on macOS only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilevit.export import executorch as executorch_export
from mobilevit.export.runtime import require_extra

MAX_BATCH = 1  # one image per call, as the ExecuTorch and LiteRT programs (runtime.MLPACKAGE_MAX_BATCH)
MINIMUM_DEPLOYMENT_TARGET = "iOS17"  # coremltools' target name: ML programs with int8 quantize / dequantize ops
WEIGHT_OPS = ("conv", "linear")  # the operations whose weights an int8 program stores as int8


def export_coreml(
    model: nn.Module,
    output: str | Path,
    image_size: tuple[int, int],
    images: torch.Tensor | None = None,
    method: str = "minmax",
    float_ops: Collection[str] = (),
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` as a Core ML ML program (a ``.mlpackage`` folder) at ``output``: input ``images``
    (1, 3, H, W) float, output ``logits`` (1, C). float16 weights and compute; int8 weights and activations when
    calibration ``images`` (N, 3, H, W) are given, with the activation ranges of ``method`` and the groups
    ``float_ops`` kept float. ``metadata`` goes into the file's user-defined metadata. Raises UserInputError when
    coremltools (or, for int8, executorch) is missing."""
    require_extra("coremltools", "coreml")
    import coremltools as ct
    import numpy as np

    if images is not None:
        require_extra("executorch", "coreml")
        model = executorch_export.quantize_pt2e(model, image_size, images, method, float_ops)
    model.eval()  # a converted int8 graph's patched eval() returns None
    example = torch.rand(MAX_BATCH, 3, *image_size)
    program = torch.export.export(model, (example,)).run_decompositions({})
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name="images", shape=tuple(example.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],  # float32 in and out, as the sidecar says
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
    )
    mlmodel.short_description = "MobileViT image classifier: normalized RGB images (1, 3, H, W) -> logits (1, C)"
    for key, value in (metadata or {}).items():
        mlmodel.user_defined_metadata[key] = value
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(output))
    return output


def _operations(path: str | Path) -> list[Any]:
    """The operations of the main function of the ML program at ``path`` (protobuf ``Operation`` messages), read
    without loading the model into Core ML (which needs macOS)."""
    require_extra("coremltools", "coreml")
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    main = spec.mlProgram.functions["main"]
    return list(main.block_specializations[main.opset].operations)


def operation_counts(path: str | Path) -> Counter[str]:
    """How many operations of each type the ML program at ``path`` holds (``const`` included)."""
    return Counter(op.type for op in _operations(path))


def int8_weight_count(path: str | Path) -> tuple[int, int]:
    """(weight operations reading int8 weights, weight operations): of the convolutions and linear layers of the ML
    program at ``path``, those whose ``weight`` comes from a ``constexpr_affine_dequantize`` of int8 data."""
    import coremltools as ct

    operations = _operations(path)
    int8 = ct.proto.MIL_pb2.DataType.Value("INT8")
    int8_outputs = {
        op.outputs[0].name
        for op in operations
        if op.type == "constexpr_affine_dequantize" and op.attributes["quantized_data"].type.tensorType.dataType == int8
    }
    weighted = [op for op in operations if op.type in WEIGHT_OPS]
    reading_int8 = sum(op.inputs["weight"].arguments[0].name in int8_outputs for op in weighted)
    return reading_int8, len(weighted)
