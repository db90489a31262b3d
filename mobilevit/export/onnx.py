"""ONNX export (fp32, dynamic batch) and ONNX Runtime static int8 quantization (QDQ, per-channel weights)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mobilevit.errors import UserInputError

if TYPE_CHECKING:  # onnx comes with the [export] extra
    import onnx

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter writes opset 18; converting down fails on MobileViT (pytorch #150592)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# ONNX op types that get int8 inputs/outputs: the computing ones. Data movement (Reshape, Transpose, Slice, Squeeze,
# Expand, ...) is left to share its neighbours' ranges; ONNX Runtime refuses to quantize those when they act on a
# weight (e.g. GroupNorm's reshaped scale in MobileViT v2).
QUANTIZED_OP_TYPES = (
    "Conv", "MatMul", "Gemm", "Add", "Mul", "Sigmoid", "Softmax", "LayerNormalization", "GroupNormalization",
    "Concat", "ReduceMean", "GlobalAveragePool", "AveragePool", "Resize",
)  # fmt: skip


def max_opset() -> int:
    """The newest ONNX opset the installed ``onnx`` knows."""
    import onnx

    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> int:
    """``opset`` if this exporter can write it, else a UserInputError with the supported range."""
    if not MIN_OPSET <= opset <= max_opset():
        raise UserInputError(
            f"--opset {opset} is not supported: the exporter writes opsets {MIN_OPSET} to {max_opset()} "
            f"(lower opsets need a conversion that fails on MobileViT)."
        )
    return opset


def graph_opset(path: str | Path) -> int:
    """The default-domain opset an ONNX file declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def export_onnx(model: nn.Module, output: str | Path, image_size: tuple[int, int], opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (eval mode) to ``output`` as ONNX ``opset``; input ``images`` (N, 3, H, W), output ``logits``.

    The file carries no per-node debug metadata (stack traces, source paths). Raises UserInputError for an opset
    outside :func:`check_opset`'s range, and RuntimeError when the file written declares another opset than the one
    asked for (the exporter falls back silently when a conversion fails).
    """
    check_opset(opset)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, 3, *image_size)
    program = torch.onnx.export(
        model.eval(),
        (example,),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    # The exporter tags every node with its Python stack trace, FX node and module path: the exporting machine's
    # source paths inside a file that ships, and 0.7-1 MB of mobilevit_xxs's 5 MB.
    for node in program.model.graph.all_nodes():
        node.metadata_props.clear()
    program.save(str(output), external_data=False)
    written = graph_opset(output)
    if written != opset:
        raise RuntimeError(f"Asked for ONNX opset {opset} but the exporter wrote opset {written} to {output}.")
    return output


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _softmax_nodes(graph: onnx.GraphProto) -> list[str]:
    """Every Softmax."""
    return [node.name for node in graph.node if node.op_type == "Softmax"]


def _norm_nodes(graph: onnx.GraphProto) -> list[str]:
    """Every LayerNormalization and GroupNormalization, and GroupNorm as torch writes it: InstanceNormalization,
    then (through Reshapes) a Mul by the per-channel scale and an Add of the bias."""
    readers = _consumers(graph)
    names = []
    for node in graph.node:
        if node.op_type in ("LayerNormalization", "GroupNormalization"):
            names.append(node.name)
        elif node.op_type == "InstanceNormalization":
            names.append(node.name)
            output = node.output[0]
            while (next_nodes := readers.get(output, [])) and next_nodes[0].op_type == "Reshape":
                output = next_nodes[0].output[0]
            scale = [reader for reader in readers.get(output, []) if reader.op_type == "Mul"]
            bias = [reader for mul in scale for reader in readers.get(mul.output[0], []) if reader.op_type == "Add"]
            names += [affine.name for affine in scale + bias]
    return names


def _constants(graph: onnx.GraphProto) -> set[str]:
    """Names of the graph's initializers and Constant outputs (weights; an exporter may share one between layers)."""
    constants = {init.name for init in graph.initializer}
    return constants | {output for node in graph.node if node.op_type == "Constant" for output in node.output}


def _attention_products(graph: onnx.GraphProto) -> list[str]:
    """The activation x activation products of attention. MobileViT v1: the MatMuls whose both inputs are activations
    (q kᵀ and attn v). MobileViT v2's separable attention (Mehta & Rastegari 2022, section 3.2): the Mul of the
    softmax scores with the keys and, after their ReduceSum (the context vector), the Mul of ReLU(values) with it."""
    constants = _constants(graph)
    readers = _consumers(graph)
    names = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and not any(name in constants for name in node.input)
    ]
    for softmax in graph.node:
        if softmax.op_type != "Softmax":
            continue
        for scores_x_keys in readers.get(softmax.output[0], []):
            if scores_x_keys.op_type != "Mul":
                continue
            names.append(scores_x_keys.name)
            for context in readers.get(scores_x_keys.output[0], []):
                if context.op_type == "ReduceSum":
                    names += [node.name for node in readers.get(context.output[0], []) if node.op_type == "Mul"]
    return names


