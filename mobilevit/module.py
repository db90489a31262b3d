"""LightningModule that trains and evaluates any zoo network as an image classifier."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MaxMetric, MeanMetric, MetricCollection

from mobilevit.errors import UserInputError, require_positive
from mobilevit.inference import hflip_tta_logits
from mobilevit.metrics import classification_metrics
from mobilevit.utils.budget import training_progress

Batch = tuple[torch.Tensor, torch.Tensor]
STAGES: tuple[str, ...] = ("train", "val", "test")
# Values of `module.class_weights` in the configs; ImageClassifier also takes a list of per-class weights.
CLASS_WEIGHT_OPTIONS: tuple[str | None, ...] = (None, "balanced")


def balanced_class_weights(class_counts: torch.Tensor) -> list[float]:
    """Per-class loss weights N / (C * count_c) ("balanced"): rarer classes weigh more; mean weight per image 1."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    empty = (counts <= 0).nonzero().flatten().tolist()
    if empty:
        raise UserInputError(
            f"module.class_weights=balanced needs training images of every class; classes {empty} have none."
        )
    return (counts.sum() / (len(counts) * counts)).tolist()


def soft_target_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy for class indices (B,) or class probabilities (B, C), e.g. from MixUp/CutMix.

    Label smoothing mixes either kind of target with the uniform distribution. With ``weight``, index targets
    average by the summed weights of the batch's targets and probability targets by the batch size (PyTorch's
    definitions); for balanced weights both scales are close to the unweighted loss.
    """
    if targets.ndim == 2:
        targets = targets.to(logits.dtype)
    if weight is not None:
        weight = weight.to(logits.dtype)
    return F.cross_entropy(logits, targets, weight=weight, label_smoothing=label_smoothing)


def hard_targets(targets: torch.Tensor) -> torch.Tensor:
    """Class indices of index (B,) or probability (B, C) targets (the most likely class of a mixed image)."""
    return targets.argmax(dim=1) if targets.ndim == 2 else targets


def weight_decay_param_groups(
    module: nn.Module, head: nn.Module | None = None, backbone_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Split trainable parameters: weights of rank >= 2 decay; norm scales and biases (ndim <= 1) do not.

    With ``head`` (a sub-module of ``module``), the other parameters (the backbone) form their own groups whose
    ``lr_scale`` is ``backbone_lr_scale``; every other group has ``lr_scale`` 1.
    :meth:`ImageClassifier.configure_optimizers` multiplies each group's learning rate by its ``lr_scale``.
    """
    head_ids = {id(param) for param in head.parameters()} if head is not None else set()
    groups: dict[str, dict[str, Any]] = {}
    for param in module.parameters():
        if not param.requires_grad:
            continue
        part = "head" if id(param) in head_ids else "backbone"
        decay = "decay" if param.ndim > 1 else "no_decay"
        name = decay if head is None else f"{part}_{decay}"
        if name not in groups:
            scale = backbone_lr_scale if part == "backbone" else 1.0
            groups[name] = {"params": [], "name": name, "lr_scale": scale}
            if decay == "no_decay":
                groups[name]["weight_decay"] = 0.0
        groups[name]["params"].append(param)
    return list(groups.values())


