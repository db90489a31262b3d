"""``python -m mobilevit.export``: checkpoint, weights file or Hub id -> ONNX / ExecuTorch / LiteRT / Core ML file +
sidecar."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import torch

from mobilevit.data.transforms import check_image_size
from mobilevit.errors import UserInputError, require_choice, require_int
from mobilevit.export import calibration, onnx as onnx_export
from mobilevit.export import coreml as coreml_export, executorch as executorch_export, litert as litert_export
from mobilevit.export.runtime import COREML_PLATFORM, EXTRAS, load_artifact, require_extra
from mobilevit.export.sidecar import sidecar_record, write_sidecar
from mobilevit.models import list_models, mobilevit_v2, read_weights
from mobilevit.models.hub import HUB_PREFIX, IMAGENET

# Why H/W stay static: each MobileViT block resizes a feature map whose side is odd, decided per input size while
# tracing; a graph with traced-dynamic H/W ran at other sizes but differed from PyTorch by 2.5e-3 to 2.7e-2
# (224x224, 200x264, 96x80 for one traced at 256x256), so it is refused instead of shipped.
DYNAMIC_SIZE_REFUSAL = (
    "--dynamic-size is not supported: MobileViT blocks choose a feature-map resize per input size at export time, "
    "so one graph cannot serve every H x W; export one file per size with --image-size H W."
)
SUFFIXES = {"onnx": ".onnx", "executorch": ".pte", "litert": ".tflite", "coreml": ".mlpackage"}
QUANTIZATIONS = ("int8",)
# Per format: the --calibration-method and --float-ops choices (LiteRT's and Core ML's int8 programs are made by the
# ExecuTorch export's quantizer: mobilevit.export.litert, mobilevit.export.coreml).
PT2E_FORMATS = ("executorch", "litert", "coreml")
CALIBRATION_METHODS = {
    "onnx": onnx_export.CALIBRATION_METHODS, **dict.fromkeys(PT2E_FORMATS, executorch_export.PT2E_CALIBRATION_METHODS),
}  # fmt: skip
FLOAT_OP_GROUPS = {
    "onnx": tuple(onnx_export.FLOAT_OP_GROUPS), **dict.fromkeys(PT2E_FORMATS, tuple(executorch_export.FLOAT_OP_GROUPS)),
}  # fmt: skip
RUNTIME_NAMES = {"onnx": "onnxruntime", "executorch": "ExecuTorch/XNNPACK", "litert": "LiteRT", "coreml": "Core ML"}
# --float-ops when none are given, every format: the groups that kept int8 accuracy, chosen on the val split
# (docs/int8_sensitivity.md) and measured on the test split (docs/shipped_accuracy.md), the stratified CPU recipe's
# models. MobileViT v2 (mobilevitv2_050): ExecuTorch -0.6 point, ONNX Runtime -0.7 (every group int8: -3.0 to -4.0).
# v1 (mobilevit_xxs): ExecuTorch -0.5, ONNX Runtime -0.7 (SiLU int8 too: -1.1, -1.1).
DEFAULT_FLOAT_OPS = {"v1": ("silu",), "v2": ("residual", "attention", "silu")}


def _union(choices: dict[str, tuple[str, ...]]) -> list[str]:
    """Every format's choices, once each, in order (argparse's list; each format's own is checked in export())."""
    return list(dict.fromkeys(choice for per_format in choices.values() for choice in per_format))


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mobilevit.export", description=__doc__.split("\n")[0])
    parser.add_argument(
        "checkpoint", help="train.py checkpoint (.ckpt), weights file (.pth/.pt/.bin/.safetensors), hf-hub:<repo_id>"
    )
    parser.add_argument("--format", default="onnx", choices=list(SUFFIXES), help="artifact format (default: onnx)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help="static int8 quantization (weights and activations)")
    parser.add_argument("--model", choices=list_models(), help="variant; read from the weights when omitted")
    parser.add_argument("--output", help="file to write (default: next to the checkpoint)")
    parser.add_argument(
        "--image-size", type=int, nargs="+", metavar="N", help="H [W] (default: the size recorded with the weights)"
    )
    parser.add_argument("--opset", type=int, default=onnx_export.DEFAULT_OPSET, help="ONNX opset (18 and newer)")
    parser.add_argument("--no-fuse-bn", action="store_true", help="keep BatchNorm layers separate")
    parser.add_argument("--dynamic-size", action="store_true", help="refused: H and W are fixed per export")
    calib = parser.add_argument_group("int8 calibration (training split of the checkpoint's dataset)")
    calib.add_argument("--calibration-images", type=int, default=calibration.DEFAULT_CALIBRATION_IMAGES)
    calib.add_argument(
        "--calibration-method", default="minmax", choices=_union(CALIBRATION_METHODS),
        help="activation ranges: minmax (every format), percentile or entropy (onnx), histogram (executorch, litert, "
        "coreml)",
    )  # fmt: skip
    calib.add_argument(
        "--float-ops", nargs="*", choices=_union(FLOAT_OP_GROUPS),
        help="operator groups kept in float32: softmax, norm, attention, silu, residual (onnx); residual, attention, "
        "silu (executorch, litert, coreml: XNNPACK's int8 scheme keeps softmax, norms and attention matmuls in float "
        "already). Default: residual attention silu for MobileViT v2, silu for v1; --float-ops alone: none "
        "(everything int8)",
    )  # fmt: skip
    calib.add_argument("--data-root", help="where the training data is (default: the checkpoint's data.root)")
    calib.add_argument("--seed", type=int, default=0, help="which calibration images are drawn")
    return parser


def default_float_ops(variant: str) -> tuple[str, ...]:
    """The --float-ops of an int8 export that gives none (:data:`DEFAULT_FLOAT_OPS` of the variant's family)."""
    return DEFAULT_FLOAT_OPS["v2" if variant in mobilevit_v2.VARIANTS else "v1"]


def _output_path(args: argparse.Namespace, variant: str) -> Path:
    if args.output:
        return Path(args.output)
    remote = args.checkpoint == IMAGENET or args.checkpoint.startswith(HUB_PREFIX)
    stem = Path(variant) if remote else Path(args.checkpoint).with_suffix("")
    tag = f"_{args.quantize}" if args.quantize else ""
    return stem.with_name(stem.name + tag + SUFFIXES[args.format])


def max_abs_diff(model: torch.nn.Module, artifact: Path, image_size: tuple[int, int], batch: int = 3) -> float:
    """Largest |artifact − PyTorch| logit difference on a random batch, the artifact run in its own runtime."""
    images = torch.rand(batch, 3, *image_size, generator=torch.Generator().manual_seed(0))
    model.eval()  # a converted QAT graph's patched eval() returns None
    with torch.no_grad():
        expected = model(images)
    return float((load_artifact(artifact)(images) - expected).abs().max())


def export(args: argparse.Namespace) -> Path:
    """Write the artifact and its sidecar that ``args`` ask for; return the artifact's path."""
    if args.dynamic_size:
        raise UserInputError(DYNAMIC_SIZE_REFUSAL)
    key = f"--calibration-method for --format {args.format}"
    require_choice(args.calibration_method, key, CALIBRATION_METHODS[args.format])
    for group in args.float_ops or ():
        require_choice(group, f"--float-ops for --format {args.format}", FLOAT_OP_GROUPS[args.format])
    require_extra(*EXTRAS[args.format])
    if args.format == "onnx":
        require_extra("onnxscript", "export")
        onnx_export.check_opset(args.opset)
    if args.format == "litert":
        require_extra("litert_torch", "litert")
    if args.quantize and args.format in ("litert", "coreml"):
        require_extra("executorch", args.format)  # its XNNPACK quantizer makes the int8 program
    weights = read_weights(args.checkpoint, args.model)
    sizes = args.image_size or [weights.preprocessing.image_size]
    size = tuple(sizes * 2)[:2] if len(sizes) == 1 else tuple(sizes[:2])
    for side in size:
        check_image_size(side, "--image-size")
    # A quantization-aware training checkpoint carries its int8 ranges: XNNPACK uses them, no calibration.
    learned_ranges = args.quantize is not None and args.format == "executorch" and weights.fake_quant_state is not None
    images = None
    if args.quantize and not learned_ranges:
        count = require_int(args.calibration_images, "--calibration-images", 1)
        images = calibration.calibration_images(weights, count, args.seed, args.data_root)
        if weights.fake_quant_state is not None:
            print(f"A quantization-aware training checkpoint: --format {args.format} calibrates its fine-tuned float "
                  "weights (--format executorch uses the learned int8 ranges).")  # fmt: skip
    float_ops = default_float_ops(weights.variant) if args.float_ops is None else tuple(args.float_ops)
    if args.quantize and args.format == "litert":
        litert_export.check_float_ops(weights.variant, float_ops)
    if learned_ranges:
        from mobilevit.callbacks.qat import recorded_float_ops

        float_ops = recorded_float_ops(weights.run_config)
        if args.float_ops is not None and set(args.float_ops) != set(float_ops):
            raise UserInputError(
                f"--float-ops {' '.join(args.float_ops)}: this quantization-aware training checkpoint was trained with "
                f"callbacks.qat.float_ops={list(float_ops)}, which its int8 program keeps (drop --float-ops)."
            )
        model = executorch_export.qat_int8_network(weights, size)
        print("Quantization-aware training checkpoint: int8 with the ranges learned in training (no calibration).")
    else:
        model = weights.build(fuse_bn=not args.no_fuse_bn)
    output = _output_path(args, weights.variant)

    def pt2e_int8(runtime: str, method: str) -> dict:  # the sidecar's record of a PT2E (XNNPACK-scheme) int8 program
        return {"scheme": "int8", "runtime": runtime, "method": method, "float_ops": list(float_ops)}

    quantization = None
    io_quantization = None
    if args.format == "onnx":
        if images is None:
            onnx_export.export_onnx(model, output, size, args.opset)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = onnx_export.export_onnx(model, Path(tmp) / "fp32.onnx", size, args.opset)
                output.parent.mkdir(parents=True, exist_ok=True)
                done = onnx_export.quantize_onnx(fp32, output, images, args.calibration_method, float_ops)
            quantization = {"scheme": "int8", "method": args.calibration_method, **done}
        batch = None
    elif args.format == "litert":
        litert_export.export_litert(model, output, size, images, args.calibration_method, float_ops)
        if args.quantize:
            quantization = pt2e_int8("xnnpack", args.calibration_method)
            io_quantization = litert_export.io_quantization(output)
        batch = litert_export.MAX_BATCH
    elif args.format == "coreml":  # written below, its sidecar record in the file's metadata
        quantization = {"scheme": "float16", "runtime": "coreml"}  # Core ML's default precision
        if args.quantize:
            quantization = pt2e_int8("coreml", args.calibration_method)
        batch = coreml_export.MAX_BATCH
    else:
        method = args.calibration_method
        delegation = executorch_export.export_executorch(model, output, size, images, method, float_ops)
        if args.quantize:
            quantization = pt2e_int8("xnnpack", "qat" if learned_ranges else method)
        outside = ", ".join(f"{name} x{count}" for name, count in sorted(delegation.outside.items())) or "none"
        print(f"XNNPACK delegate: {sum(delegation.delegated.values())} operators; outside it: {outside}")
        batch = executorch_export.MAX_BATCH
    if images is not None:
        quantization.update(calibration_images=len(images), calibration_split=calibration.CALIBRATION_SPLIT)
    if quantization is not None and weights.fake_quant_state is not None:  # the fp32 checkpoint QAT started from
        quantization["qat_from"] = (weights.run_config or {}).get("model", {}).get("pretrained")
    record = sidecar_record(weights, args.format, size, batch, quantization, io_quantization)
    if args.format == "coreml":
        metadata = {"mobilevit.sidecar": json.dumps(record)}  # an app's copy of the file keeps what the sidecar says
        coreml_export.export_coreml(model, output, size, images, args.calibration_method, float_ops, metadata)
    sidecar = write_sidecar(output, record)
    kind = (quantization or {}).get("scheme", "fp32")
    print(f"Wrote {output} ({args.format} {kind}, input 'images' {batch or 'N'} x 3 x {size[0]} x {size[1]}, "
          f"BatchNorm folded: {not args.no_fuse_bn}) and {sidecar.name}")  # fmt: skip
    if args.format == "coreml" and platform.system() != COREML_PLATFORM:
        int8, weighted = coreml_export.int8_weight_count(output)
        print(f"Core ML runs only on macOS: not run here. Convolutions and linear layers reading int8 weights: "
              f"{int8} of {weighted}.")  # fmt: skip
        return output
    diff = max_abs_diff(model, output, size)
    print(f"{RUNTIME_NAMES[args.format]} vs PyTorch max |logit diff| on a batch of 3: {diff:.2e}")
    return output


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit code 2 (one line on stderr) for a usage error."""
    args = build_parser().parse_args(argv)
    try:
        export(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
