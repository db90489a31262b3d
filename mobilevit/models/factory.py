"""The public model builder: :func:`create_model`, a zoo variant with optional pretrained weights.

It is the ``_target_`` of every ``configs/model/*.yaml`` (as ``mobilevit.models.create_model``). The networks come
from :mod:`mobilevit.models.registry`, the weights from :mod:`mobilevit.models.pretrained`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mobilevit.models.base import MobileViTClassifier
from mobilevit.models.pretrained import load_pretrained
from mobilevit.models.registry import build_model


def create_model(
    name: str,
    num_classes: int = 1000,
    pretrained: str | Path | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    class_names: Sequence[str] | None = None,
) -> MobileViTClassifier:
    """Build variant ``name`` with a ``num_classes`` head, optionally loading weights from ``pretrained``.

    ``pretrained`` is ``imagenet``, ``hf-hub:<repo_id>``, or a file/folder in our, timm's, transformers' or
    ml-cvnets' layout (see :func:`mobilevit.models.pretrained.read_weights`); a head of another size is
    re-initialised. ``drop_rate`` is the dropout before the classifier and ``drop_path_rate`` the largest
    stochastic-depth rate, reached linearly by the last transformer layer. ``class_names``: the data's classes in
    label order; pretrained weights stored with other class names get a new head (see
    :func:`mobilevit.models.pretrained.load_pretrained`).

    Raises:
        UserInputError: an unknown variant, or weights that cannot be read or do not fit the network (one line
            naming the source, or every missing and unexpected key).
    """
    model = build_model(name, num_classes, drop_rate, drop_path_rate)
    if pretrained:
        load_pretrained(model, pretrained, variant=name, class_names=class_names)
    return model
