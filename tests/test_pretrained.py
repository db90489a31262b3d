"""Pretrained weights (mobilevit/models/pretrained.py, layouts.py): every layout, wrapper and file, offline.
Hub sources: tests/test_hub.py.

References with identical random weights: timm (tests/test_models.py) and transformers' MobileViTForImageClassification
/ MobileViTV2ForImageClassification (here). ml-cvnets is not installable; its checkpoints are made from a
transformers model by renaming keys back along transformers' published ml-cvnets conversion rules.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest
import torch

from mobilevit.data.transforms import Preprocessing
from mobilevit.errors import UserInputError
from mobilevit.models import create_model, read_weights, to_our_layout
from mobilevit.models.layouts import detect_layout, infer_variant
from test_models import randomize_batchnorm

# Variants and their transformers configs (the values of transformers' ml-cvnets conversion scripts).
TRANSFORMERS_V1 = {
    "mobilevit_xxs": {"hidden_sizes": [64, 80, 96], "neck_hidden_sizes": [16, 16, 24, 48, 64, 80, 320], "expand_ratio": 2.0},
    "mobilevit_s": {"hidden_sizes": [144, 192, 240], "neck_hidden_sizes": [16, 32, 64, 96, 128, 160, 640]},
}
TRANSFORMERS_V2 = {"mobilevitv2_050": 0.5, "mobilevitv2_100": 1.0}
# 256 and a size that is not a multiple of 32 (250: every MobileViT block still sees an even feature map, where
# transformers' v2 and ml-cvnets agree; at other sizes transformers' v2 drops the odd row, ml-cvnets resizes).
PARITY_SIZES = [(256, 256), (250, 250)]


def transformers_model(variant: str, num_classes: int = 10) -> torch.nn.Module:
    """transformers' classifier for ``variant`` with random weights (variance-preserving) and BatchNorm statistics."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if variant in TRANSFORMERS_V1:
        config = transformers.MobileViTConfig(num_labels=num_classes, **TRANSFORMERS_V1[variant])
        model = transformers.MobileViTForImageClassification(config)
    else:
        config = transformers.MobileViTV2Config(num_labels=num_classes, width_multiplier=TRANSFORMERS_V2[variant])
        model = transformers.MobileViTV2ForImageClassification(config)
    with torch.no_grad():  # transformers' init (std 0.02) makes the logits almost independent of the image
        for param in model.parameters():
            if param.ndim > 1:
                param.normal_(0.0, param[0].numel() ** -0.5)
    return randomize_batchnorm(model).eval()


def _max_diff(ours: torch.nn.Module, reference: torch.nn.Module, size: tuple[int, int], bgr: bool) -> float:
    # Channels of different brightness, so that the channel order changes the logits clearly.
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1)) * torch.tensor([1.0, 0.5, 0.1])[:, None, None]
    with torch.no_grad():
        expected = reference(pixel_values=images.flip(1) if bgr else images).logits
        return float((ours(images) - expected).abs().max())


@pytest.mark.parametrize("variant", [*TRANSFORMERS_V1, *TRANSFORMERS_V2])
def test_transformers_layout_matches_transformers_logits(variant: str) -> None:
    """Same weights, same input: our logits equal transformers' (fp32, eval) within 1e-4."""
    reference = transformers_model(variant)
    state = reference.state_dict()
    assert detect_layout(state) == "transformers"
    ours = create_model(variant, num_classes=10).eval()
    ours.load_state_dict(to_our_layout(state, "transformers"))
    for size in PARITY_SIZES:
        diff = _max_diff(ours, reference, size, bgr=False)
        print(f"parity {variant} transformers layout {size[0]}x{size[1]}: max |diff| {diff:.2e}")
        assert diff < 1e-4


