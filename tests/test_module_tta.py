"""Flip test-time augmentation (mobilevit.inference.hflip_tta_logits, tested in test_inference.py) in the module's
val/test/predict steps, evaluate.py and mobilevit.predict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import FAST_TRAIN, TINY_SYNTHETIC, compose_config
from evaluate import evaluate
from mobilevit.inference import hflip_tta_logits
from mobilevit.module import ImageClassifier
from mobilevit.predict import Classifier
from recorders import SnapshotFinalWeights, target
from test_inference import LeftHalf
from train import train


def test_module_applies_it_in_eval_only() -> None:
    torch.manual_seed(0)
    module = ImageClassifier(LeftHalf(), channels_last=False, hflip_tta=True)
    images = torch.rand(2, 3, 8, 8)
    module.train()
    torch.testing.assert_close(module(images), module.net(images))  # training sees single views
    module.eval()
    torch.testing.assert_close(module(images), hflip_tta_logits(module.net, images))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    overrides = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "trainer.max_epochs=1", "logger=none",
                 "module.hflip_tta=true", "callbacks.reports=null"]  # fmt: skip
    cfg = compose_config("train", tmp_path_factory.mktemp("tta_train"), overrides, data_dir=shared_data_dir)
    metrics, objects = train(cfg)
    assert objects["model"].hflip_tta and "test/acc" in metrics
    return Path(objects["best_ckpt"])


def test_evaluate_and_predict_follow_the_run_or_the_override(checkpoint: Path, tmp_path: Path, shared_data_dir) -> None:
    base = [f"ckpt_path={checkpoint}", "trainer=cpu", "trainer.precision=32-true", "trainer.enable_progress_bar=false",
            "fuse_bn=false"]  # fmt: skip
    as_trained = evaluate(compose_config("eval", tmp_path, base, data_dir=shared_data_dir, run_name="a"))
    single = evaluate(compose_config("eval", tmp_path, [*base, "hflip_tta=false"], data_dir=shared_data_dir, run_name="b"))
    assert as_trained["hflip_tta"] is True and single["hflip_tta"] is False
    assert as_trained["loss"] != single["loss"]  # a different function of the images

    images = torch.rand(3, 3, 32, 32)
    tta = Classifier(checkpoint, device="cpu", precision="32")
    plain = Classifier(checkpoint, device="cpu", precision="32", hflip_tta=False)
    assert tta.hflip_tta and not plain.hflip_tta
    expected = (plain.probabilities(images) + plain.probabilities(images.flip(-1))) / 2
    torch.testing.assert_close(tta.probabilities(images), expected, rtol=0, atol=1e-6)


def test_test_weights_last_validates_and_tests_the_final_weights(make_cfg) -> None:
    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "trainer.max_epochs=3", "logger=none",
                    "callbacks.reports=null", "test_weights=last",
                    f"+callbacks.snapshot._target_={target(SnapshotFinalWeights)}"])  # fmt: skip
    metrics, objects = train(cfg)
    assert {"val/acc_last", "val/loss_last", "test/acc"} <= set(metrics)
    tested = objects["model"].net.state_dict()
    assert all(torch.equal(tested[name], value) for name, value in SnapshotFinalWeights.weights.items())


def test_test_weights_must_be_best_or_last(make_cfg) -> None:
    from mobilevit.errors import UserInputError

    with pytest.raises(UserInputError, match=r"test_weights must be one of \['best', 'last'\], got 'mean'"):
        train(make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "test_weights=mean"]))
