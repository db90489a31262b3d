"""Model zoo: registry, exact parameter counts, parity with timm, input sizes, efficiency paths, export."""

from __future__ import annotations

import onnx
import onnxruntime
import pytest
import timm
import torch
from torch import nn

from mobilevit.models import (
    MobileViTBlock,
    MobileViTv2Block,
    create_model,
    fuse_batchnorm,
    list_models,
    to_our_layout,
)

PARAMETER_COUNTS = {  # timm's counts with a 1000-class head (papers: 1.3M/2.3M/5.6M and 1.4M-18.4M)
    "mobilevit_xxs": 1_272_024,
    "mobilevit_xs": 2_317_848,
    "mobilevit_s": 5_578_632,
    "mobilevitv2_050": 1_370_593,
    "mobilevitv2_075": 2_866_009,
    "mobilevitv2_100": 4_901_841,
    "mobilevitv2_125": 7_478_089,
    "mobilevitv2_150": 10_594_753,
    "mobilevitv2_175": 14_251_833,
    "mobilevitv2_200": 18_449_329,
}
SMALL_V1_V2 = ["mobilevit_xxs", "mobilevitv2_050"]


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so folding and parity are tested."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return model


def test_registry_lists_all_variants_and_rejects_unknown_names() -> None:
    assert list_models() == list(PARAMETER_COUNTS)
    with pytest.raises(ValueError, match="mobilevit_xxs.*mobilevitv2_200"):
        create_model("mobilevit_xxxl")