class ImageClassifier(L.LightningModule):
    """Image classification with cross-entropy, top-1/top-5 accuracy and macro F1 per stage.

    Args:
        net: classifier network mapping (B, 3, H, W) images in [0, 1] to (B, num_classes) logits; must expose
            ``num_classes``.
        optimizer: partial optimizer constructor (Hydra ``_partial_: true``) called with the param groups.
        scheduler: partial scheduler constructor called with ``optimizer``, ``total_steps``, ``steps_per_epoch``
            and ``progress`` (:meth:`training_progress`); stepped after every optimizer step. None keeps the lr
            constant.
        label_smoothing: label smoothing of the training loss (validation/test loss is plain cross-entropy).
        class_weights: per-class weights of the training loss: a list of ``num_classes`` positive numbers,
            ``"balanced"`` (:func:`balanced_class_weights` of the datamodule's ``class_counts()``, computed when fit
            starts) or None (every class weighs the same). The resolved list is stored in checkpoints
            (``hyper_parameters.class_weights``), and a resumed ``balanced`` run keeps it. Validation/test losses
            are unweighted.
        channels_last: keep weights and input batches in channels-last memory format (faster convolutions).
        backbone_lr_scale: learning rate of everything but the classifier head, relative to the optimizer's lr;
            below 1 when fine-tuning pretrained weights, so that the new head learns faster than the backbone.
        hflip_tta: in validation, test and prediction, average the class probabilities of each image and its
            horizontal mirror (:func:`hflip_tta_logits`); training is unaffected.
        cfg: resolved run config (plain containers) saved in checkpoints to rebuild the model and data.
        class_names: class names in label order, saved in checkpoints.
        preprocessing: the evaluation preprocessing (``Preprocessing.to_dict()``), saved in checkpoints for
            evaluate.py, predict and export.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer] | None = None,
        scheduler: Callable[..., LRScheduler] | None = None,
        label_smoothing: float = 0.1,
        class_weights: Sequence[float] | torch.Tensor | str | None = None,
        channels_last: bool = True,
        backbone_lr_scale: float = 1.0,
        hflip_tta: bool = False,
        cfg: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise UserInputError(f"module.label_smoothing must be in [0, 1), got {label_smoothing}.")
        require_positive(backbone_lr_scale, "module.backbone_lr_scale")
        num_classes = int(net.num_classes)
        if class_names is not None and len(class_names) != num_classes:
            raise UserInputError(f"Got {len(class_names)} class names for a network with {num_classes} classes.")
        self.balance_classes = isinstance(class_weights, str)
        if self.balance_classes and class_weights not in CLASS_WEIGHT_OPTIONS:
            valid = ", ".join("null" if value is None else value for value in CLASS_WEIGHT_OPTIONS)
            raise UserInputError(f"module.class_weights must be one of: {valid}; got {class_weights!r}.")
        self.num_classes = num_classes
        # Only plain containers go into hparams/checkpoints, so `torch.load(weights_only=True)` can read them.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "class_weights"], logger=False)
        self.hparams["num_classes"] = num_classes
        # Non-persistent: follows the module's device but stays out of state_dict (checkpoints hold `net.*` only).
        self.register_buffer("class_weights", None, persistent=False)
        self._use_class_weights(None if self.balance_classes else class_weights)
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.hflip_tta = bool(hflip_tta)
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        # Cross-entropy per image, averaged over the whole split (and over every DDP rank's images, each counted once).
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def _use_class_weights(self, values: Sequence[float] | torch.Tensor | None) -> None:
        """Check and set the training loss's per-class weights (the buffer and ``hparams.class_weights``)."""
        weights = None
        if values is not None:
            weights = torch.as_tensor(values, dtype=torch.float32).flatten()
            if len(weights) != self.num_classes or not (torch.isfinite(weights).all() and (weights > 0).all()):
                raise UserInputError(
                    f"module.class_weights must be {self.num_classes} positive finite numbers, got {weights.tolist()}."
                )
            weights = weights.to(self.device)
        self.class_weights = weights
        self.hparams["class_weights"] = None if weights is None else weights.tolist()

    def setup(self, stage: str) -> None:
        """When fit starts: an example input at the training resolution (the model summary's FLOPs), and for
        ``class_weights="balanced"`` the class weights from the datamodule's training labels (after its
        prepare_data and setup, so left-out unreadable images do not count)."""
        if stage != "fit":
            return
        image_size = getattr(self.trainer.datamodule, "image_size", None)
        if image_size:
            self.example_input_array = torch.zeros(1, 3, image_size, image_size)
        if not self.balance_classes:
            return
        class_counts = getattr(self.trainer.datamodule, "class_counts", None)
        if class_counts is None:
            raise UserInputError("module.class_weights=balanced needs a data module with class_counts().")
        self._use_class_weights(balanced_class_weights(class_counts()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of images (B, 3, H, W); flip-averaged in eval mode with ``hflip_tta``."""
        if self.hflip_tta and not self.training:
            return hflip_tta_logits(self.net, images)
        return self.net(images)

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and images.ndim == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    # The best validation accuracy so far travels in checkpoints, so a resumed run keeps the whole run's best (the
    # sanity-check validation never counts: on_validation_epoch_end skips it).
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.val_acc_best.update_called:
            checkpoint["val_acc_best"] = float(self.val_acc_best.compute())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed "balanced" run keeps the weights it started with, even if the data changed since.
        stored = checkpoint.get("hyper_parameters", {}).get("class_weights")
        if self.balance_classes and stored is not None:
            self._use_class_weights(stored)
        # The whole run's best val accuracy, not only the part after the resume.
        self.val_acc_best.reset()
        if "val_acc_best" in checkpoint:
            self.val_acc_best.update(torch.tensor(checkpoint["val_acc_best"], device=self.val_acc_best.device))

    def training_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Class-weighted, label-smoothed cross-entropy of index (B,) or probability (B, C) targets."""
        return soft_target_cross_entropy(logits, targets, self.class_weights, self.label_smoothing)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(self._images(images))
        loss = self.training_loss(logits, targets)
        self.train_metrics.update(logits.detach().float(), hard_targets(targets))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _eval_step(self, batch: Batch, metrics: MetricCollection, stage: str) -> None:
        images, targets = batch
        logits = self(self._images(images)).float()
        metrics.update(logits, targets)
        loss = self.val_loss if stage == "val" else self.test_loss
        loss.update(F.cross_entropy(logits, targets, reduction="none"))
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        for name, metric in metrics.items():
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=name == "val/acc")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Logits (float32, on CPU) and targets of one batch, for offline evaluation."""
        images, targets = batch
        return {"logits": self(self._images(images)).float().cpu(), "targets": targets.cpu()}

    def on_train_start(self) -> None:
        """Train at the learning rate configured now. On a resume Lightning has just restored the optimizer's and the
        scheduler's learning rates from the checkpoint; a resume with a new ``optimizer.lr`` must train at it, its
        schedule included (without a change this sets the values they already have)."""
        configured = getattr(self, "_configured_lrs", None)
        if not configured:
            return
        optimizer = self.trainer.optimizers[0]
        schedulers = self.trainer.lr_scheduler_configs
        lrs = configured
        if schedulers:  # the schedule's value at the restored step, scaled by new / old initial lr
            scheduler = schedulers[0].scheduler
            restored = scheduler.base_lrs
            lrs = [group["lr"] * new / old for group, new, old in zip(optimizer.param_groups, configured, restored)]
            scheduler.base_lrs = list(configured)
        for group, lr, initial in zip(optimizer.param_groups, lrs, configured):
            group["lr"] = lr
            if "initial_lr" in group:
                group["initial_lr"] = initial

    def training_progress(self) -> float:
        """Fraction of the run's training budget spent (epochs, steps or ``max_time``), for the lr schedule."""
        return training_progress(self.trainer)

    def _steps_per_epoch(self) -> int:
        batches = self.trainer.num_training_batches
        if not math.isfinite(batches) or batches < 1:
            return 1
        return max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        if self.optimizer_factory is None:
            raise UserInputError("Training needs an optimizer: choose one with optimizer=adamw or optimizer=sgd.")
        scale = self.hparams.backbone_lr_scale
        head = self.net.classifier if scale != 1.0 else None
        optimizer = self.optimizer_factory(params=weight_decay_param_groups(self.net, head, scale))
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_scale"]
        self._configured_lrs = [group["lr"] for group in optimizer.param_groups]
        if self.scheduler_factory is None:
            return optimizer
        # A pure time budget (max_epochs=-1 or null with max_time) has no step count: the schedule follows progress.
        stepping_batches = self.trainer.estimated_stepping_batches
        total_steps = max(1, int(stepping_batches)) if math.isfinite(stepping_batches) else None
        scheduler = self.scheduler_factory(
            optimizer=optimizer,
            total_steps=total_steps,
            steps_per_epoch=self._steps_per_epoch(),
            progress=self.training_progress,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
