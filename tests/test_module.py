"""ImageClassifier's training loss: soft (MixUp/CutMix) targets, class weights; delayed early stopping."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from torch.utils.data import DataLoader, TensorDataset, default_collate
from torchvision.transforms import v2

from mobilevit.callbacks.early_stopping import DelayedEarlyStopping
from mobilevit.errors import UserInputError
from mobilevit.models import create_model
from mobilevit.module import (
    ImageClassifier,
    balanced_class_weights,
    class_weights_from_config,
    soft_target_cross_entropy,
)
from train import train

NUM_CLASSES = 4


def _classifier(**kwargs) -> ImageClassifier:
    net = create_model("mobilevit_xxs", num_classes=NUM_CLASSES, drop_rate=0.0)
    return ImageClassifier(net, optimizer=lambda params: torch.optim.SGD(params, lr=0.01), **kwargs)


def _mixup_batch(batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, their integer labels and MixUp's soft targets (B, C) for the mixed images."""
    torch.manual_seed(0)
    images = torch.rand(batch_size, 3, 32, 32)
    labels = torch.arange(batch_size) % NUM_CLASSES
    mixed, soft = v2.MixUp(num_classes=NUM_CLASSES, alpha=1.0)(images, labels)
    return mixed, labels, soft


def _manual_soft_loss(logits: torch.Tensor, probs: torch.Tensor, weight: torch.Tensor, smoothing: float) -> float:
    """-sum_c w_c * q_c * log p_c averaged over the batch, q the smoothed target distribution."""
    smoothed = probs * (1 - smoothing) + smoothing / probs.shape[1]
    return float(-(weight * smoothed * logits.log_softmax(dim=1)).sum(dim=1).mean())


def test_mixup_targets_in_loss() -> None:
    mixed, labels, soft = _mixup_batch()
    assert soft.shape == (8, NUM_CLASSES) and soft.dtype == torch.float32
    assert not torch.equal(soft, F.one_hot(labels, NUM_CLASSES).float())  # really mixed
    torch.manual_seed(1)
    logits = torch.randn(8, NUM_CLASSES)
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0])
    loss = soft_target_cross_entropy(logits, soft, weight, label_smoothing=0.1)
    assert float(loss) == pytest.approx(_manual_soft_loss(logits, soft, weight, 0.1), rel=1e-5)
    # Without weights, one-hot probabilities and class indices are the same loss, label smoothing included.
    one_hot = F.one_hot(labels, NUM_CLASSES).float()
    assert float(soft_target_cross_entropy(logits, one_hot, label_smoothing=0.1)) == pytest.approx(
        float(soft_target_cross_entropy(logits, labels, label_smoothing=0.1)), rel=1e-6
    )
    smoothing_changes_it = soft_target_cross_entropy(logits, soft) != soft_target_cross_entropy(logits, soft, None, 0.1)
    assert smoothing_changes_it


def test_training_step_on_a_mixup_batch() -> None:
    """A real MixUp collate feeds soft targets to fit(); the loss is finite and train/acc uses argmax targets."""
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32)
    labels = torch.arange(16) % NUM_CLASSES
    mixup = v2.MixUp(num_classes=NUM_CLASSES)
    loader = DataLoader(TensorDataset(images, labels), batch_size=8, collate_fn=lambda b: mixup(*default_collate(b)))
    module = _classifier(class_weights=[1.0, 2.0, 1.0, 0.5], label_smoothing=0.1)
    # torchmetrics rejects (B, C) float targets, so fitting at all shows the metrics got argmax indices.
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert "train/acc" in trainer.callback_metrics  # computed: torchmetrics would have raised on (B, C) targets


def test_balanced_class_weights() -> None:
    counts = torch.tensor([10, 30, 60])
    weights = balanced_class_weights(counts)
    assert weights == pytest.approx([100 / 30, 100 / 90, 100 / 180])
    assert float((torch.tensor(weights) * counts).sum()) / 100 == pytest.approx(1.0)  # mean weight per image
    with pytest.raises(UserInputError, match=r"classes \[1\] have none"):
        balanced_class_weights(torch.tensor([5, 0, 3]))


def test_class_weights_option() -> None:
    def no_counts() -> torch.Tensor:
        raise AssertionError("class_counts() must not be needed for class_weights=null")

    assert class_weights_from_config(None, no_counts) is None
    assert class_weights_from_config("balanced", lambda: torch.tensor([1, 3])) == pytest.approx([2.0, 2 / 3])
    with pytest.raises(UserInputError, match="module.class_weights must be one of: null, balanced; got 'inverse'"):
        class_weights_from_config("inverse", no_counts)


