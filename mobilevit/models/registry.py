"""Named variants of the zoo: ``build_model`` and ``list_models`` (weights: :mod:`mobilevit.models.pretrained`; a
variant with weights: :mod:`mobilevit.models.factory`)."""

from __future__ import annotations

from mobilevit.errors import UserInputError
from mobilevit.models import mobilevit_v1, mobilevit_v2
from mobilevit.models.base import MobileViTClassifier


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`: v1 (xxs, xs, s) then v2 by width."""
    return [*mobilevit_v1.VARIANTS, *mobilevit_v2.VARIANTS]


def build_model(
    name: str, num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0
) -> MobileViTClassifier:
    """Variant ``name`` with a ``num_classes`` head, randomly initialised.

    ``drop_rate`` is the dropout before the classifier and ``drop_path_rate`` the largest stochastic-depth rate,
    reached linearly by the last transformer layer.
    """
    if name in mobilevit_v1.VARIANTS:
        return mobilevit_v1.MobileViT(mobilevit_v1.VARIANTS[name], num_classes, drop_rate, drop_path_rate)
    if name in mobilevit_v2.VARIANTS:
        return mobilevit_v2.MobileViTv2(mobilevit_v2.VARIANTS[name], num_classes, drop_rate, drop_path_rate)
    raise UserInputError(f"model.name={name!r} is not a MobileViT variant; valid: {', '.join(list_models())}.")