@pytest.mark.parametrize("variant", ["mobilevit_xxs", "mobilevitv2_050"])
def test_transformers_folder_is_read_with_its_config_and_bgr_folded(variant: str, tmp_path: Path) -> None:
    """A save_pretrained folder (model.safetensors + config.json + preprocessor_config.json): class names and
    preprocessing are read, and the BGR flip is folded into the stem, so RGB images give the original predictions."""
    transformers = pytest.importorskip("transformers")
    reference = transformers_model(variant)
    reference.config.id2label = {i: f"class {i}" for i in range(10)}
    reference.save_pretrained(tmp_path)
    processor = transformers.MobileViTImageProcessor(crop_size={"height": 256, "width": 256}, size={"shortest_edge": 288})
    processor.resample = 2  # bilinear, as in apple/mobilevit-small's preprocessor_config.json
    processor.save_pretrained(tmp_path)
    weights = read_weights(tmp_path)
    assert (weights.layout, weights.variant, weights.num_classes) == ("transformers", variant, 10)
    assert weights.class_names == tuple(f"class {i}" for i in range(10))
    assert weights.preprocessing == Preprocessing(256, 256 / 288, "bilinear", channel_order="BGR")
    ours = weights.build()
    diffs = []
    for size in PARITY_SIZES:
        diffs.append(diff := _max_diff(ours, reference, size, bgr=True))
        print(f"parity {variant} transformers folder, RGB in (BGR folded) {size[0]}x{size[1]}: max |diff| {diff:.2e}")
        assert diff < 1e-4
    unflipped = _max_diff(ours, reference, PARITY_SIZES[0], bgr=False)
    print(f"{variant}: the same RGB image given to transformers unflipped differs by {unflipped:.2e}")
    assert unflipped > max(1e-3, 1000 * max(diffs))  # the flip matters: fed RGB, the original model gives other logits


# --- ml-cvnets ---------------------------------------------------------------------------------------------------
# transformers' names → ml-cvnets' names, the inverse of transformers' convert_mlcvnets_to_pytorch.py (v1 and v2).
TO_CVNETS = (
    (r"^mobilevit(v2)?\.", ""),
    (r"^conv_stem\.", "conv_1."),
    (r"^encoder\.layer\.([01])\.layer\.(\d+)\.", lambda m: f"layer_{int(m[1]) + 1}.{m[2]}.block."),
    (r"^encoder\.layer\.(\d)\.downsampling_layer\.", lambda m: f"layer_{int(m[1]) + 1}.0.block."),
    (r"^encoder\.layer\.(\d)\.", lambda m: f"layer_{int(m[1]) + 1}.1."),
    (r"\.expand_1x1\.", ".exp_1x1."),
    (r"\.reduce_1x1\.", ".red_1x1."),
    (r"\.conv_kxk\.", ".local_rep.KXK."),
    (r"\.conv_1x1\.", ".local_rep.ONE."),
    (r"\.conv_projection\.", ".conv_proj."),
    (r"\.transformer\.layer\.(\d+)\.", r".global_rep.\1."),
    (r"\.layernorm_before\.", ".pre_norm_ATTN.0."),
    (r"\.attention\.attention\.qkv\.", ".pre_norm_ATTN.1.qkv_proj."),  # v1, after merging query/key/value
    (r"\.attention\.output\.dense\.", ".pre_norm_ATTN.1.out_proj."),
    (r"\.attention\.(qkv_proj|out_proj)\.", r".pre_norm_ATTN.1.\1."),  # v2
    (r"\.layernorm_after\.", ".pre_norm_ffn.0."),
    (r"\.intermediate\.dense\.", ".pre_norm_ffn.1."),
    (r"\.output\.dense\.", ".pre_norm_ffn.4."),
    (r"\.ffn\.conv1\.", ".pre_norm_ffn.1."),
    (r"\.ffn\.conv2\.", ".pre_norm_ffn.3."),
    (r"\.convolution\.", ".block.conv."),
    (r"\.normalization\.", ".block.norm."),
)


