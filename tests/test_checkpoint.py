"""mobilevit/checkpoint.py: what evaluate.py and predict read from a train.py checkpoint, and what they refuse (no
stored run config; a stored ``_target_`` that names other code)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import user_error

from evaluate import evaluate
from mobilevit.checkpoint import datamodule_from_weights, read_trained
from mobilevit.errors import UserInputError
from mobilevit.models import create_model
from mobilevit.predict import Classifier


def test_evaluate_rejects_non_train_checkpoint(make_cfg, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(UserInputError, match="no stored run config"):
        evaluate(make_cfg([f"ckpt_path={bogus}"], config_name="eval"))


def test_targets_stored_in_a_checkpoint_cannot_name_other_code(checkpoint_with_cfg, make_cfg, tmp_path: Path) -> None:
    """A checkpoint holds only plain containers (so weights_only=True reads it) but its run config is instantiated by
    evaluate.py and predict: a ``_target_`` there naming other code, at the top or nested, is refused."""
    marker = tmp_path / "code_ran"
    opener = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    crafted = {
        "data": {"data": opener},
        "model": {"model": {**opener, "name": "mobilevit_xxs"}},
        "nested": {"data": {"_target_": "mobilevit.data.SyntheticDataModule", "root": opener}},
    }
    for name, change in crafted.items():
        path = checkpoint_with_cfg(name, change)
        for message in (
            user_error(evaluate, make_cfg([f"ckpt_path={path}"], config_name="eval")),
            user_error(Classifier, path),
        ):
            assert message.startswith(f"Refusing checkpoint '{path}': its stored run config names code"), message
            assert "builtins.open" in message
    assert not marker.exists()


@pytest.fixture
def checkpoint_with_cfg(tmp_path: Path):
    """``make(name, {"model"|"data": config})`` -> a weights_only-safe checkpoint whose run config has that section."""

    def make(name: str, change: dict) -> Path:
        cfg = {
            "model": {"_target_": "mobilevit.models.create_model", "name": "mobilevit_xxs"},
            "data": {"_target_": "mobilevit.data.SyntheticDataModule", "root": str(tmp_path / "data")},
            **change,
        }
        path = tmp_path / f"{name}.ckpt"
        state = {f"net.{k}": v for k, v in create_model("mobilevit_xxs", num_classes=3).state_dict().items()}
        torch.save({"state_dict": state, "hyper_parameters": {"cfg": cfg, "num_classes": 3}}, path)
        assert torch.load(path, weights_only=True)  # plain containers: weights_only alone does not stop it
        return path

    return make


def test_a_data_argument_renamed_since_the_run_is_read_under_its_new_name(
    checkpoint_with_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints and sidecars written before data.multiscale_seed became data.shuffle_seed still load: the stored
    value is used, without the deprecation line meant for configs a user writes."""
    data = {"_target_": "mobilevit.data.SyntheticDataModule", "root": str(tmp_path / "data"), "num_classes": 3,
            "image_size": 32}  # fmt: skip
    path = checkpoint_with_cfg("old_run", {"data": {**data, "multiscale_seed": 42}})
    with caplog.at_level(logging.WARNING):
        datamodule = datamodule_from_weights(read_trained(path))
    assert datamodule.shuffle_seed == 42 and "deprecated" not in caplog.text
