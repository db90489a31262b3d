"""State-dict key layouts of the MobileViT implementations people publish weights for, converted to ours.

Layouts (detected by :func:`detect_layout`):

- ``ours``: this package (``stem.conv``, ``stages.<i>.<j>.<...>``, ``classifier``).
- ``timm``: timm's ``ByobNet`` MobileViT/MobileViTv2 (``conv1_1x1``, ``head.fc``, ...).
- ``transformers``: Hugging Face transformers' ``MobileViTForImageClassification`` and
  ``MobileViTV2ForImageClassification`` (``mobilevit.encoder.layer.<i>...``, the ``apple/mobilevit*`` Hub repos).
- ``cvnets``: Apple's ml-cvnets training checkpoints (``conv_1.block.conv``, ``layer_<i>.<j>.block...``).

Apple's ml-cvnets models, and transformers' ports of them, were trained on BGR input in [0, 1];
:func:`fold_bgr_into_stem` turns such weights into weights for RGB input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

from mobilevit.models import mobilevit_v1, mobilevit_v2

Rename = tuple[str, str | Callable[[re.Match[str]], str]]
LAYOUTS: tuple[str, ...] = ("ours", "timm", "transformers", "cvnets")
# Input channel order each layout's published weights were trained on.
CHANNEL_ORDER: dict[str, str] = {"ours": "RGB", "timm": "RGB", "transformers": "BGR", "cvnets": "BGR"}
STEM_WEIGHT = "stem.conv.weight"

# timm's module names → ours, on ".name." boundaries (timm's stage/stem/final_conv names already match ours).
TIMM_RENAMES: tuple[Rename, ...] = (
    (r"^head\.fc\.", "classifier."),
    (r"\.conv1_1x1\.", ".expand."),  # MV2 expansion
    (r"\.conv2_kxk\.", ".depthwise."),  # MV2 depthwise
    (r"\.conv3_1x1\.", ".project."),  # MV2 projection
    (r"\.conv_kxk\.", ".local_conv."),  # MobileViT block: local 3x3
    (r"\.conv_1x1\.", ".local_proj."),  # MobileViT block: 1x1 to transformer width
    (r"\.conv_proj\.", ".fold_proj."),  # MobileViT block: 1x1 back to stage width
    (r"\.conv_fusion\.", ".fusion."),  # MobileViT v1 block: fusion 3x3
    (r"\.attn\.qkv_proj\.", ".attn.qkv."),  # v2 separable attention
    (r"\.attn\.out_proj\.", ".attn.proj."),
)

# transformers' MobileViT (v1) and MobileViTV2 names → ours. Specific rules come before the generic conv/norm ones.
TRANSFORMERS_RENAMES: tuple[Rename, ...] = (
    (r"^mobilevit(v2)?\.", ""),
    (r"^conv_stem\.", "stem."),
    (r"^conv_1x1_exp\.", "final_conv."),
    (r"^encoder\.layer\.([01])\.layer\.(\d+)\.", r"stages.\1.\2."),
    (r"^encoder\.layer\.(\d)\.downsampling_layer\.", r"stages.\1.0."),
    (r"^encoder\.layer\.(\d)\.", r"stages.\1.1."),
    (r"\.conv_1x1\.convolution\.", ".local_proj."),
    (r"\.transformer\.layer\.(\d+)\.", r".transformer.\1."),
    (r"\.attention\.qkv_proj\.convolution\.", ".attn.qkv."),  # v2
    (r"\.attention\.out_proj\.convolution\.", ".attn.proj."),  # v2
    (r"\.ffn\.conv1\.convolution\.", ".mlp.fc1."),  # v2
    (r"\.ffn\.conv2\.convolution\.", ".mlp.fc2."),  # v2
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),  # v1: merged into attn.qkv below
    (r"\.attention\.output\.dense\.", ".attn.proj."),  # v1
    (r"\.intermediate\.dense\.", ".mlp.fc1."),  # v1
    (r"\.output\.dense\.", ".mlp.fc2."),  # v1
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.layernorm\.", ".norm."),
    (r"\.convolution\.", ".conv."),
    (r"\.normalization\.", ".bn."),
    (r"\.expand_1x1\.", ".expand."),
    (r"\.conv_3x3\.", ".depthwise."),
    (r"\.reduce_1x1\.", ".project."),
    (r"\.conv_kxk\.", ".local_conv."),
    (r"\.conv_projection\.", ".fold_proj."),
)

# ml-cvnets' names → ours, v1 (Linear attention/MLP) and v2 (1x1 conv attention/MLP, ``local_rep.0/1``).
CVNETS_RENAMES: tuple[Rename, ...] = (
    (r"^encoder\.", ""),
    (r"\.block\.norm\.", ".bn."),  # a conv layer's BatchNorm
    (r"\.block\.", "."),
    (r"^conv_1\.", "stem."),
    (r"^conv_1x1_exp\.", "final_conv."),
    (r"^classifier\.(fc|1)\.", "classifier."),
    (r"^layer_(\d)\.", lambda match: f"stages.{int(match[1]) - 1}."),
    (r"\.local_rep\.(conv_3x3|0)\.", ".local_conv."),
    (r"\.local_rep\.(conv_1x1|1)\.conv\.", ".local_proj."),
    (r"\.global_rep\.(\d+)\.(weight|bias)$", r".norm.\2"),  # the LayerNorm after the last transformer layer
    (r"\.global_rep\.(\d+)\.", r".transformer.\1."),
    (r"\.pre_norm_(mha|attn)\.0\.", ".norm1."),
    (r"\.pre_norm_(mha|attn)\.1\.qkv_proj\.(conv\.)?", ".attn.qkv."),
    (r"\.pre_norm_(mha|attn)\.1\.out_proj\.(conv\.)?", ".attn.proj."),
    (r"\.pre_norm_ffn\.0\.", ".norm2."),
    (r"\.pre_norm_ffn\.1\.(conv\.)?", ".mlp.fc1."),
    (r"\.pre_norm_ffn\.[34]\.(conv\.)?", ".mlp.fc2."),  # v2: index 3, v1: index 4
    (r"\.exp_1x1\.", ".expand."),
    (r"\.conv_3x3\.", ".depthwise."),
    (r"\.red_1x1\.", ".project."),
    (r"\.conv_proj\.", ".fold_proj."),
)


def detect_layout(keys: Iterable[str]) -> str | None:
    """The layout (one of :data:`LAYOUTS`) whose names ``keys`` use, or None when none fits."""
    keys = list(keys)
    if any(key.startswith(("mobilevit.", "mobilevitv2.", "conv_stem.")) for key in keys):
        return "transformers"
    if any(key.startswith(("conv_1.block.", "encoder.conv_1.block.", "layer_1.0.block.")) for key in keys):
        return "cvnets"
    if any(key.startswith("head.fc.") or ".conv1_1x1." in key for key in keys):
        return "timm"
    if STEM_WEIGHT in keys:
        return "ours"
    return None


def _rename(key: str, renames: tuple[Rename, ...]) -> str:
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


def _merge_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate separate ``attn.query/key/value`` tensors into ``attn.qkv`` (rows: q, then k, then v)."""
    merged = {}
    for key, value in state.items():
        found = re.match(r"(.*\.attn\.)(query|key|value)\.(weight|bias)$", key)
        if found is None:
            merged[key] = value
        elif found[2] == "query":
            prefix, kind = found[1], found[3]
            parts = [state[f"{prefix}{part}.{kind}"] for part in ("query", "key", "value")]
            merged[f"{prefix}qkv.{kind}"] = torch.cat(parts)
    return merged