def test_class_weights_in_module() -> None:
    weights = [0.5, 1.0, 2.0, 4.0]
    module = _classifier(class_weights=torch.tensor(weights), label_smoothing=0.0)
    assert module.hparams.class_weights == weights and type(module.hparams.class_weights) is list
    assert not any("class_weights" in key for key in module.state_dict())  # checkpoints hold net.* only
    torch.manual_seed(0)
    logits, labels = torch.randn(6, NUM_CLASSES), torch.tensor([0, 1, 2, 3, 3, 3])
    expected = F.cross_entropy(logits, labels, weight=torch.tensor(weights))
    assert float(module.training_loss(logits, labels)) == pytest.approx(float(expected))
    assert float(module.training_loss(logits, labels)) != pytest.approx(float(F.cross_entropy(logits, labels)))
    assert _classifier().hparams.class_weights is None
    for bad in ([1.0, 2.0], [1.0, 1.0, 0.0, 1.0], [1.0, float("inf"), 1.0, 1.0]):
        with pytest.raises(UserInputError, match="module.class_weights must be 4 positive finite numbers"):
            _classifier(class_weights=bad)


def test_train_with_balanced_class_weights(make_cfg, tmp_path) -> None:
    """An unbalanced folder (train: 2 images of class a, 6 of class b): the weights are N / (C * count), computed by
    hand, and the validation and test losses stay plain (unweighted) cross-entropy."""
    from PIL import Image

    for split, counts in (("train", {"a": 2, "b": 6}), ("val", {"a": 3, "b": 1})):
        for name, count in counts.items():
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for index in range(count):
                colour = (200, 40 * index, 30) if name == "a" else (30, 40 * index, 200)
                Image.new("RGB", (32, 32), colour).save(tmp_path / "data" / split / name / f"{index}.png")
    cfg = make_cfg(
        [*FAST_TRAIN, "model=mobilevit_xxs", "module.class_weights=balanced", "logger=none", "data=imagefolder",
         f"data.root={tmp_path / 'data'}", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
         "data.split=val", "trainer.max_epochs=1", "module.label_smoothing=0"]
    )  # fmt: skip
    metrics, objects = train(cfg)
    expected = [8 / (2 * 2), 8 / (2 * 6)]  # [2.0, 0.667]
    assert objects["model"].hparams.class_weights == pytest.approx(expected)
    assert torch.allclose(objects["model"].class_weights, torch.tensor(expected))

    model = objects["model"].eval()
    images, targets = map(torch.cat, zip(*objects["datamodule"].val_dataloader(), strict=True))  # 3 a, 1 b
    with torch.no_grad():
        logits = model(images)
    plain, weighted = F.cross_entropy(logits, targets), F.cross_entropy(logits, targets, weight=torch.tensor(expected))
    assert abs(float(plain) - float(weighted)) > 1e-3  # the two differ on this split, so the check below can fail
    assert metrics["val/loss"] == pytest.approx(float(plain), abs=1e-5)
    assert metrics["test/loss"] == pytest.approx(float(plain), abs=1e-5)  # data.split=val: the same images
    with pytest.raises(UserInputError, match="module.class_weights must be one of"):
        train(make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "module.class_weights=inverse", "logger=none"]))


class _ConstantValLoss(L.LightningModule):
    """Learns nothing; logs the same val/loss every epoch, so early stopping only waits out its patience."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).sum()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", 1.0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize(("start_epoch", "stopped_epoch"), [(0, 2), (3, 5)])
def test_delayed_early_stopping(start_epoch: int, stopped_epoch: int) -> None:
    """patience 2: from the first monitored epoch e, e sets the best value and e+1, e+2 do not improve on it."""
    loader = DataLoader(TensorDataset(torch.rand(4, 2)), batch_size=4)
    stopper = DelayedEarlyStopping(monitor="val/loss", patience=2, min_delta=0.01, start_epoch=start_epoch)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=20, callbacks=[stopper], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(_ConstantValLoss(), train_dataloaders=loader, val_dataloaders=loader)
    assert stopper.stopped_epoch == stopped_epoch and trainer.current_epoch == stopped_epoch + 1
    with pytest.raises(UserInputError, match="start_epoch must be >= 0"):
        DelayedEarlyStopping(monitor="val/loss", start_epoch=-1)