def _residual_adds(graph: onnx.GraphProto) -> list[str]:
    """The residual adds of the pre-norm transformer layers, ``x + attn(norm1(x))`` and ``x + mlp(norm2(x))``: the
    Adds one of whose inputs a norm also reads (LayerNormalization, or v2's GroupNorm as InstanceNormalization after
    a Reshape). They carry the token stream, whose range grows layer by layer."""
    readers, constants = _consumers(graph), _constants(graph)
    norms = ("LayerNormalization", "GroupNormalization", "InstanceNormalization")

    def normalized(name: str) -> bool:
        return any(
            reader.op_type in norms or (reader.op_type == "Reshape" and normalized(reader.output[0]))
            for reader in readers.get(name, [])
        )

    activations = [(node, [name for name in node.input if name not in constants]) for node in graph.node]
    return [node.name for node, inputs in activations if node.op_type == "Add" and any(map(normalized, inputs))]


def _silu_nodes(graph: onnx.GraphProto) -> list[str]:
    """The Sigmoid and Mul of every SiLU, x·σ(x) (LiteRT's int8 scheme keeps SiLU in float): a Mul of a Sigmoid's
    output with that Sigmoid's input."""
    sigmoids = {node.output[0]: node for node in graph.node if node.op_type == "Sigmoid"}
    names = []
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for gate, value in (node.input, node.input[::-1]):
            sigmoid = sigmoids.get(gate)
            if sigmoid is not None and sigmoid.input[0] == value:
                names += [sigmoid.name, node.name]
                break
    return names


# --float-ops: the operator groups that may stay float32, each found in the graph by its function. Op types alone
# would miss v2: torch writes its GroupNorm as InstanceNormalization + an affine Mul and Add, and its separable
# attention as elementwise Mul + ReduceSum.
FLOAT_OP_GROUPS = {
    "softmax": _softmax_nodes, "norm": _norm_nodes, "attention": _attention_products, "silu": _silu_nodes,
    "residual": _residual_adds,
}  # fmt: skip


class _ImageReader:
    """onnxruntime CalibrationDataReader over a float32 image tensor, one image per call: the histogram
    calibrators (percentile, entropy) stack the collected outputs, so every call must have the same shape."""

    def __init__(self, images: torch.Tensor) -> None:
        self.batches = iter(images.split(1))

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {"images": batch.numpy()}


# Entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017): a histogram of each activation, searched
# for the 8-bit range (128 quantized bins) with the least KL divergence from it. quantize_static builds its entropy
# calibrator with 128 bins for 128 quantized bins: a single candidate, the full range, so its "entropy" files equalled
# the min/max ones byte for byte. TensorRT's 2048 bins give 961 candidate ranges per tensor (6 % to 100 % of the
# largest value), which ONNX Runtime searches in Python: minutes for mobilevit_xxs's 311 tensors on 2 cores.
ENTROPY_HISTOGRAM_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128


def _entropy_ranges(model: Path, reader: _ImageReader, op_types: list[str], output: Path, bins: int) -> None:
    """Calibrate ``model``'s activation ranges with ONNX Runtime's entropy calibrator on a histogram of ``bins`` bins
    (:data:`ENTROPY_QUANTIZED_BINS` quantized) and save them where ``quantize_static`` reads a calibration cache."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    calibrator = create_calibrator(
        model,
        op_types,
        augmented_model_path=str(output.with_name("entropy_augmented.onnx")),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": bins, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
    )
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), output)


def quantize_onnx(
    fp32_path: str | Path,
    output: str | Path,
    images: torch.Tensor,
    method: str = "minmax",
    float_ops: tuple[str, ...] = (),
    entropy_bins: int = ENTROPY_HISTOGRAM_BINS,
) -> dict:
    """Static int8 quantization of an fp32 ONNX file with ONNX Runtime: QDQ format, int8 weights per channel
    (symmetric), uint8 activations, ranges calibrated on ``images`` (N, 3, H, W) with ``method``.

    ``float_ops`` names groups of :data:`FLOAT_OP_GROUPS` kept in float32; ``entropy_bins``: the histogram of
    ``method="entropy"`` (fewer bins search fewer, coarser ranges, faster). Returns what was done (for the sidecar).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise UserInputError(f"--calibration-method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}.")
    unknown = sorted(set(float_ops) - set(FLOAT_OP_GROUPS))
    if unknown:
        raise UserInputError(f"--float-ops: unknown {', '.join(unknown)}; valid: {', '.join(FLOAT_OP_GROUPS)}.")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        import onnx

        graph = onnx.load(str(prepared)).graph
        op_types = sorted({node.op_type for node in graph.node} & set(QUANTIZED_OP_TYPES))
        exclude = sorted({name for group in float_ops for name in FLOAT_OP_GROUPS[group](graph)})
        ranges = None
        if method == "entropy":
            ranges = Path(tmp) / "entropy_ranges.json"
            _entropy_ranges(prepared, _ImageReader(images), op_types, ranges, entropy_bins)
        quantize_static(
            str(prepared),
            str(output),
            _ImageReader(images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy,
            }[method],
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            extra_options={"CalibMaxIntermediateOutputs": 8} if method == "percentile" else {},
            calibration_cache_path=ranges,
        )
    done = {"runtime": "onnxruntime", "float_ops": list(float_ops), "excluded_nodes": len(exclude)}
    return {**done, "histogram_bins": entropy_bins} if method == "entropy" else done


def int8_tensor_count(path: str | Path) -> tuple[int, int]:
    """(int8/uint8 initializers, float32 initializers with more than 1 element) of an ONNX file: the weights an
    int8 file really stores as integers against the ones left in float."""
    import onnx

    graph = onnx.load(str(path)).graph
    ints = sum(init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for init in graph.initializer)
    floats = sum(
        init.data_type == onnx.TensorProto.FLOAT and len(init.dims) > 1 for init in graph.initializer
    )
    return ints, floats
