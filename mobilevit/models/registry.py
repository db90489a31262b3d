"""Named variants of the zoo: ``create_model`` and ``list_models``."""

from __future__ import annotations

from pathlib import Path

from mobilevit.errors import UserInputError
from mobilevit.models import mobilevit_v1, mobilevit_v2
from mobilevit.models.base import MobileViTClassifier
from mobilevit.models.pretrained import load_pretrained


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`: v1 (xxs, xs, s) then v2 by width."""
    return [*mobilevit_v1.VARIANTS, *mobilevit_v2.VARIANTS]


def create_model(
    name: str,
    num_classes: int = 1000,
    pretrained: str | Path | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> MobileViTClassifier:
    """Build variant ``name`` with a ``num_classes`` head, optionally loading weights from ``pretrained``.

    ``pretrained`` is a .pth/.pt/.bin/.ckpt/.safetensors file in our layout or timm's; a head of another
    size is re-initialised. ``drop_rate`` is the dropout before the classifier and ``drop_path_rate`` the
    largest stochastic-depth rate, reached linearly by the last transformer layer.
    """
    if name in mobilevit_v1.VARIANTS:
        model = mobilevit_v1.MobileViT(mobilevit_v1.VARIANTS[name], num_classes, drop_rate, drop_path_rate)
    elif name in mobilevit_v2.VARIANTS:
        model = mobilevit_v2.MobileViTv2(mobilevit_v2.VARIANTS[name], num_classes, drop_rate, drop_path_rate)
    else:
        raise UserInputError(f"model.name={name!r} is not a MobileViT variant; valid: {', '.join(list_models())}.")
    if pretrained:
        load_pretrained(model, pretrained)
    return model