def to_our_layout(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Rename a state dict in ``layout`` to this package's names (tensors are shared, not copied)."""
    renames = {"ours": (), "timm": TIMM_RENAMES, "transformers": TRANSFORMERS_RENAMES, "cvnets": CVNETS_RENAMES}
    if layout not in renames:
        raise ValueError(f"Unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    renamed = {_rename(key, renames[layout]): value for key, value in state.items()}
    return _merge_qkv(renamed) if layout == "transformers" else renamed


def fold_bgr_into_stem(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights for RGB input from weights trained on BGR input: reverse the stem conv's input channels.

    Exact: the stem is the only layer that sees the image, and zero padding is the same in either order.
    """
    return {**state, STEM_WEIGHT: state[STEM_WEIGHT].flip(1)}


def infer_variant(state: dict[str, torch.Tensor]) -> str | None:
    """The zoo variant a state dict in our layout belongs to, from its tensor shapes (None when none fits).

    v1 variants differ in their transformer widths (first MobileViT block), v2 variants in their stem width.
    """
    if STEM_WEIGHT not in state:
        return None
    stem_width = state[STEM_WEIGHT].shape[0]
    if "stages.2.1.fusion.conv.weight" in state:  # v1: the fusion conv exists only there
        width = state.get("stages.2.1.local_proj.weight")
        for name, cfg in mobilevit_v1.VARIANTS.items():
            if width is not None and width.shape[0] == cfg.transformer_dims[0]:
                return name
        return None
    for name, cfg in mobilevit_v2.VARIANTS.items():
        if cfg.stem_channels == stem_width:
            return name
    return None
