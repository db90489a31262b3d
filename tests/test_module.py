"""ImageClassifier (mobilevit/module.py): its training loss with soft (MixUp/CutMix) targets and class weights, its
parameter groups (no weight decay for norms and biases, the backbone learning-rate scale); delayed early stopping."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset, default_collate
from torchvision.transforms import v2

from mobilevit.callbacks.early_stopping import DelayedEarlyStopping
from mobilevit.errors import UserInputError
from mobilevit.models import create_model
from mobilevit.module import (
    ImageClassifier,
    balanced_class_weights,
    soft_target_cross_entropy,
    weight_decay_param_groups,
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
    """"balanced" waits for fit (the data's class counts); any other string is one clear error."""
    module = _classifier(class_weights="balanced")
    assert module.balance_classes and module.class_weights is None and module.hparams.class_weights is None
    with pytest.raises(UserInputError, match="module.class_weights must be one of: null, balanced; got 'inverse'"):
        _classifier(class_weights="inverse")


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


def _unbalanced_folder(root: Path, train_counts: dict[str, int]) -> Path:
    for split, counts in (("train", train_counts), ("val", dict.fromkeys(train_counts, 1))):
        for name, count in counts.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                Image.new("RGB", (32, 32), (40 * index, 200, 30)).save(root / split / name / f"{index}.png")
    return root


def test_train_with_balanced_class_weights(make_cfg, tmp_path: Path) -> None:
    """The module weighs classes from the data module's counts when fit starts; a resumed run keeps the weights
    stored in its checkpoint even when the data changed since."""
    root = _unbalanced_folder(tmp_path / "folder", {"a": 1, "b": 3})  # N = 4 images, C = 2 classes
    folder = [*FAST_TRAIN, "model=mobilevit_xxs", "data=imagefolder", f"data.root={root}", "data.image_size=32"]
    quick = [*folder, "data.batch_size=2", "data.num_workers=0", "logger=none", "test=false", "callbacks.reports=null"]
    cfg = make_cfg([*quick, "module.class_weights=balanced", "trainer.max_epochs=1"], run_name="first")
    metrics, objects = train(cfg)
    expected = [4 / (2 * 1), 4 / (2 * 3)]  # N / (C * count)
    assert objects["model"].hparams.class_weights == pytest.approx(expected)
    assert torch.allclose(objects["model"].class_weights, torch.tensor(expected))
    assert math.isfinite(metrics["train/loss"])
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    stored = torch.load(last, map_location="cpu", weights_only=True)["hyper_parameters"]["class_weights"]
    assert stored == pytest.approx(expected)

    _unbalanced_folder(root, {"a": 3})  # now 3 + 3: recomputed weights would be [1, 1]
    resumed = make_cfg(
        [*quick, "module.class_weights=balanced", "trainer.max_epochs=2", f"ckpt_path={last}"], run_name="resumed"
    )
    _, objects = train(resumed)
    assert objects["model"].hparams.class_weights == pytest.approx(expected)
    assert torch.allclose(objects["model"].class_weights, torch.tensor(expected))


def test_balanced_class_weights_leave_val_and_test_losses_unweighted(make_cfg, tmp_path) -> None:
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


def test_model_summary_lists_layers_with_flops_at_the_training_size(make_cfg, caplog) -> None:
    """FLOPs at data.image_size (set by the module when fit starts), no metric modules listed as layers, and no
    litlogger advertisement or mixed-precision summary warning."""
    from torch.utils.flop_counter import FlopCounterMode

    from mobilevit.callbacks.model_summary import _LayersOnly
    from mobilevit.utils import silence_upstream_warnings

    cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "+trainer.fast_dev_run=1"])
    _, objects = train(cfg)
    module = objects["model"]
    assert tuple(module.example_input_array.shape) == (1, 3, 32, 32)  # TINY_SYNTHETIC: data.image_size=32
    summary = _LayersOnly(module, max_depth=1)
    assert summary.layer_names == ["net"]  # not train_metrics, val_metrics, test_metrics, val_acc_best
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module.net.eval()(torch.zeros(1, 3, 32, 32))
    assert summary.total_flops == counter.get_total_flops() > 0

    silence_upstream_warnings()
    with caplog.at_level(logging.INFO):
        L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert "GPU available" in caplog.text and "litlogger" not in caplog.text


def test_no_weight_decay_for_norms_and_biases() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    net(torch.rand(1, 3, 8, 8))
    decay, no_decay = weight_decay_param_groups(net)
    assert all(p.ndim >= 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.ndim <= 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4
    assert no_decay["weight_decay"] == 0.0


def test_backbone_lr_scale_gives_the_head_the_full_learning_rate() -> None:
    net = create_model("mobilevit_xxs", num_classes=5)
    groups = weight_decay_param_groups(net, head=net.classifier, backbone_lr_scale=0.1)
    by_name = {group["name"]: group for group in groups}
    assert set(by_name) == {"backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"}
    assert by_name["head_decay"]["params"] == [net.classifier.weight]
    assert by_name["head_no_decay"]["params"] == [net.classifier.bias]
    assert sum(len(group["params"]) for group in groups) == len(list(net.parameters()))
    module = ImageClassifier(net, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3), backbone_lr_scale=0.1)
    optimizer = module.configure_optimizers()
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs["head_decay"] == lrs["head_no_decay"] == pytest.approx(1e-3)
    assert lrs["backbone_decay"] == lrs["backbone_no_decay"] == pytest.approx(1e-4)
    with pytest.raises(UserInputError, match="module.backbone_lr_scale must be a number > 0, got 0"):
        ImageClassifier(net, backbone_lr_scale=0)
