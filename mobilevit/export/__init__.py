"""Export a trained model to a file that runs without PyTorch training code, with a sidecar JSON next to it.

    python -m mobilevit.export logs/train/runs/<run>/checkpoints/best.ckpt                      # ONNX fp32
    python -m mobilevit.export best.ckpt --quantize int8                                       # ONNX Runtime int8
    python -m mobilevit.export best.ckpt --format executorch [--quantize int8]                 # ExecuTorch/XNNPACK
    python -m mobilevit.export best.ckpt --format litert [--quantize int8]                     # LiteRT .tflite
    python -m mobilevit.export best.ckpt --format coreml [--quantize int8]                     # Core ML .mlpackage
    python -m mobilevit.export weights.safetensors --output xs.onnx --image-size 320
    python -m mobilevit.export hf-hub:apple/mobilevit-small --output mobilevit_s.onnx

The input size defaults to the evaluation size recorded with the weights; BatchNorm is folded. Height and width are
fixed: export one file per input size. int8 calibrates on images of the checkpoint's training split passed through
its evaluation transform; ``--float-ops`` keeps operation groups in float (by default the SiLUs, and for MobileViT v2
the transformer's residual adds and attention products too: what kept their int8 accuracy). Every export is run once
in its runtime and compared with PyTorch.

Modules: :mod:`.onnx` (ONNX + ONNX Runtime quantization), :mod:`.executorch` (ExecuTorch/XNNPACK, PT2E),
:mod:`.litert` (LiteRT through litert-torch, the same PT2E int8 program), :mod:`.coreml` (Core ML through
coremltools, the same PT2E int8 program), :mod:`.calibration`, :mod:`.sidecar`, :mod:`.runtime` (running artifacts),
:mod:`.cli`.
"""

from mobilevit.export.cli import DYNAMIC_SIZE_REFUSAL, main
from mobilevit.export.onnx import export_onnx
from mobilevit.export.runtime import Artifact, is_artifact, load_artifact

__all__ = ["DYNAMIC_SIZE_REFUSAL", "Artifact", "export_onnx", "is_artifact", "load_artifact", "main"]
