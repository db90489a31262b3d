"""ExecuTorch ``.pte`` programs with the XNNPACK delegate, fp32 and int8 (PyTorch 2 export quantization with the
XNNPACK quantizer: int8 per-channel symmetric weights, int8 activations), and what stays outside the delegate."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mobilevit.errors import UserInputError, require_choice
from mobilevit.export.runtime import require_extra
from mobilevit.models.pretrained import FAKE_QUANT_PREFIX, Weights

MAX_BATCH = 1  # the program takes one image per call (runtime.PTE_MAX_BATCH)


@dataclass
class Delegation:
    """Operator counts of a lowered program: inside and outside the XNNPACK delegate."""

    delegated: dict[str, int]
    outside: dict[str, int]
    int8_weights: int = 0  # int8 constant tensors of the program before lowering (0 for fp32)


class SigmoidProduct(nn.Module):
    """SiLU written as its two operations, ``x * sigmoid(x)`` (the same function), so that the int8 quantizer sees
    the sigmoid and gives it XNNPACK's fixed int8 output range (:data:`SIGMOID_OUTPUT`); shape-preserving."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def export_ready(model: nn.Module) -> nn.Module:
    """``model`` (changed in place) in operations XNNPACK's delegate takes whole: its attention unfused
    (``fused = False``), v1's as batched matmuls + softmax (the fused op decomposes into masking ops XNNPACK does not
    take), v2's qkv split as slices and its softmax over a 3-D view; each ``nn.SiLU`` as :class:`SigmoidProduct`
    (the lowering splits SiLU so anyway: the fp32 program is the same)."""
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = False
        for name, child in module.named_children():
            if isinstance(child, nn.SiLU):
                setattr(module, name, SigmoidProduct())
    model.eval()  # a converted QAT graph's patched eval() returns None
    return model


def _exported(model: nn.Module, image_size: tuple[int, int]) -> torch.export.ExportedProgram:
    # A static batch of one image, the on-device case: programs exported with a dynamic batch (1..64) failed at run
    # time here (executorch 1.5.1: "resize a bounded tensor" for batches above the example's, error 0x10 otherwise).
    return torch.export.export(model, (torch.rand(MAX_BATCH, 3, *image_size),))


def _mean_over_rows(x: torch.Tensor) -> torch.Tensor:
    """(M, n) -> (M, 1): row means as a global average pooling (a 4-D mean over the last two dimensions, the only
    mean XNNPACK's delegate takes); for sums (v2's attention). LayerNorm's means are products instead
    (:func:`xnnpack_decompositions`)."""
    rows, n = x.shape
    return x.reshape(1, rows, 1, n).mean((2, 3), keepdim=True).reshape(rows, 1)


