"""ExecuTorch ``.pte`` programs with the XNNPACK delegate, fp32 and int8 (PyTorch 2 export quantization with the
XNNPACK quantizer: int8 per-channel symmetric weights, int8 activations), and what stays outside the delegate."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mobilevit.errors import require_choice
from mobilevit.export.runtime import require_extra
from mobilevit.models.pretrained import Weights

MAX_BATCH = 1  # the program takes one image per call (runtime.PTE_MAX_BATCH)


@dataclass
class Delegation:
    """Operator counts of a lowered program: inside and outside the XNNPACK delegate."""

    delegated: dict[str, int]
    outside: dict[str, int]
    int8_weights: int = 0  # int8 constant tensors of the program before lowering (0 for fp32)


def _export_ready(model: nn.Module) -> nn.Module:
    """``model`` with its attention as batched matmuls + softmax (the fused op decomposes into masking ops XNNPACK
    does not take)."""
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = False
    model.eval()  # a converted QAT graph's patched eval() returns None
    return model


def _exported(model: nn.Module, image_size: tuple[int, int]) -> torch.export.ExportedProgram:
    # A static batch of one image, the on-device case: programs exported with a dynamic batch (1..64) failed at run
    # time here (executorch 1.5.1: "resize a bounded tensor" for batches above the example's, error 0x10 otherwise).
    return torch.export.export(model, (torch.rand(MAX_BATCH, 3, *image_size),))


def _mean_over_rows(x: torch.Tensor) -> torch.Tensor:
    """(M, n) -> (M, 1): row means as a global average pooling (a 4-D mean over the last two dimensions, the only
    mean XNNPACK's delegate takes)."""
    rows, n = x.shape
    return x.reshape(1, rows, 1, n).mean((2, 3), keepdim=True).reshape(rows, 1)


def _mean_over_channels_and_space(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, 1, 1): per-channel global average pooling, then the mean of the C channel means (equal
    counts: the mean over C, H and W), both reductions in the layout XNNPACK already holds the map in."""
    batch, channels = x.shape[:2]
    return x.mean((2, 3), keepdim=True).reshape(batch, 1, 1, channels).mean((2, 3), keepdim=True)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):  # noqa: ANN001, ANN202
    rows = x.reshape(-1, math.prod(normalized_shape))
    centred = rows - _mean_over_rows(rows)
    y = (centred * torch.rsqrt(_mean_over_rows(centred * centred) + eps)).reshape(x.shape)
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


# ATen operations that XNNPACK's delegate does not take, rewritten into ones it does: LayerNorm and one-group
# GroupNorm as means, subtractions and rsqrt; sums as means; the classifier's global pooling with keepdim. Without
# them, each such op runs on ExecuTorch's portable (unoptimised) kernel and cuts the delegate in two. Applied to the
# final program, after quantization: the rewritten norms stay in float between their int8 neighbours. Not rewritten:
# v2's split of the qkv channels (as slices, executorch 1.5.1's delegate returned wrong values: max |logit diff|
# 0.64 on mobilevitv2_050 at 64 px), so v2 keeps one split per attention outside the delegate.
XNNPACK_DECOMPOSITIONS = {
    torch.ops.aten.layer_norm.default: _layer_norm,
    torch.ops.aten.group_norm.default: _group_norm,
    torch.ops.aten.sum.dim_IntList: _sum,
    torch.ops.aten.mean.dim: _mean,
}


# Activation ranges of PT2E calibration: ``minmax`` (MinMaxObserver: the running min and max) or ``histogram``
# (HistogramObserver, XNNPACKQuantizer's own default: the range that minimises the L2 quantization error of a
# histogram of the activations; it re-bins the histogram on every call, so calibration is much slower).
PT2E_CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "histogram")


def xnnpack_quantizer(method: str = "minmax"):  # noqa: ANN201 - executorch's XNNPACKQuantizer
    """XNNPACK's int8 configuration: per-channel symmetric int8 weights, per-tensor int8 activations whose ranges
    ``method`` (one of :data:`PT2E_CALIBRATION_METHODS`) calibrates.

    Raises:
        UserInputError: an unknown ``method`` (one line naming the choices).
    """
    require_choice(method, "--calibration-method for --format executorch", PT2E_CALIBRATION_METHODS)
    require_extra("executorch", "executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=True)  # HistogramObserver for activations
    if method == "minmax":
        activation = dataclasses.replace(
            config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
        )
        config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    return XNNPACKQuantizer().set_global(config)


def quantize_pt2e(
    model: nn.Module, image_size: tuple[int, int], images: torch.Tensor, method: str = "minmax"
) -> nn.Module:
    """``model`` quantized for XNNPACK with PT2E: calibrated on ``images`` (N, 3, H, W) with the activation ranges
    of ``method`` (:func:`xnnpack_quantizer`), converted (Q/DQ nodes)."""
    quantizer = xnnpack_quantizer(method)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(_exported(_export_ready(model), image_size).module(), quantizer)
    with torch.no_grad():
        for batch in images.split(MAX_BATCH):  # the captured graph has the static batch of the program
            prepared(batch)
    return convert_pt2e(prepared)


def prepare_qat(model: nn.Module, image_size: tuple[int, int]) -> torch.fx.GraphModule:
    """``model`` prepared for quantization-aware training (QAT) with XNNPACK's int8 scheme (PT2E,
    ``prepare_qat_pt2e``): captured in train mode at ``image_size`` with a dynamic batch, every weight and activation
    that the int8 program quantizes passes through a fake-quantizer (moving-average min/max ranges), and each
    BatchNorm is simulated folded into its convolution, as the program folds it. Parameters are ``model``'s own
    tensors under their own names; the fake-quantizers add ``activation_post_process_<n>`` state. ``.train()`` and
    ``.eval()`` switch BatchNorm and the observers as on any module. :func:`convert_qat` makes the int8 network."""
    require_extra("executorch", "executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
    example = torch.rand(2, 3, *image_size)
    batch = {"x": {0: torch.export.Dim("batch", min=1)}}
    program = torch.export.export(_export_ready(model).train(), (example,), dynamic_shapes=batch)
    prepared = prepare_qat_pt2e(program.module(), quantizer)
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
    (``weights.fake_quant_state``) loaded into the :func:`prepare_qat` graph, converted (:func:`convert_qat`).

    Raises:
        ValueError: ``weights`` hold no fake-quantizer state (not a QAT checkpoint).
    """
    if weights.fake_quant_state is None:
        raise ValueError(f"{weights.source} is not a quantization-aware training checkpoint (no int8 ranges).")
    prepared = prepare_qat(weights.build(), image_size)
    prepared.load_state_dict({**weights.state_dict, **weights.fake_quant_state})
    return convert_qat(prepared)


def export_executorch(
    model: nn.Module,
    output: str | Path,
    image_size: tuple[int, int],
    images: torch.Tensor | None = None,
    method: str = "minmax",
) -> Delegation:
    """Write ``model`` as an ExecuTorch program lowered to XNNPACK (int8 when calibration ``images`` are given, with
    the activation ranges of ``method``); input (N ≤ :data:`MAX_BATCH`, 3, H, W) float32, output logits. Returns the
    delegation counts."""
    require_extra("executorch", "executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = _export_ready(model)
    if images is not None:
        model = quantize_pt2e(model, image_size, images, method)
    program = _exported(model, image_size).run_decompositions(XNNPACK_DECOMPOSITIONS)
    tensors = [*program.state_dict.values(), *program.constants.values()]
    int8_weights = sum(isinstance(t, torch.Tensor) and t.dtype == torch.int8 for t in tensors)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    delegation = delegation_of(edge)
    delegation.int8_weights = int8_weights
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(edge.to_executorch().buffer)
    return delegation


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