def cvnets_state(reference: torch.nn.Module, variant: str) -> dict[str, torch.Tensor]:
    """``reference``'s weights under ml-cvnets' key names."""
    v1 = variant in TRANSFORMERS_V1
    depths = (2, 4, 3)
    state = {}
    for key, value in reference.state_dict().items():
        found = re.match(r"(.*\.attention\.attention\.)(query|key|value)\.(weight|bias)$", key)
        if found:  # v1: ml-cvnets keeps one qkv projection
            if found[2] != "query":
                continue
            parts = [reference.state_dict()[f"{found[1]}{part}.{found[3]}"] for part in ("query", "key", "value")]
            key, value = f"{found[1]}qkv.{found[3]}", torch.cat(parts)
        final_norm = re.match(r".*encoder\.layer\.(\d)\.layernorm\.(weight|bias)$", key)
        if final_norm:
            stage = int(final_norm[1])
            key = f"layer_{stage + 1}.1.global_rep.{depths[stage - 2]}.{final_norm[2]}"
        for pattern, replacement in TO_CVNETS:
            key = re.sub(pattern, replacement, key)
        key = key.replace("KXK", "conv_3x3" if v1 else "0").replace("ONE", "conv_1x1" if v1 else "1")
        key = key.replace("ATTN", "mha" if v1 else "attn")
        key = re.sub(r"^classifier\.", "classifier.fc." if v1 else "classifier.1.", key)
        state[key] = value
    return state


@pytest.mark.parametrize("variant", ["mobilevit_xxs", "mobilevitv2_050"])
def test_ml_cvnets_checkpoint_matches_transformers_on_rgb_input(variant: str, tmp_path: Path) -> None:
    reference = transformers_model(variant)
    path = tmp_path / "mobilevit.pt"
    state = cvnets_state(reference, variant)
    assert "conv_1.block.conv.weight" in state and any(".global_rep." in key for key in state)
    torch.save(state, path)
    weights = read_weights(path)
    assert (weights.layout, weights.variant, weights.preprocessing.channel_order) == ("cvnets", variant, "BGR")
    ours = weights.build()
    diff = _max_diff(ours, reference, PARITY_SIZES[1], bgr=True)
    print(f"parity {variant} ml-cvnets layout, RGB in (BGR folded) 250x250: max |diff| {diff:.2e}")
    assert diff < 1e-4


# --- wrappers and containers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_xxs_state() -> dict[str, torch.Tensor]:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return randomize_batchnorm(timm.create_model("mobilevit_xxs")).state_dict()


def _assert_loaded(model: torch.nn.Module, timm_state: dict[str, torch.Tensor]) -> None:
    expected = to_our_layout(timm_state, "timm")
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())


def test_torch_compile_prefix_and_any_chain_of_wrapper_prefixes(timm_xxs_state, tmp_path: Path) -> None:
    for prefix in ("_orig_mod.", "module._orig_mod.", "model.net.", "net.module.model._orig_mod."):
        path = tmp_path / "compiled.pth"
        torch.save({prefix + key: value for key, value in timm_xxs_state.items()}, path)
        _assert_loaded(create_model("mobilevit_xxs", pretrained=str(path)), timm_xxs_state)


def test_ema_weights_are_preferred_and_logged(timm_xxs_state, tmp_path: Path, caplog) -> None:
    raw = {key: value + 1 if value.is_floating_point() else value for key, value in timm_xxs_state.items()}
    for ema_key, raw_key in (("state_dict_ema", "state_dict"), ("model_ema", "model")):
        path = tmp_path / "train.pth.tar.pth"
        torch.save({raw_key: raw, ema_key: {"module." + k: v for k, v in timm_xxs_state.items()}, "epoch": 3}, path)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mobilevit.models.pretrained"):
            model = create_model("mobilevit_xxs", pretrained=str(path))
        _assert_loaded(model, timm_xxs_state)
        assert f"using the EMA weights '{ema_key}' (not '{raw_key}')" in caplog.text
    path = tmp_path / "plain.pth"
    torch.save({"model_state_dict": timm_xxs_state, "optimizer": {"lr": 0.1}}, path)
    _assert_loaded(create_model("mobilevit_xxs", pretrained=str(path)), timm_xxs_state)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".safetensors"])