def _mean_over_channels_and_space(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, 1, 1): per-channel global average pooling, then the mean of the C channel means (equal
    counts: the mean over C, H and W), both reductions in the layout XNNPACK already holds the map in."""
    batch, channels = x.shape[:2]
    return x.mean((2, 3), keepdim=True).reshape(batch, 1, 1, channels).mean((2, 3), keepdim=True)


def _layer_norm(  # noqa: ANN202
    x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True, *, row_means  # noqa: ANN001
):
    n = math.prod(normalized_shape)
    rows = x.reshape(-1, n)
    centred = rows - rows @ row_means[n]
    y = (centred * torch.rsqrt((centred * centred) @ row_means[n] + eps)).reshape(x.shape)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def _group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enable=True):  # noqa: ANN001, ANN202
    if num_groups != 1 or x.dim() != 4:  # MobileViT v2's norm; other group norms keep the portable kernel
        return NotImplemented
    centred = x - _mean_over_channels_and_space(x)
    y = centred * torch.rsqrt(_mean_over_channels_and_space(centred * centred) + eps)
    affine = (1, x.shape[1], 1, 1)
    y = y if weight is None else y * weight.reshape(affine)
    return y if bias is None else y + bias.reshape(affine)


def _sum(x, dims, keepdim=False, dtype=None):  # noqa: ANN001, ANN202
    if dtype is not None:
        return NotImplemented
    dims = sorted({d % x.dim() for d in dims})
    kept = [d for d in range(x.dim()) if d not in dims]
    count = math.prod(x.shape[d] for d in dims)
    rows = x.permute(*kept, *dims).reshape(-1, count) if kept + dims != list(range(x.dim())) else x.reshape(-1, count)
    shape = [1 if d in dims else size for d, size in enumerate(x.shape)] if keepdim else [x.shape[d] for d in kept]
    return (_mean_over_rows(rows) * count).reshape(shape)


def _mean(x, dims, keepdim=False, dtype=None):  # noqa: ANN001, ANN202
    if keepdim or dtype is not None or x.dim() != 4 or sorted(d % 4 for d in dims) != [2, 3]:
        return NotImplemented
    return x.mean((2, 3), keepdim=True).flatten(1)


def xnnpack_decompositions(layer_norm_widths: Collection[int]) -> dict:
    """ATen operations that XNNPACK's delegate does not take, rewritten into ones it does (a table for
    ``ExportedProgram.run_decompositions``): LayerNorm and one-group GroupNorm as means, subtractions and rsqrt; sums
    as means; the classifier's global pooling with keepdim. Without them, each such op runs on ExecuTorch's portable
    (unoptimised) kernel and cuts the delegate in two. Applied to the final program, after quantization: the
    rewritten norms stay in float between their int8 neighbours.

    A LayerNorm's means over its ``n`` features are products with a constant (n, 1) column of 1/n, one fully
    connected operation each in the tokens' own layout (XNNPACK's only mean, a 4-D pooling, takes two transposes of
    the tokens: 7 % more time for the whole int8 XXS program, measured). The columns are made here, for the widths
    ``n`` in ``layer_norm_widths``, and not while tracing: a tensor made then would be an operation of the program.
    """
    row_means = {n: torch.full((n, 1), 1 / n) for n in layer_norm_widths}
    return {
        torch.ops.aten.layer_norm.default: functools.partial(_layer_norm, row_means=row_means),
        torch.ops.aten.group_norm.default: _group_norm,
        torch.ops.aten.sum.dim_IntList: _sum,
        torch.ops.aten.mean.dim: _mean,
    }


def _layer_norm_widths(graph: torch.fx.Graph) -> set[int]:
    """The feature counts ``n`` that the LayerNorms of ``graph`` normalize over."""
    return {math.prod(node.args[1]) for node in graph.nodes if node.target == torch.ops.aten.layer_norm.default}


# Activation ranges of PT2E calibration: ``minmax`` (MinMaxObserver: the running min and max) or ``histogram``
# (HistogramObserver, XNNPACKQuantizer's own default: the range that minimises the L2 quantization error of a
# histogram of the activations; it re-bins the histogram on every call, so calibration is much slower).
PT2E_CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "histogram")

_NORMS = {torch.ops.aten.layer_norm.default, torch.ops.aten.group_norm.default}
_SAME_VALUES = {  # ops whose output holds their input's values (dropout: in eval, and in the exported program)
    torch.ops.aten.view.default, torch.ops.aten.view_as.default, torch.ops.aten.reshape.default,
    torch.ops.aten.dropout.default,
}  # fmt: skip


def _normalized(value: object) -> bool:
    """Whether ``value`` is an activation (not a weight) that a LayerNorm or GroupNorm reads."""
    is_activation = isinstance(value, torch.fx.Node) and value.op != "get_attr"
    return is_activation and any(user.target in _NORMS for user in value.users)


def _residual_adds(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The residual adds of the pre-norm transformer layers, ``x + attn(norm1(x))`` and ``x + mlp(norm2(x))``: the
    adds one of whose inputs a LayerNorm or GroupNorm also reads. They carry the token stream, whose range grows
    layer by layer; an add's int8 output shares one scale between that wide stream and the small update."""
    adds = (node for node in graph.nodes if node.target == torch.ops.aten.add.Tensor)
    return {add for add in adds if any(_normalized(arg) for arg in add.args)}


