"""Shipping to devices: ONNX (fp32, ONNX Runtime int8), ExecuTorch/XNNPACK and LiteRT (fp32, int8) artifacts of a tiny
v1 and v2 checkpoint, run in their own runtimes; Core ML (float16, int8) converted and inspected (it runs on macOS
only); sidecars; calibration on the training split; evaluate.py and predict on an artifact; one-line refusals (exit
code 2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CHECKPOINT_MODELS

from mobilevit.checkpoint import datamodule_from_weights, read_trained
from mobilevit.export import calibration, load_artifact, main as export_main
from mobilevit.export.onnx import FLOAT_OP_GROUPS, int8_tensor_count, quantize_onnx
from mobilevit.models.mobilevit_v1 import MultiHeadSelfAttention, TransformerLayer
from mobilevit.models.mobilevit_v2 import LinearTransformerLayer, SeparableSelfAttention
from mobilevit.export.sidecar import sidecar_path

MODELS = TINY_CHECKPOINT_MODELS
executorch = pytest.importorskip("executorch", reason="the ExecuTorch tests need pip install -e '.[executorch]'")


def v2(name: str) -> bool:
    return name.startswith("mobilevitv2")


def _export(ckpt: Path, output: Path, *args: str) -> Path:
    assert export_main([str(ckpt), "--output", str(output), *args]) == 0
    return output


def _max_diff(ckpt: Path, artifact: Path, batch: int = 4) -> float:
    net = read_trained(ckpt).build()
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float((load_artifact(artifact)(images) - net(images)).abs().max())


@pytest.mark.parametrize("name", MODELS)
def test_onnx_fp32_matches_pytorch_and_int8_holds_int8(name: str, tiny_checkpoints, tmp_path: Path) -> None:
    ckpt = tiny_checkpoints[name]
    fp32 = _export(ckpt, tmp_path / "m.onnx")
    assert _max_diff(ckpt, fp32) <= 1e-4
    int8 = _export(ckpt, tmp_path / "m_int8.onnx", "--quantize", "int8", "--calibration-images", "8")
    ints, floats = int8_tensor_count(int8)
    # Every conv/linear weight (rank > 1) is stored as int8; none stayed float32.
    assert ints > 0 and floats == 0
    graph = onnx.load(str(int8)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    # Neither file carries the exporter's per-node debug metadata: no stack trace names this machine's source files.
    for path in (fp32, int8):
        assert not any(node.metadata_props for node in onnx.load(str(path)).graph.node)
        assert b"mobilevit/models" not in path.read_bytes()
    sidecar = json.loads(sidecar_path(int8).read_text())
    assert sidecar["quantization"]["scheme"] == "int8" and sidecar["quantization"]["calibration_images"] == 8
    # No --float-ops: v2 keeps its residual adds, attention products and SiLUs float, v1 its SiLUs (what kept their
    # int8 accuracy).
    assert sidecar["quantization"]["float_ops"] == (["residual", "attention", "silu"] if v2(name) else ["silu"])
    assert sidecar["class_names"] == ["circle", "square", "triangle"]
    assert sidecar["preprocessing"]["image_size"] == 32 and sidecar["input"]["shape"] == ["N", 3, 32, 32]
    assert load_artifact(int8)(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def _producers(graph: onnx.GraphProto, op_type: str, first_input: int = 0) -> set[str]:
    """The op types (``initializer`` for weights) that make the inputs ``first_input``, ... of ``op_type`` nodes."""
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    made_by |= {initializer.name: "initializer" for initializer in graph.initializer}
    nodes = [node for node in graph.node if node.op_type == op_type]
    return {made_by[name] for node in nodes for name in node.input[first_input:] if name}


def _activation_scales(graph: onnx.GraphProto) -> dict[str, float]:
    """Quantized tensor -> the scale of its QuantizeLinear: the activation ranges calibration chose."""
    values = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    return {node.input[0]: float(values[node.input[1]]) for node in graph.node if node.op_type == "QuantizeLinear"}


def _consumers(graph: onnx.GraphProto, op_type: str) -> set[str]:
    """The op types of the nodes that read the outputs of ``op_type`` nodes."""
    outputs = {output for node in graph.node if node.op_type == op_type for output in node.output}
    return {node.op_type for node in graph.node if outputs & set(node.input)}


def test_every_calibration_method_quantizes_and_float_ops_stay_float(tiny_checkpoints, tmp_path: Path) -> None:
    """Each calibration method on 20 images (not a multiple of any batch size); ``float_ops=(softmax, norm,
    attention, silu)``: the softmax reads the float attention scores, LayerNorm its float scale and bias and SiLU's Mul
    its float Sigmoid, where the plain int8 file dequantizes them (a LayerNorm's first input may still come
    dequantized from the op before it)."""
    fp32 = _export(tiny_checkpoints["mobilevit_xxs"], tmp_path / "m.onnx")
    images = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    graphs = {}
    kept = ("softmax", "norm", "attention", "silu")
    for name, method, float_ops in [("minmax", "minmax", ()), ("percentile", "percentile", ()),
                                    ("entropy", "entropy", ()), ("kept", "minmax", kept)]:
        path = tmp_path / f"{name}.onnx"
        done = quantize_onnx(fp32, path, images, method, float_ops, entropy_bins=512)  # 2048: minutes
        (logits,) = onnxruntime.InferenceSession(str(path)).run(None, {"images": images[:2].numpy()})
        assert int8_tensor_count(path)[0] > 0 and logits.shape == (2, 3) and np.isfinite(logits).all()
        graphs[name] = onnx.load(str(path)).graph
    for name in ("minmax", "percentile", "entropy"):
        assert _producers(graphs[name], "Softmax") == {"DequantizeLinear"}
        assert _producers(graphs[name], "LayerNormalization", first_input=1) == {"DequantizeLinear"}
    assert "DequantizeLinear" not in _producers(graphs["kept"], "Softmax")
    assert _producers(graphs["kept"], "LayerNormalization", first_input=1) == {"initializer"}
    assert "QuantizeLinear" in _consumers(graphs["minmax"], "Sigmoid")
    assert _consumers(graphs["kept"], "Sigmoid") == {"Mul"}
    assert done["excluded_nodes"] > 0  # the attention matmuls and the SiLUs
    # Each method chooses its own ranges (quantize_static's own entropy settings gave the min/max file byte for byte).
    # On 20 images the 99.999th percentile and the KL-optimal range are often the maximum, but not always.
    scales = {name: _activation_scales(graphs[name]) for name in ("minmax", "percentile", "entropy")}
    assert scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    changed = {
        method: sum(scales[method][t] != pytest.approx(scales["minmax"][t], rel=1e-3) for t in scales["minmax"])
        for method in ("percentile", "entropy")
    }
    assert changed["percentile"] > 0 and changed["entropy"] > 0, changed


def _quantized(graph: onnx.GraphProto, names: list[str]) -> set[str]:
    """The nodes among ``names`` that ONNX Runtime quantized: every input dequantized (or a weight) and the output
    quantized. A node kept in float may still read a dequantized tensor (v1's q·kᵀ reads the int8 outputs of the Muls
    that scale q and k), but it never has both."""
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    dequantized |= {init.name for init in graph.initializer}
    quantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    return {
        node.name
        for node in graph.node
        if node.name in names and set(node.input) <= dequantized and node.output[0] in quantized
    }


@pytest.mark.parametrize("name", MODELS)
def test_float_op_groups_find_v1_and_v2_nodes_and_keep_them_float(name: str, tiny_checkpoints, tmp_path: Path) -> None:
    """Each --float-ops group finds as many nodes as the network has layers of its kind, in both families: torch
    writes v2's GroupNorm as InstanceNormalization + an affine Mul and Add and its separable attention as Mul +
    ReduceSum, where finding by op type kept nothing of v2 in float. The attention products and the GroupNorm affine
    ops are quantized in the plain file and float with the groups kept."""
    net = read_trained(tiny_checkpoints[name]).build()
    layers = _layer_counts(net)
    attention = layers[MultiHeadSelfAttention] + layers[SeparableSelfAttention]
    fp32 = _export(tiny_checkpoints[name], tmp_path / "m.onnx")
    found = {group: find(onnx.load(str(fp32)).graph) for group, find in FLOAT_OP_GROUPS.items()}
    assert attention > 0 and len(found["softmax"]) == attention
    assert len(found["attention"]) == 2 * attention  # q kᵀ and attn v; v2: scores x keys and ReLU(values) x context
    assert len(found["norm"]) == layers[torch.nn.LayerNorm] + 3 * layers[torch.nn.GroupNorm]
    assert found["silu"]
    assert len(found["residual"]) == 2 * (layers[TransformerLayer] + layers[LinearTransformerLayer])  # attn, MLP
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    quantize_onnx(fp32, tmp_path / "plain.onnx", images)
    done = quantize_onnx(fp32, tmp_path / "kept.onnx", images, float_ops=tuple(FLOAT_OP_GROUPS))
    assert done["excluded_nodes"] == len({node for nodes in found.values() for node in nodes})
    plain, kept = (onnx.load(str(tmp_path / f"{file}.onnx")).graph for file in ("plain", "kept"))
    graph = onnx.load(str(fp32)).graph
    affine = [node.name for node in graph.node if node.name in found["norm"] and node.op_type in ("Mul", "Add")]
    assert len(affine) == 2 * layers[torch.nn.GroupNorm]
    for names in (found["attention"], affine, found["residual"]):
        assert _quantized(plain, names) == set(names)
        assert _quantized(kept, names) == set()


def _layer_counts(net: torch.nn.Module) -> dict[type, int]:
    kinds = (MultiHeadSelfAttention, SeparableSelfAttention, TransformerLayer, LinearTransformerLayer,
             torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.SiLU)  # fmt: skip
    return {kind: sum(isinstance(module, kind) for module in net.modules()) for kind in kinds}


@pytest.mark.parametrize("name", MODELS)
def test_xnnpack_float_op_groups_keep_their_operations_float(name: str, tiny_checkpoints) -> None:
    """ExecuTorch's --float-ops groups: two residual adds per transformer layer; v2's two attention products per
    separable attention (v1's matmuls are float in XNNPACK's scheme); the sigmoid and product of every SiLU. The
    quantizer annotates each for int8 in the plain graph (each sigmoid with its fixed [0, 1) output range) and leaves
    it float with its group kept; an unknown group is refused naming the valid ones."""
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY, SharedQuantizationSpec

    from mobilevit.errors import UserInputError
    from mobilevit.export.executorch import FLOAT_OP_GROUPS, export_ready, _exported, float_nodes, xnnpack_quantizer

    net = read_trained(tiny_checkpoints[name]).build(fuse_bn=True)
    layers = _layer_counts(net)
    graph = _exported(export_ready(net), (32, 32)).graph
    found = {group: {node.name for node in float_nodes(graph, [group])} for group in FLOAT_OP_GROUPS}
    assert len(found["residual"]) == 2 * (layers[TransformerLayer] + layers[LinearTransformerLayer]) > 0
    assert len(found["attention"]) == 2 * layers[SeparableSelfAttention]
    assert len(found["silu"]) == 2 * layers[torch.nn.SiLU] > 0

    def int8_nodes(float_ops: tuple[str, ...]) -> dict[str, object]:
        module = _exported(net, (32, 32)).module()
        xnnpack_quantizer(keep_float=float_nodes(module.graph, float_ops)).annotate(module)
        return {node.name: node.meta[Q_ANNOTATION_KEY] for node in module.graph.nodes if Q_ANNOTATION_KEY in node.meta}

    kept = {node for nodes in found.values() for node in nodes}
    plain = int8_nodes(())
    assert kept <= plain.keys()
    sigmoids = [plain[name].output_qspec for name in found["silu"] if name.startswith("sigmoid")]
    assert len(sigmoids) == layers[torch.nn.SiLU]
    assert all((spec.scale, spec.zero_point) == (1 / 256, -128) for spec in sigmoids)
    products = [plain[name].input_qspec_map for name in found["silu"] if not name.startswith("sigmoid")]
    # Each product reads its sigmoid's int8 output as it is: no requantization between them.
    assert all(sum(isinstance(spec, SharedQuantizationSpec) for spec in inputs.values()) == 1 for inputs in products)
    assert not kept & int8_nodes(tuple(FLOAT_OP_GROUPS)).keys()
    # v1's scaled queries, read only by the float attention matmuls, are never rounded to int8.
    scaled_queries = [node.name for node in graph.nodes if node.target == torch.ops.aten.mul.Tensor
                      and {user.target for user in node.users} == {torch.ops.aten.bmm.default}]  # fmt: skip
    assert len(scaled_queries) == layers[MultiHeadSelfAttention] and not set(scaled_queries) & plain.keys()
    with pytest.raises(UserInputError, match=r"--float-ops for --format executorch must be one of \['residual'"):
        float_nodes(graph, ["softmax"])


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_executorch_fp32_and_int8_are_delegated_to_xnnpack(
    name: str, tiny_checkpoints, tmp_path: Path, monkeypatch
) -> None:
    """Both programs made by the command line, as users make them; the delegation counts are the ones it printed."""
    from mobilevit.export import executorch as executorch_export

    delegations = []
    export_executorch = executorch_export.export_executorch

    def recording(*args):  # noqa: ANN002, ANN202
        delegations.append(export_executorch(*args))
        return delegations[-1]

    monkeypatch.setattr(executorch_export, "export_executorch", recording)
    ckpt = tiny_checkpoints[name]
    fp32 = _export(ckpt, tmp_path / "m.pte", "--format", "executorch")
    # XNNPACK's fp32 kernels differ from PyTorch's in summation order only.
    assert _max_diff(ckpt, fp32) <= 1e-4
    assert json.loads(sidecar_path(fp32).read_text())["input"]["shape"] == [1, 3, 32, 32]  # one image per call
    # Every operation runs in XNNPACK (xnnpack_decompositions, unfused attention), but v2's layout copy before its
    # attention's sum (one per attention layer).
    outside = {"dim_order_ops__to_dim_order_copy_default"} if name.startswith("mobilevitv2") else set()
    assert set(delegations[0].outside) <= outside
    # Float groups (v2: its default, residual adds, attention products and SiLUs; v1: asked for, residual adds) run
    # as fp32 operations between int8 ones, inside the delegate all the same; v1's SiLUs run int8.
    float_ops = ["residual", "attention", "silu"] if v2(name) else ["residual"]
    int8 = _export(
        ckpt, tmp_path / "m_int8.pte", "--format", "executorch", "--quantize", "int8", "--calibration-images", "8",
        *([] if v2(name) else ["--float-ops", *float_ops]),
    )  # fmt: skip
    assert set(delegations[1].outside) <= outside
    # The quantized program stores its conv/linear weights as int8 tensors.
    assert delegations[1].int8_weights >= delegations[1].delegated["aten_convolution_default"]
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    quantization = json.loads(sidecar_path(int8).read_text())["quantization"]
    assert quantization["method"] == "minmax" and quantization["calibration_images"] == 8
    assert quantization["float_ops"] == float_ops


# The layers whose weights an int8 file must hold as int8 (LiteRT's builtin operator names).
LITERT_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _litert_layers(path: Path) -> list[tuple[str, np.dtype]]:
    """(operator, weight dtype) of each convolution and fully connected layer of a .tflite file."""
    from mobilevit.export.runtime import litert_interpreter

    interpreter = litert_interpreter(path)
    dtypes = {tensor["index"]: tensor["dtype"] for tensor in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the interpreter's only listing of operators
    return [(op["op_name"], dtypes[op["inputs"][1]]) for op in ops if op["op_name"] in LITERT_WEIGHTED_OPS]


@pytest.mark.parametrize("name", MODELS)
def test_litert_fp32_matches_pytorch_and_int8_holds_int8(name: str, tiny_checkpoints, tmp_path: Path) -> None:
    from mobilevit.export.executorch import export_ready, quantize_pt2e

    ckpt = tiny_checkpoints[name]
    fp32 = _export(ckpt, tmp_path / "m.tflite", "--format", "litert")
    assert _max_diff(ckpt, fp32) <= 1e-4
    int8_args = ("--format", "litert", "--quantize", "int8", "--calibration-images", "8")
    int8 = _export(ckpt, tmp_path / "m_int8.tflite", *int8_args)
    # Every convolution and fully connected layer of the fp32 file is there, reading int8 weights.
    layers = _litert_layers(int8)
    assert sorted(op for op, _ in layers) == sorted(op for op, _ in _litert_layers(fp32))
    assert layers and all(dtype == np.int8 for _, dtype in layers)
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    sidecar = json.loads(sidecar_path(int8).read_text())
    assert sidecar["quantization"]["float_ops"] == (["residual", "attention", "silu"] if v2(name) else ["silu"])
    assert sidecar["quantization"]["calibration_images"] == 8 and sidecar["input"]["shape"] == [1, 3, 32, 32]
    assert sidecar["input"]["dtype"] == sidecar["output"]["dtype"] == "int8" and sidecar["input"]["scale"] > 0
    # The file computes what the same int8 program computes in PyTorch (the images the export calibrated on).
    weights = read_trained(ckpt)
    images = calibration.calibration_images(weights, 8)
    float_ops = sidecar["quantization"]["float_ops"]
    reference = quantize_pt2e(export_ready(weights.build()), (32, 32), images, float_ops=float_ops)
    with torch.no_grad():
        expected = torch.cat([reference(image) for image in images.split(1)])
    logits = load_artifact(int8)(images)
    assert (logits.argmax(1) == expected.argmax(1)).float().mean() >= 0.75
    # XNNPACK's int8 kernels round unlike PyTorch's reference: on these barely trained models both the LiteRT file
    # and the ExecuTorch program differ from it by up to 30 % of the logits' range (v2; v1: 5 %). The runtime's own
    # quantization is held tighter below, on a network whose int8 is accurate.
    assert (logits - expected).abs().max() <= 0.5 * expected.abs().max()


def test_litert_int8_file_takes_quantized_images_and_gives_dequantized_logits(tmp_path: Path) -> None:
    """An int8 .tflite file's input and output are int8: the runtime quantizes the images and dequantizes the logits
    with the scale and zero point of the file, which the sidecar records for users of the file alone."""
    from mobilevit.export.litert import export_litert, io_quantization
    from mobilevit.export.sidecar import write_sidecar

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).eval()  # fmt: skip
    images = torch.rand(16, 3, 16, 16)
    path = export_litert(net, tmp_path / "net.tflite", (16, 16), images)
    tensors = io_quantization(path)
    assert tensors["input"]["dtype"] == tensors["output"]["dtype"] == "int8"
    # Images in [0, 1]: the input's int8 range spans them (asymmetric, zero point -128).
    assert tensors["input"]["zero_point"] == -128 and tensors["input"]["scale"] == pytest.approx(1 / 255, rel=0.01)
    write_sidecar(path, {"format": "litert", "class_names": list("abcd"), "input": {"shape": [1, 3, 16, 16]},
                         "preprocessing": {"image_size": 16}})  # fmt: skip
    with torch.no_grad():
        expected = net(images)
    logits = load_artifact(path)(images)
    assert logits.dtype == torch.float32 and logits.shape == (16, 4)
    assert (logits - expected).abs().max() <= 0.05 * (expected.max() - expected.min())


@pytest.mark.parametrize("name", MODELS)
def test_coreml_float16_and_int8_programs(name: str, tiny_checkpoints, tmp_path: Path, capsys) -> None:
    """Core ML files convert here (they run only on macOS): float16 weights; int8 weights for every convolution and
    linear layer and int8 quantize / dequantize pairs between them; float32 in and out; the sidecar in the file."""
    import coremltools as ct

    from mobilevit.export.coreml import int8_weight_count, operation_counts

    ckpt = tiny_checkpoints[name]
    fp16 = _export(ckpt, tmp_path / "m.mlpackage", "--format", "coreml")
    assert "Core ML runs only on macOS: not run here" in capsys.readouterr().out
    int8_args = ("--format", "coreml", "--quantize", "int8", "--calibration-images", "8")
    int8 = _export(ckpt, tmp_path / "m_int8.mlpackage", *int8_args)
    assert "reading int8 weights: " in capsys.readouterr().out
    fp16_ops, int8_ops = operation_counts(fp16), operation_counts(int8)
    weighted = fp16_ops["conv"] + fp16_ops["linear"]
    assert weighted > 0 and int8_weight_count(fp16) == (0, weighted)
    assert int8_weight_count(int8) == (weighted, weighted)  # none lost, every one int8
    assert int8_ops["quantize"] > 0 and int8_ops["dequantize"] >= int8_ops["quantize"]
    assert fp16_ops["quantize"] == 0

    def weight_bytes(package: Path) -> int:
        return sum(f.stat().st_size for f in package.rglob("*.bin"))

    assert weight_bytes(int8) < 0.7 * weight_bytes(fp16)  # int8 against float16 weights (plus scales, biases)
    spec = ct.models.MLModel(str(int8), skip_model_load=True).get_spec()
    (image,), (logits,) = spec.description.input, spec.description.output
    assert (image.name, list(image.type.multiArrayType.shape)) == ("images", [1, 3, 32, 32])
    assert (logits.name, list(logits.type.multiArrayType.shape)) == ("logits", [1, 3])
    float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert image.type.multiArrayType.dataType == logits.type.multiArrayType.dataType == float32
    sidecar = json.loads(sidecar_path(int8).read_text())
    assert json.loads(spec.description.metadata.userDefined["mobilevit.sidecar"]) == sidecar
    assert sidecar["format"] == "coreml" and sidecar["input"]["shape"] == [1, 3, 32, 32]
    assert sidecar["quantization"]["float_ops"] == (["residual", "attention", "silu"] if v2(name) else ["silu"])
    assert json.loads(sidecar_path(fp16).read_text())["quantization"] == {"scheme": "float16", "runtime": "coreml"}


def test_xnnpack_decompositions_compute_the_operations_they_replace() -> None:
    """Each rewrite of an operation XNNPACK does not take gives that operation's result; cases outside MobileViT's
    use (GroupNorm with several groups, a mean over other dimensions) are left to the operation itself."""
    from mobilevit.export.executorch import xnnpack_decompositions

    rewrite = {op.__name__.split(".")[0]: function for op, function in xnnpack_decompositions([8]).items()}
    generator = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(2, 8, 4, 6, generator=generator) + 1
    weight, bias = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    tokens = x.permute(0, 2, 3, 1).reshape(2, 24, 8)  # (batch, tokens, channels)

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5)

    assert close(rewrite["layer_norm"](tokens, [8], weight, bias), F.layer_norm(tokens, [8], weight, bias))
    assert close(rewrite["group_norm"](x, 1, weight, bias), F.group_norm(x, 1, weight, bias))
    assert rewrite["group_norm"](x, 2, weight, bias) is NotImplemented
    for dims, keepdim in (([-1], True), ([1, 3], False), ([0, 2], True)):
        assert close(rewrite["sum"](x, dims, keepdim), x.sum(dims, keepdim=keepdim))
    assert close(rewrite["mean"](x, [-2, -1]), x.mean((2, 3)))
    assert rewrite["mean"](x, [1]) is NotImplemented and rewrite["mean"](x, [2, 3], True) is NotImplemented


def test_xnnpack_calibration_methods_choose_the_activation_observer() -> None:
    """``minmax`` (the default) observes activations with MinMaxObserver; ``histogram`` keeps the XNNPACK quantizer's
    own HistogramObserver (much slower to calibrate); weights stay per-channel min/max either way."""
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver

    from mobilevit.export.executorch import xnnpack_quantization_config

    for method, observer in (("minmax", MinMaxObserver), ("histogram", HistogramObserver)):
        config = xnnpack_quantization_config(method)
        for spec in (config.input_activation, config.output_activation):
            assert type(spec.observer_or_fake_quant_ctr()) is observer and spec.dtype == torch.int8
        assert type(config.weight.observer_or_fake_quant_ctr()) is PerChannelMinMaxObserver


def test_calibration_reads_the_training_split_through_the_eval_transform(tiny_checkpoints) -> None:
    weights = read_trained(tiny_checkpoints["mobilevit_xxs"])
    images = calibration.calibration_images(weights, 1000)
    datamodule = datamodule_from_weights(weights, {"num_workers": 0})
    train = datamodule.raw_dataset("train")
    transform = weights.eval_transform()
    expected = torch.stack([transform(train[index][0]) for index in range(len(train))])
    assert images.shape == expected.shape == (24, 3, 32, 32)  # 8 training images x 3 classes (val/test: 4 each)
    assert sorted(map(tuple, images.flatten(1)[:, :64].tolist())) == sorted(map(tuple, expected.flatten(1)[:, :64].tolist()))
    assert calibration.calibration_images(weights, 5).shape[0] == 5


@pytest.mark.parametrize("artifact_format", ["onnx", "litert"])
def test_evaluate_and_predict_on_an_fp32_artifact_give_the_checkpoints_results(
    artifact_format: str, tiny_checkpoints, make_cfg, tmp_path: Path
) -> None:
    from evaluate import evaluate
    from mobilevit.export.cli import SUFFIXES
    from mobilevit.predict import predict

    ckpt = tiny_checkpoints["mobilevit_xxs"]
    artifact = _export(ckpt, tmp_path / f"m{SUFFIXES[artifact_format]}", "--format", artifact_format)
    run = ["trainer=cpu", "trainer.precision=32-true", "trainer.enable_progress_bar=false"]
    expected = evaluate(make_cfg([f"ckpt_path={ckpt}", *run], config_name="eval", run_name="ckpt"))
    result = evaluate(make_cfg([f"ckpt_path={artifact}", *run], config_name="eval", run_name="artifact"))
    assert result["num_images"] == expected["num_images"] == 12
    assert result["top1"] == expected["top1"] and result["loss"] == pytest.approx(expected["loss"], abs=1e-5)
    assert result["artifact"] == artifact_format and result["weights"] == "fp32"
    assert (tmp_path / "logs/eval/runs/artifact/per_class.csv").is_file()

    images = Path(read_trained(ckpt).run_config["data"]["root"]) / "test"
    cfg = [f"inputs={images}", "precision=32-true", "device=cpu", "output=null"]
    by_ckpt = predict(make_cfg([f"ckpt_path={ckpt}", *cfg], config_name="predict"))
    by_artifact = predict(make_cfg([f"ckpt_path={artifact}", *cfg], config_name="predict"))
    assert [p.class_indices for p in by_artifact.predictions] == [p.class_indices for p in by_ckpt.predictions]
    assert by_artifact.predictions[0].probabilities == pytest.approx(by_ckpt.predictions[0].probabilities, abs=1e-5)


def test_opset_is_written_as_asked_or_refused_with_the_range(tiny_checkpoints, tmp_path: Path, capsys) -> None:
    ckpt = tiny_checkpoints["mobilevit_xxs"]
    assert export_main([str(ckpt), "--output", str(tmp_path / "m.onnx"), "--opset", "17"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--opset 17 is not supported" in err and "opsets 18 to" in err
    assert not (tmp_path / "m.onnx").exists()
    _export(ckpt, tmp_path / "m.onnx", "--opset", "20")
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [entry.version for entry in model.opset_import if entry.domain == ""] == [20]


def _one_line_exit_2(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        code = export_main(list(argv))
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_give_one_line_and_exit_2(tiny_checkpoints, tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util

    from mobilevit.data import SyntheticDataModule

    ckpt = str(tiny_checkpoints["mobilevit_xxs"])
    err = _one_line_exit_2(capsys, ckpt, "--format", "tflite")
    assert "invalid choice: 'tflite'" in err and all(name in err for name in ("onnx", "executorch", "litert"))

    real_find_spec = importlib.util.find_spec
    # Each format's missing package, and the extra that installs it (LiteRT int8 needs ExecuTorch's quantizer).
    for missing, argv, extra in [
        ("executorch", ("--format", "executorch"), "executorch"),
        ("litert_torch", ("--format", "litert"), "litert"),
        ("executorch", ("--format", "litert", "--quantize", "int8"), "litert"),
        ("coremltools", ("--format", "coreml"), "coreml"),
        ("executorch", ("--format", "coreml", "--quantize", "int8"), "coreml"),
    ]:
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a, gone=missing: None if name == gone else real_find_spec(name, *a)
        )
        err = _one_line_exit_2(capsys, ckpt, *argv, "--output", str(tmp_path / "m.file"))
        assert f"{missing} is not installed: pip install 'mobilevit[{extra}]'" in err
        monkeypatch.undo()

    # Calibration methods and --float-ops per format: refused before anything is built.
    err = _one_line_exit_2(capsys, ckpt, "--quantize", "int8", "--calibration-method", "histogram")
    assert "--calibration-method for --format onnx must be one of ['minmax', 'percentile', 'entropy']" in err
    pte_int8 = ("--format", "executorch", "--quantize", "int8")
    err = _one_line_exit_2(capsys, ckpt, *pte_int8, "--calibration-method", "entropy")
    assert "--calibration-method for --format executorch must be one of ['minmax', 'histogram']" in err
    err = _one_line_exit_2(capsys, ckpt, *pte_int8, "--float-ops", "softmax")
    assert "--float-ops for --format executorch must be one of ['residual', 'attention', 'silu'], got 'softmax'" in err
    v2_ckpt = str(tiny_checkpoints["mobilevitv2_050"])
    err = _one_line_exit_2(capsys, v2_ckpt, "--format", "litert", "--quantize", "int8", "--float-ops", "silu")
    assert "needs 'attention' in --float-ops" in err and "int8 softmax" in err

    monkeypatch.setattr(SyntheticDataModule, "raw_dataset", lambda self, split: [])
    err = _one_line_exit_2(capsys, ckpt, "--quantize", "int8", "--output", str(tmp_path / "q.onnx"))
    assert "train split" in err and "has no images" in err
    monkeypatch.undo()


def test_an_artifact_without_its_sidecar_is_refused_in_one_line(tiny_checkpoints, make_cfg, tmp_path: Path, capsys) -> None:
    from evaluate import evaluate
    from mobilevit.utils import exit_on_user_error

    artifact = _export(tiny_checkpoints["mobilevit_xxs"], tmp_path / "m.onnx")
    sidecar_path(artifact).unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as info, exit_on_user_error():
        evaluate(make_cfg([f"ckpt_path={artifact}", "trainer=cpu"], config_name="eval"))
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "has no sidecar m.onnx.json" in err


@pytest.mark.slow
def test_deployment_benchmark_quick_run_and_table(tmp_path: Path) -> None:
    from benchmarks import deployment

    from mobilevit.export.executorch import float_nodes

    # The int8 rows with float groups take the everything-int8 row's path, with groups that are valid (an ExecuTorch
    # int8 export of the full model takes more than a minute here; the float groups are exported in
    # test_executorch_fp32_and_int8_are_delegated_to_xnnpack).
    for float_ops in deployment.FLOAT_OPS.values():
        float_nodes(torch.fx.Graph(), float_ops)
    runtimes = [name for name in deployment.RUNTIMES if name not in deployment.FLOAT_OPS]
    record_path, table_path = tmp_path / "deployment.json", tmp_path / "deployment.md"
    assert deployment.main(["--quick", "--threads", "1", "--runtimes", *runtimes, "--json", str(record_path)]) == 0
    record = json.loads(record_path.read_text())
    assert [row["runtime"] for row in record["rows"]] == runtimes
    sizes = {row["runtime"]: row["file_bytes"] for row in record["rows"]}
    for int8, fp32 in (("onnxruntime-int8", "onnxruntime"), ("executorch-int8", "executorch"), ("litert-int8", "litert")):
        assert sizes[int8] < 0.5 * sizes[fp32]
    assert all(row["latency_ms"] > 0 and len(row["latency_s_raw"]) == 4 for row in record["rows"])
    # The docs table is generated from the record alone.
    assert deployment.main(["--table", str(record_path), "--markdown", str(table_path)]) == 0
    table = table_path.read_text()
    assert table.count("| mobilevit_xxs |") == len(runtimes) and "LiteRT/XNNPACK int8" in table
    assert "int8 dot product: " in table.splitlines()[0]  # where int8 kernels can outrun float32 ones
    eager = record["rows"][0]["latency_ms"]
    assert f"{eager / record['rows'][-1]['latency_ms']:.2f}x" in table


def test_deployment_benchmark_interleaves_the_runtimes_of_a_variant(monkeypatch, tmp_path: Path) -> None:
    """A variant's runtimes are timed in alternating rounds (a machine that slows down mid-run slows them alike),
    each round after one untimed call; every row gets exactly --repeats timed batch-1 calls."""
    from benchmarks import deployment

    calls = []
    monkeypatch.setattr(deployment, "SETTLE_S", 0)
    monkeypatch.setattr(deployment, "_runner", lambda runtime, *_: (lambda x: calls.append((runtime, len(x))), 1))
    args = argparse.Namespace(threads=1, calibration_images=1, batch_size=2, repeats=4, warmup=1, rounds=2)
    rows = deployment.measure_variant("mobilevit_xxs", ["timm", "executorch"], 8, args, tmp_path)
    one_image = "".join(runtime[0] for runtime, batch in calls if batch == 1)
    assert one_image == "te" + "ttteee" * 2  # warm-up, then 2 rounds of (1 untimed + 2 timed) per runtime
    assert [len(row["latency_s_raw"]) for row in rows] == [4, 4]
    assert [len(row["throughput_s_raw"]) for row in rows] == [1, 1]


def test_int8_sensitivity_scores_each_float_op_set_on_the_val_split(tiny_checkpoints, tmp_path: Path, capsys) -> None:
    """benchmarks/int8_sensitivity.py: per checkpoint, fp32 then one simulated int8 row per --float-ops set, counted
    on every val image; an unknown group is refused in one line (exit code 2) before anything is loaded."""
    from benchmarks import int8_sensitivity

    names = ["mobilevitv2_050", "mobilevit_xxs"]
    ckpt = str(tiny_checkpoints[names[0]])
    record_path = tmp_path / "sensitivity.json"
    sets = ["none", "residual attention"]
    args = ["--float-ops", *sets, "--calibration-images", "4", "--threads", "1", "--json", str(record_path)]
    assert int8_sensitivity.main([*(str(tiny_checkpoints[name]) for name in names), *args]) == 0
    results = json.loads(record_path.read_text())["checkpoints"]
    assert [result["model"] for result in results] == names
    for name, result in zip(names, results):
        datamodule = datamodule_from_weights(read_trained(tiny_checkpoints[name]), {"num_workers": 0})
        datamodule.setup("validate")
        assert result["num_images"] == len(datamodule.val_dataloader().dataset) > 0
        assert [row["float_ops"] for row in result["rows"]] == [None, [], ["residual", "attention"]]
        assert all(0 <= row["top1"] <= 1 for row in result["rows"])
    table = capsys.readouterr().out
    assert table.count("| int8 | residual attention |") == 2 and table.count("| int8 | none |") == 2
    with pytest.raises(SystemExit) as error:
        int8_sensitivity.main([ckpt, "--float-ops", "softmax"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "--float-ops must be one of ['none', 'residual', 'attention', 'silu']" in err


@pytest.mark.skipif(__import__("platform").system() == "Darwin", reason="Core ML runs there")
def test_a_coreml_file_is_refused_off_macos_in_one_line(tiny_checkpoints, make_cfg, tmp_path: Path, capsys) -> None:
    from evaluate import evaluate
    from mobilevit.utils import exit_on_user_error

    artifact = _export(tiny_checkpoints["mobilevit_xxs"], tmp_path / "m.mlpackage", "--format", "coreml")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info, exit_on_user_error():
        evaluate(make_cfg([f"ckpt_path={artifact}", "trainer=cpu"], config_name="eval"))
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert "Core ML runs only on macOS" in err and ".pte, .tflite or .onnx export" in err