def test_pretrained_file_in_timm_layout_loads(suffix: str, timm_xxs_state, tmp_path) -> None:
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in timm_xxs_state.items()}, str(path))
    else:
        torch.save(timm_xxs_state, path)
    model = create_model("mobilevit_xxs", pretrained=str(path))
    expected = to_our_layout(timm_xxs_state, "timm")
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_pretrained_with_other_class_count_reinitialises_head(timm_xxs_state, tmp_path, caplog) -> None:
    path = tmp_path / "imagenet.pth"
    torch.save(timm_xxs_state, path)
    with caplog.at_level(logging.INFO, logger="mobilevit.models.pretrained"):
        model = create_model("mobilevit_xxs", num_classes=102, pretrained=str(path))
    assert "Re-initialised the classifier" in caplog.text and "1000 classes" in caplog.text
    assert model.classifier.weight.shape == (102, 320)
    assert torch.equal(model.stem.conv.weight, timm_xxs_state["stem.conv.weight"])


def test_pretrained_with_missing_or_unexpected_keys_lists_them(timm_xxs_state, tmp_path) -> None:
    state = dict(timm_xxs_state)
    del state["stem.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(UserInputError, match=r"(?s)missing keys \(1\): stem\.conv\.weight.*unexpected keys \(1\): extra\.weight"):
        create_model("mobilevit_xxs", pretrained=str(path))


def test_pretrained_names_missing_and_unsupported_files(tmp_path) -> None:
    with pytest.raises(UserInputError, match="file not found"):
        create_model("mobilevit_xxs", pretrained=str(tmp_path / "absent.pth"))
    (tmp_path / "weights.txt").write_text("nope")
    with pytest.raises(UserInputError, match="unsupported file type"):
        create_model("mobilevit_xxs", pretrained=str(tmp_path / "weights.txt"))


class NotAllowed:
    """Any class but argparse.Namespace: torch.load(weights_only=True) must refuse to rebuild it."""

    def __init__(self) -> None:
        self.value = 1


def test_timm_args_namespace_is_read_and_nothing_else_is_unpickled(timm_xxs_state, tmp_path: Path) -> None:
    path = tmp_path / "timm_checkpoint.pth"
    args = argparse.Namespace(model="mobilevit_xxs", lr=0.1, epochs=3)
    torch.save({"state_dict": timm_xxs_state, "args": args, "arch": "mobilevit_xxs"}, path)
    _assert_loaded(create_model("mobilevit_xxs", pretrained=str(path)), timm_xxs_state)

    torch.save({"state_dict": timm_xxs_state, "args": NotAllowed()}, path)
    with pytest.raises(UserInputError) as info:
        create_model("mobilevit_xxs", pretrained=str(path))
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"Refusing to load weights file '{path}'")
    assert "NotAllowed" in message and "Pass a state dict saved with torch.save" in message


def test_transformers_state_dict_file_is_recognised(tmp_path: Path) -> None:
    reference = transformers_model("mobilevit_xxs")
    path = tmp_path / "pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    model = create_model("mobilevit_xxs", num_classes=10, pretrained=str(path)).eval()
    assert _max_diff(model, reference, PARITY_SIZES[0], bgr=True) < 1e-4  # no preprocessor config: BGR assumed


def test_unreadable_files_say_what_they_hold_and_what_to_pass(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.pth"
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 3}, path)
    with pytest.raises(UserInputError) as info:
        create_model("mobilevit_xxs", pretrained=str(path))
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "holds a dict of 2 entries (0 tensors; keys: optimizer, epoch)" in message and "pass a state dict" in message
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(UserInputError, match="not MobileViT weights in a known layout"):
        create_model("mobilevit_xxs", pretrained=str(path))


def test_variant_is_inferred_and_a_mismatch_is_named(timm_xxs_state, tmp_path: Path) -> None:
    for name in ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050", "mobilevitv2_175"):
        assert infer_variant(create_model(name, num_classes=0).state_dict()) == name
    path = tmp_path / "xxs.safetensors"
    from safetensors.torch import save_file

    save_file({key: value.contiguous() for key, value in timm_xxs_state.items()}, str(path))
    with pytest.raises(UserInputError, match="holds mobilevit_xxs weights, but the model is mobilevit_s: use model=mobilevit_xxs"):
        create_model("mobilevit_s", pretrained=str(path))