def _attention_products(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The activation x activation products of attention that XNNPACK's quantizer makes int8: MobileViT v2's
    separable attention (section 3.2), the Mul of the softmax scores with the keys and, after their sum (the context
    vector), the Mul of ReLU(values) with it. (v1's attention matmuls stay float in XNNPACK's scheme anyway.)"""
    products = set()
    for softmax in graph.nodes:
        if softmax.target != torch.ops.aten.softmax.int:
            continue
        scores = softmax
        while len(scores.users) == 1 and next(iter(scores.users)).target in _SAME_VALUES:
            scores = next(iter(scores.users))
        for scores_x_keys in (user for user in scores.users if user.target == torch.ops.aten.mul.Tensor):
            products.add(scores_x_keys)
            for context in scores_x_keys.users:
                products |= {user for user in context.users if user.target == torch.ops.aten.mul.Tensor}
    return products


def _silus(graph: torch.fx.Graph) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """(sigmoid, product) of each SiLU, ``x * sigmoid(x)`` (:class:`SigmoidProduct`): in every convolution block and
    every transformer MLP."""
    silus = []
    for sigmoid in graph.nodes:
        if sigmoid.target != torch.ops.aten.sigmoid.default:
            continue
        for product in sigmoid.users:
            if product.target == torch.ops.aten.mul.Tensor and sigmoid.args[0] in product.args:
                silus.append((sigmoid, product))
    return silus


def _silu_operations(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The sigmoid and the product of each SiLU. Kept float, each SiLU costs two int8 <-> float conversions."""
    return {node for silu in _silus(graph) for node in silu}


# --float-ops for ExecuTorch: the groups of operations the int8 program would make int8 that may stay float32 (the
# names of --format onnx's groups for the same operations). Softmax, LayerNorm/GroupNorm and v1's attention matmuls
# are float in XNNPACK's int8 scheme already.
FLOAT_OP_GROUPS = {"residual": _residual_adds, "attention": _attention_products, "silu": _silu_operations}


def float_nodes(graph: torch.fx.Graph, float_ops: Collection[str]) -> set[torch.fx.Node]:
    """The nodes of ``graph`` (an exported, not yet lowered program) in the groups ``float_ops`` of
    :data:`FLOAT_OP_GROUPS`.

    Raises:
        UserInputError: an unknown group (one line naming the valid ones).
    """
    for group in float_ops:
        require_choice(group, "--float-ops for --format executorch", tuple(FLOAT_OP_GROUPS))
    return {node for group in float_ops for node in FLOAT_OP_GROUPS[group](graph)}


def _read_by_matmuls_only(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a product that only batched matmuls read (v1's scaled queries ``q / sqrt(d)``): XNNPACK
    runs those in float, so an int8 output would only add a rounding and two int8 <-> float conversions."""
    is_product = node.target == torch.ops.aten.mul.Tensor and bool(node.users)
    return is_product and all(user.target == torch.ops.aten.bmm.default for user in node.users)


def xnnpack_quantization_config(method: str = "minmax", is_qat: bool = False):  # noqa: ANN201
    """XNNPACK's int8 scheme (executorch's ``get_symmetric_quantization_config``): per-channel symmetric int8 weights,
    per-tensor int8 activations whose ranges ``method`` (one of :data:`PT2E_CALIBRATION_METHODS`) calibrates, or
    fake-quantizers for quantization-aware training (``is_qat``).

    Raises:
        UserInputError: an unknown ``method`` (one line naming the choices).
    """
    require_choice(method, "--calibration-method for --format executorch", PT2E_CALIBRATION_METHODS)
    require_extra("executorch", "executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)  # HistogramObserver (PTQ)
    if method == "minmax" and not is_qat:
        activation = dataclasses.replace(
            config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
        )
        config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    return config


def xnnpack_quantizer(  # noqa: ANN201 - torchao's ComposableQuantizer
    method: str = "minmax", keep_float: Collection[torch.fx.Node] = (), is_qat: bool = False
):
    """The int8 quantizer of the ExecuTorch export: executorch's ``XNNPACKQuantizer`` with
    :func:`xnnpack_quantization_config`, after :func:`_silu_quantizer` (SiLU int8 too); the graph's nodes
    ``keep_float`` stay float, and so do products that only (float) batched matmuls read.

    Raises:
        UserInputError: an unknown ``method`` (one line naming the choices).
    """
    config = xnnpack_quantization_config(method, is_qat)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    quantizer = XNNPACKQuantizer().set_global(config)
    floats = frozenset(keep_float)
    # A node filter, not set_module_name: the module filter also tests each convolution's weight node, which has no
    # module of its own, so a name-configured quantizer (executorch 1.5.1) skips every convolution.
    quantizer.set_filter_function(lambda node: node not in floats and not _read_by_matmuls_only(node))
    # SiLU first: XNNPACK's quantizer leaves the nodes annotated before it alone.
    return ComposableQuantizer([_silu_quantizer(config.input_activation, floats), quantizer])


# The int8 output range of a sigmoid: [0, 1) in steps of 1/256, fixed rather than calibrated (TFLite's and XNNPACK's
# int8 logistic; XNNPACK runs it as a 256-entry lookup table).
SIGMOID_OUTPUT = {"scale": 1 / 256, "zero_point": -128}


def _silu_quantizer(activation, keep_float: Collection[torch.fx.Node]):  # noqa: ANN001, ANN202 - torchao types
    """A PT2E quantizer that makes each SiLU (:func:`_silus`) not in ``keep_float`` int8: the sigmoid with input
    ranges ``activation`` (the QuantizationSpec of the other activations) and output :data:`SIGMOID_OUTPUT`, the
    product reading that int8 output as it is (no requantization) with an ``activation`` output. XNNPACK's quantizer
    leaves sigmoids float (:func:`_silu_operations`)."""
    from torchao.quantization.pt2e.quantizer import (
        FixedQParamsQuantizationSpec, QuantizationAnnotation, Quantizer, SharedQuantizationSpec,
    )  # fmt: skip

    output = FixedQParamsQuantizationSpec(
        dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine, **SIGMOID_OUTPUT
    )

    class SiLUQuantizer(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for sigmoid, product in _silus(model.graph):
                if sigmoid in keep_float or product in keep_float:
                    continue
                x = sigmoid.args[0]
                sigmoid.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={x: activation}, output_qspec=output, _annotated=True
                )
                product.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={x: activation, sigmoid: SharedQuantizationSpec(sigmoid)},
                    output_qspec=activation, _annotated=True,
                )  # fmt: skip
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return SiLUQuantizer()


def quantize_pt2e(
    model: nn.Module,
    image_size: tuple[int, int],
    images: torch.Tensor,
    method: str = "minmax",
    float_ops: Collection[str] = (),
    fold_weights: bool = True,
) -> nn.Module:
    """``model`` quantized for XNNPACK with PT2E: calibrated on ``images`` (N, 3, H, W) with the activation ranges
    of ``method``, the groups ``float_ops`` kept float (:func:`xnnpack_quantizer`), converted (Q/DQ nodes). With
    ``fold_weights`` the weights are stored int8 (ExecuTorch); without, as float32 followed by their quantize /
    dequantize pair, the graph litert-torch's converter reads."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = _exported(export_ready(model), image_size).module()
    prepared = prepare_pt2e(graph, xnnpack_quantizer(method, float_nodes(graph.graph, float_ops)))
    with torch.no_grad():
        for batch in images.split(MAX_BATCH):  # the captured graph has the static batch of the program
            prepared(batch)
    converted = convert_pt2e(prepared, fold_quantize=fold_weights)
    allow_exported_model_train_eval(converted)
    converted.eval()  # what converters read (litert-torch warns about a module left in training mode)
    return converted


def prepare_qat(
    model: nn.Module, image_size: tuple[int, int], float_ops: Collection[str] = ()
) -> torch.fx.GraphModule:
    """``model`` prepared for quantization-aware training (QAT) with XNNPACK's int8 scheme (PT2E,
    ``prepare_qat_pt2e``): captured in train mode at ``image_size`` with a dynamic batch, every weight and activation
    that the int8 program quantizes passes through a fake-quantizer (moving-average min/max ranges), and each
    BatchNorm is simulated folded into its convolution, as the program folds it; the groups ``float_ops`` stay float
    (:data:`FLOAT_OP_GROUPS`). Parameters are ``model``'s own tensors under their own names; the fake-quantizers add
    ``activation_post_process_<n>`` state. ``.train()`` and ``.eval()`` switch BatchNorm and the observers as on any
    module. :func:`convert_qat` makes the int8 network."""
    require_extra("executorch", "executorch")
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    example = torch.rand(2, 3, *image_size)
    batch = {"x": {0: torch.export.Dim("batch", min=1)}}
    graph = torch.export.export(export_ready(model).train(), (example,), dynamic_shapes=batch).module()
    prepared = prepare_qat_pt2e(graph, xnnpack_quantizer(keep_float=float_nodes(graph.graph, float_ops), is_qat=True))
    allow_exported_model_train_eval(prepared)
    return prepared


def convert_qat(prepared: torch.fx.GraphModule) -> nn.Module:
    """The int8 network of a :func:`prepare_qat` module: in eval mode, the fake-quantizers replaced by quantize /
    dequantize nodes with their learned ranges (PT2E ``convert_pt2e``), ready for :func:`export_executorch`."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared.eval()  # the patched eval() of allow_exported_model_train_eval returns None
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)  # .eval() works on it like on any module
    return converted


def qat_int8_network(weights: Weights, image_size: tuple[int, int]) -> nn.Module:
    """The int8 network of a quantization-aware training checkpoint: its float weights and learned ranges
    (``weights.fake_quant_state``) loaded into the :func:`prepare_qat` graph of the float groups it trained with,
    converted (:func:`convert_qat`).

    Raises:
        ValueError: ``weights`` hold no fake-quantizer state (not a QAT checkpoint).
        UserInputError: its fake-quantizers are not those of today's graph (trained by an earlier version).
    """
    if weights.fake_quant_state is None:
        raise ValueError(f"{weights.source} is not a quantization-aware training checkpoint (no int8 ranges).")
    from mobilevit.callbacks.qat import recorded_float_ops

    prepared = prepare_qat(weights.build(), image_size, recorded_float_ops(weights.run_config))
    trained = weights.fake_quant_state.keys()
    expected = {key for key in prepared.state_dict() if key.startswith(FAKE_QUANT_PREFIX)}
    if trained != expected:
        raise UserInputError(
            f"{weights.source}: its int8 ranges belong to another int8 graph ({len(expected - trained)} fake-quantizer "
            f"tensors missing, {len(trained - expected)} unknown): it was trained by an earlier version of this "
            "package, whose int8 program differed (SiLU became int8 on 2026-12-04). Run quantization-aware training "
            "again."
        )
    prepared.load_state_dict({**weights.state_dict, **weights.fake_quant_state})
    return convert_qat(prepared)


def export_executorch(
    model: nn.Module,
    output: str | Path,
    image_size: tuple[int, int],
    images: torch.Tensor | None = None,
    method: str = "minmax",
    float_ops: Collection[str] = (),
) -> Delegation:
    """Write ``model`` as an ExecuTorch program lowered to XNNPACK (int8 when calibration ``images`` are given, with
    the activation ranges of ``method`` and the groups ``float_ops`` kept float: :func:`quantize_pt2e`); input
    (N ≤ :data:`MAX_BATCH`, 3, H, W) float32, output logits. Returns the delegation counts."""
    require_extra("executorch", "executorch")
    from executorch.exir import to_edge_transform_and_lower

    model = export_ready(model)
    if images is not None:
        model = quantize_pt2e(model, image_size, images, method, float_ops)
    program = _exported(model, image_size)
    program = program.run_decompositions(xnnpack_decompositions(_layer_norm_widths(program.graph)))
    tensors = [*program.state_dict.values(), *program.constants.values()]
    int8_weights = sum(isinstance(t, torch.Tensor) and t.dtype == torch.int8 for t in tensors)
    edge = to_edge_transform_and_lower(program, partitioner=[xnnpack_partitioner()])
    delegation = delegation_of(edge)
    delegation.int8_weights = int8_weights
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(edge.to_executorch().buffer)
    return delegation


def xnnpack_partitioner():  # noqa: ANN201 - executorch's XnnpackPartitioner
    """executorch's XNNPACK partitioner, taking int8 sigmoids too: XNNPACK runs them (a lookup table), but executorch
    1.5.1's ``SigmoidConfig`` lists float only, which would leave each int8 sigmoid outside the delegate."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import SigmoidConfig
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class Int8SigmoidConfig(SigmoidConfig):
        def supported_precision_types(self) -> list[ConfigPrecisionType]:
            return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]

    return XnnpackPartitioner(configs=[Int8SigmoidConfig if c is SigmoidConfig else c for c in ALL_PARTITIONER_CONFIGS])


def delegation_of(edge) -> Delegation:  # noqa: ANN001 - executorch.exir.EdgeProgramManager
    """Operator counts in and outside the delegate, from ExecuTorch's delegation info."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    delegated, outside = {}, {}
    for name, node in info.delegation_by_operator.items():
        if node.delegated:
            delegated[name] = node.delegated
        if node.non_delegated and name != "getitem":
            outside[name] = node.non_delegated
    return Delegation(delegated, outside)
