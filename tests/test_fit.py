"""mobilevit/fit.py: the final test follows test_weights, with the same default as configs/train.yaml."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config

from mobilevit.fit import final_test
from mobilevit.utils.validation import DEFAULT_TEST_WEIGHTS


class RecordingTrainer(SimpleNamespace):
    """Stands in for a Trainer after fit: records validate() and test() calls."""

    def __init__(self) -> None:
        super().__init__(callbacks=[], callback_metrics={}, calls=[])

    def validate(self, **kwargs) -> None:
        self.calls.append(("validate", None))
        self.callback_metrics = {"val/acc": torch.tensor(0.5), "val/acc_best": torch.tensor(0.6)}

    def test(self, ckpt_path=None, **kwargs) -> None:
        self.calls.append(("test", ckpt_path))
        self.callback_metrics = {"test/acc": torch.tensor(0.4)}


def test_the_default_test_weights_is_the_train_configs(tmp_path) -> None:
    assert compose_config("train", tmp_path).test_weights == DEFAULT_TEST_WEIGHTS == "last"


@pytest.mark.parametrize(
    ("weights", "calls", "metrics"),
    [
        (None, [("validate", None), ("test", None)], {"val/acc_last": 0.5, "test/acc": pytest.approx(0.4)}),
        ("last", [("validate", None), ("test", None)], {"val/acc_last": 0.5, "test/acc": pytest.approx(0.4)}),
        ("best", [("test", "best.ckpt")], {"test/acc": pytest.approx(0.4)}),
    ],
)
def test_final_test_tests_the_named_weights(weights: str | None, calls: list, metrics: dict) -> None:
    """A config without test_weights (None) tests the final weights, as train.yaml's default says (not the best)."""
    trainer = RecordingTrainer()
    assert final_test(trainer, model=None, datamodule=None, weights=weights, best_ckpt="best.ckpt") == metrics
    assert trainer.calls == calls