@pytest.mark.parametrize("name", list(PARAMETER_COUNTS))
def test_parameter_count_matches_reference(name: str) -> None:
    model = create_model(name, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", list(PARAMETER_COUNTS))
def test_logits_match_timm_with_identical_weights(name: str) -> None:
    torch.manual_seed(0)
    reference = randomize_batchnorm(timm.create_model(name)).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(to_our_layout(reference.state_dict(), "timm"))
    for size in [(256, 256), (200, 264)]:
        images = torch.rand(2, 3, *size)
        with torch.no_grad():
            expected, actual = reference(images), ours(images)
        assert expected.abs().max() > 0.1, "degenerate logits would make the comparison meaningless"
        diff = (actual - expected).abs().max().item()
        print(f"{name} {size[0]}x{size[1]} max|ours - timm| = {diff:.2e}")
        assert diff <= 1e-4


def test_unfused_v1_attention_computes_the_fused_one() -> None:
    """``fused = False`` (slices, 3-D batched matmuls and softmax: the export path) gives scaled_dot_product_attention's
    result, for a batch of several sequences and several heads."""
    from mobilevit.models.mobilevit_v1 import MultiHeadSelfAttention

    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(dim=24, num_heads=4).eval()
    tokens = torch.randn(3, 10, 24)
    with torch.no_grad():
        fused = attention(tokens)
        attention.fused = False
        unfused = attention(tokens)
    assert fused.abs().max() > 0.1 and torch.allclose(unfused, fused, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", SMALL_V1_V2)
@pytest.mark.parametrize("size", [(32, 32), (33, 47), (97, 45), (224, 160)])
def test_any_input_size_from_32_works(name: str, size: tuple[int, int]) -> None:
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        features = model.forward_features(torch.rand(2, 3, *size))
        logits = model.forward_head(features)
    assert features.shape[:2] == (2, model.num_features)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()


def test_blocks_resize_maps_that_are_not_a_multiple_of_the_patch() -> None:
    v1 = MobileViTBlock(channels=8, transformer_dim=16, depth=1).eval()
    v2 = MobileViTv2Block(channels=8, transformer_dim=8, depth=1).eval()
    x = torch.rand(1, 8, 5, 7)
    assert v1(x).shape == (1, 8, 5, 7)  # v1 resizes back after folding
    assert v2(x).shape == (1, 8, 6, 8)  # v2 keeps the map at the next multiple, like the reference


def test_uniform_api_pre_logits_and_reset_classifier() -> None:
    model = create_model("mobilevit_xs", num_classes=10).eval()
    features = model.forward_features(torch.rand(1, 3, 64, 64))
    assert features.shape == (1, 384, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (1, 384)
    model.reset_classifier(3)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3) and model.num_classes == 3


def test_v1_attention_goes_through_scaled_dot_product_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    create_model("mobilevit_xxs", num_classes=2).eval()(torch.rand(1, 3, 64, 64))
    assert len(calls) == 2 + 4 + 3  # one per transformer layer
    assert calls[0] == (4, 4, 16, 16)  # (batch * patch area 2x2, heads, 8x8 map / 2x2 patches, 64 / 4 heads)


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_unfused_attention_computes_the_same_function(family: str) -> None:
    """``fused = False`` (what the ExecuTorch export lowers: v1's slices and 3-D bmm, v2's qkv channel slices and 3-D
    softmax) gives the fused path's output."""
    from mobilevit.models.mobilevit_v1 import MultiHeadSelfAttention
    from mobilevit.models.mobilevit_v2 import SeparableSelfAttention

    generator = torch.Generator().manual_seed(0)
    if family == "v1":
        attention, tokens = MultiHeadSelfAttention(dim=64, num_heads=4), torch.randn(8, 16, 64, generator=generator)
    else:  # (B, d, P, N)
        attention, tokens = SeparableSelfAttention(dim=64), torch.randn(2, 64, 4, 16, generator=generator)
    attention.eval()
    fused = attention(tokens)
    attention.fused = False
    assert torch.allclose(attention(tokens), fused, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", SMALL_V1_V2)
def test_channels_last_and_bf16_autocast(name: str) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(name, num_classes=10)).eval()
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        reference = model(images)
        channels_last = model.to(memory_format=torch.channels_last)(images.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(images.to(memory_format=torch.channels_last))
    assert (channels_last - reference).abs().max() <= 1e-4
    assert bf16.dtype == torch.bfloat16
    scale = reference.abs().max()
    assert (bf16.float() - reference).abs().max() <= 0.05 * scale
    assert (bf16.argmax(1) == reference.argmax(1)).all()


def test_training_step_backpropagates_with_drop_path() -> None:
    model = create_model("mobilevitv2_050", num_classes=4, drop_rate=0.1, drop_path_rate=0.1).train()
    loss = nn.functional.cross_entropy(model(torch.rand(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
def test_torch_compile_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("mobilevit_xxs", num_classes=10)).eval()
    images = torch.rand(2, 3, 64, 64)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert (compiled(images) - model(images)).abs().max() <= 1e-4


@pytest.mark.parametrize("name", SMALL_V1_V2)
def test_fused_batchnorm_gives_identical_outputs(name: str) -> None:
    model = randomize_batchnorm(create_model(name, num_classes=10)).eval()
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original must be left intact"
    images = torch.rand(3, 3, 96, 80)
    with torch.no_grad():
        diff = (fused(images) - model(images)).abs().max().item()
    print(f"{name} fused-BN max|diff| = {diff:.2e}")
    assert diff <= 1e-4


def onnx_max_rank(path) -> int:
    """Largest rank of any tensor (inputs, outputs, intermediates, constants) in the ONNX graph at ``path``."""
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True).graph
    values = [*graph.input, *graph.output, *graph.value_info]
    assert len(graph.value_info) > 100, "shape inference must have typed the intermediate tensors"
    ranks = [len(value.type.tensor_type.shape.dim) for value in values]
    ranks += [len(tensor.dims) for tensor in graph.initializer]
    ranks += [
        len(onnx.numpy_helper.to_array(attr.t).shape)
        for node in graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
    ]
    return max(ranks)


def test_unfold_fold_patches_match_the_rank6_reference() -> None:
    """The rank-5 patch layout equals the reshape/permute through (B, C, nh, p, nw, p) it replaced, and folds back."""
    from mobilevit.models.layers import fold_patches, unfold_patches

    batch, channels, nh, nw, p = 2, 3, 4, 5, 2
    x = torch.randn(batch, channels, nh * p, nw * p)
    reference = x.reshape(batch, channels, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4).reshape(batch, channels, p * p, nh, nw)
    unfolded = unfold_patches(x, p)
    assert torch.equal(unfolded, reference)
    assert torch.equal(fold_patches(unfolded, p), x)


def test_unfold_fold_tokens_match_the_rank6_reference() -> None:
    """v1's token sequences (B*P, N, C), made in rank <= 5, equal the reshape/permute through (B, C, nh, p, nw, p)
    of the reference implementation, and fold back; channels-last input gives the same tokens."""
    from mobilevit.models.layers import fold_tokens, unfold_tokens

    batch, channels, nh, nw, p = 2, 3, 4, 5, 2
    x = torch.randn(batch, channels, nh * p, nw * p)
    reference = x.reshape(batch, channels, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1)
    reference = reference.reshape(batch * p * p, nh * nw, channels)
    tokens = unfold_tokens(x, p)
    assert torch.equal(tokens, reference)
    assert torch.equal(unfold_tokens(x.contiguous(memory_format=torch.channels_last), p), reference)
    assert torch.equal(fold_tokens(tokens, p, (nh, nw)), x)


@pytest.mark.parametrize("name", SMALL_V1_V2)
def test_onnx_export_matches_pytorch_with_dynamic_batch(name: str, tmp_path, capsys) -> None:
    from mobilevit.export import main as export_main

    model = randomize_batchnorm(create_model(name, num_classes=5)).eval()
    weights = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}, weights)
    assert export_main([str(weights), "--model", name, "--image-size", "96", "--output", str(tmp_path / "m.onnx")]) == 0
    assert "onnxruntime vs PyTorch" in capsys.readouterr().out

    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        images = torch.rand(batch, 3, 96, 96)
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            diff = (torch.from_numpy(logits) - model(images)).abs().max().item()
        print(f"{name} batch {batch} ONNX max|diff| = {diff:.2e}")
        assert logits.shape == (batch, 5) and diff <= 1e-4
    # Core ML, ncnn and several TensorRT versions refuse tensors of rank above 5.
    assert onnx_max_rank(tmp_path / "m.onnx") <= 5


def test_export_refuses_dynamic_height_and_width(tmp_path, capsys) -> None:
    from mobilevit.export import main as export_main

    weights = tmp_path / "weights.pth"
    torch.save(create_model("mobilevit_xxs", num_classes=2).state_dict(), weights)
    assert export_main([str(weights), "--model", "mobilevit_xxs", "--dynamic-size"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dynamic-size is not supported" in err and "--image-size H W" in err
    assert not (tmp_path / "weights.onnx").exists()


def test_export_reads_variant_and_size_from_the_weights(tmp_path, capsys, monkeypatch) -> None:
    """No --model: the variant comes from the tensor shapes; no --image-size: the evaluation size recorded with the
    weights (here a train.py checkpoint with data.eval_image_size=96), not 256. A --model that disagrees is refused."""
    import mobilevit.export.cli as export

    exported = {}
    monkeypatch.setattr(
        export.onnx_export, "export_onnx", lambda model, output, size, opset: exported.update(size=size, net=model)
    )
    monkeypatch.setattr(export, "max_abs_diff", lambda *args: 0.0)
    net = create_model("mobilevit_xxs", num_classes=2)
    checkpoint = tmp_path / "run.ckpt"
    cfg = {"model": {"name": "mobilevit_xxs"}, "data": {"image_size": 64, "eval_image_size": 96, "crop_pct": 0.875}}
    state = {f"net.{key}": value for key, value in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": cfg, "num_classes": 2}}, checkpoint)
    assert export.main([str(checkpoint), "--no-fuse-bn"]) == 0
    assert exported["size"] == (96, 96) and type(exported["net"]).__name__ == "MobileViT"
    assert torch.equal(exported["net"].stem.conv.weight, net.stem.conv.weight)

    bare = tmp_path / "weights.pth"
    torch.save(net.state_dict(), bare)
    assert export.main([str(bare), "--image-size", "64", "80"]) == 0 and exported["size"] == (64, 80)
    assert export.main([str(bare), "--model", "mobilevit_xs"]) == 2
    assert "holds mobilevit_xxs weights, but the model is mobilevit_xs" in capsys.readouterr().err
