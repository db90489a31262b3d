"""mobilevit: train, evaluate and ship MobileViT image classifiers."""

__version__ = "0.1.0"
