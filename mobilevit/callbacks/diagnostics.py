"""Training diagnostics: what the model gets wrong, and how training went (config: ``callbacks.reports``).

Every ``every_n_epochs`` validation epochs (and after the last epoch) TensorBoard gets a confusion matrix
sorted by per-class recall, a table of the most confused class pairs and a grid of the most confidently
misclassified validation images. At the end of fit, ``training_history.png`` shows loss and top-1 accuracy
per epoch, train vs val.

Predictions are captured from the validation forward pass itself (a forward hook on the LightningModule),
so reports cost no second pass over the data. With ``on_last_epoch`` (the default) every validation epoch is
collected, since any epoch may turn out to be the last: off-report epochs then cost a CPU copy of the logits and
of the most confident mistakes, not a forward pass.
"""

from __future__ import annotations

import logging
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.hooks import RemovableHandle

from mobilevit.errors import UserInputError, require_int
from mobilevit.metrics import CONFUSION_ORDERS, confused_pairs_markdown, most_confused_pairs, split_metrics
from mobilevit.plots import confusion_matrix_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# History series -> callback_metrics keys to read it from (first present wins).
HISTORY_KEYS: dict[str, tuple[str, ...]] = {
    "train/loss": ("train/loss_epoch", "train/loss"),
    "train/acc": ("train/acc",),
    "val/loss": ("val/loss",),
    "val/acc": ("val/acc",),
}
History = dict[str, dict[int, float]]  # series -> {epoch (0-based): value}


@dataclass(slots=True)
class Mistake:
    """One misclassified image (uint8 CHW) with its labels and the predicted class's probability."""

    image: torch.Tensor
    true: int
    predicted: int
    confidence: float


def _short(name: str, width: int = 24) -> str:
    """``name`` wrapped to at most two lines of ``width`` characters."""
    return "\n".join(textwrap.wrap(name, width, max_lines=2, placeholder="…")) or name


def misclassified_figure(mistakes: list[Mistake], class_names: list[str], title: str = "") -> Figure:
    """A grid of misclassified images, each captioned with its true and predicted class names."""
    from matplotlib.figure import Figure

    count = max(len(mistakes), 1)
    cols = min(count, max(4, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(2.6 * cols, 3.2 * rows + 0.5), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes:
        ax.axis("off")
    for ax, mistake in zip(axes, mistakes, strict=False):
        ax.imshow(mistake.image.permute(1, 2, 0).numpy(), interpolation="nearest")
        caption = (
            f"true: {_short(class_names[mistake.true])}\n"
            f"pred: {_short(class_names[mistake.predicted])} ({mistake.confidence:.0%})"
        )
        ax.set_title(caption, fontsize=9, loc="left", color="#8b0000")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def training_history_figure(history: History, title: str = "") -> Figure:
    """Two panels: cross-entropy loss and top-1 accuracy per epoch (1-based), train vs val."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig = Figure(figsize=(12, 4.6), dpi=120)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, metric, label in ((loss_ax, "loss", "cross-entropy loss"), (acc_ax, "acc", "top-1 accuracy")):
        for stage, colour in (("train", "#1f77b4"), ("val", "#d62728")):
            series = history.get(f"{stage}/{metric}", {})
            epochs = sorted(series)
            if epochs:
                x = [epoch + 1 for epoch in epochs]
                marker = "o" if len(epochs) <= 40 else None
                ax.plot(x, [series[e] for e in epochs], color=colour, marker=marker, markersize=3, label=stage)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    acc_ax.set_ylim(0.0, 1.02)
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    val_acc = history.get("val/acc", {})
    if val_acc:
        best_epoch = max(val_acc, key=lambda e: (val_acc[e], -e))
        best = val_acc[best_epoch]
        acc_ax.plot([best_epoch + 1], [best], marker="*", markersize=13, color="#d62728", linestyle="none",
                    label=f"best val {best:.1%} (epoch {best_epoch + 1})")  # fmt: skip
    for ax in (loss_ax, acc_ax):
        if ax.lines:
            ax.legend(loc="best")
    fig.suptitle(title or "Training history", fontsize=12)
    note = "train: mean over each epoch's batches (augmented; loss with label smoothing, if any); val: after each epoch"
    fig.text(0.5, 0.005, note, ha="center", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


class TrainingDiagnostics(L.Callback):
    """TensorBoard reports every ``every_n_epochs`` validation epochs, and training_history.png after fit.

    Args:
        every_n_epochs: report after validation of epochs N, 2N, ... (1-based); 0 turns periodic reports off.
        on_last_epoch: also report the last validated epoch when training ends, however it ends: at
            ``trainer.max_epochs``, ``max_steps`` or ``max_time``, by early stopping, or by an exception (the NaN
            guard, Ctrl-C, SIGTERM). Every validation is then collected, and the last one kept until the end.
        max_images: misclassified validation images in the grid, most confident mistakes first (0: no grid).
        max_pairs: rows of the most-confused-pairs table (0: no table).
        order: class order of the confusion matrix: ``recall`` (lowest recall first) or ``index``.
        history_file: where to write the loss/accuracy curves at the end of fit; None writes nothing.

    Reports need a TensorBoard logger; without one the log says so and only the history file is written.
    Under DDP the confusion matrix covers every rank's share of the data, the image grid rank 0's.
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        on_last_epoch: bool = True,
        max_images: int = 16,
        max_pairs: int = 20,
        order: str = "recall",
        history_file: str | Path | None = "training_history.png",
    ) -> None:
        super().__init__()
        self.every_n_epochs = require_int(every_n_epochs, "callbacks.reports.every_n_epochs", 0)
        self.on_last_epoch = bool(on_last_epoch)
        self.max_images = require_int(max_images, "callbacks.reports.max_images", 0)
        self.max_pairs = require_int(max_pairs, "callbacks.reports.max_pairs", 0)
        if order not in CONFUSION_ORDERS:
            raise UserInputError(f"callbacks.reports.order must be one of {list(CONFUSION_ORDERS)}, got {order!r}.")
        self.order = order
        self.history_file = Path(history_file) if history_file else None
        self.history: History = {name: {} for name in HISTORY_KEYS}
        self.reports_logged = 0  # TensorBoard reports written in this process
        self._hook: RemovableHandle | None = None
        self._captured: torch.Tensor | None = None
        self._pending: tuple[int, int, torch.Tensor, torch.Tensor, list[Mistake]] | None = None  # unreported
        self._reset_epoch()

    # -- state (the history survives resuming from a checkpoint) --
    @property
    def state_key(self) -> str:
        return "TrainingDiagnostics"  # also for subclasses, so their checkpoints resume into this class

    @property
    def _legacy_state_key(self) -> str:  # type: ignore[override]
        # Lightning's fallback key when a checkpoint lacks state_key (the class name): checkpoints written under the
        # class's former name TrainingReports resume with their history. Removed in 0.2.0.
        return "TrainingReports"

    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: dict(series) for name, series in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, series in state_dict.get("history", {}).items():
            self.history[name] = {int(epoch): float(value) for epoch, value in series.items()}

    # -- history --
    def _record(self, trainer: L.Trainer, names: tuple[str, ...]) -> None:
        metrics = trainer.callback_metrics
        for name in names:
            key = next((key for key in HISTORY_KEYS[name] if key in metrics), None)
            if key is not None:
                self.history[name][trainer.current_epoch] = float(metrics[key])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, ("train/loss", "train/acc"))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, ("val/loss", "val/acc"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_history(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_pending(trainer, pl_module)  # before the loggers are closed

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Training stopped by an exception (NaN guard, Ctrl-C, SIGTERM): the last report and the history still."""
        self._remove_hook()
        self._log_pending(trainer, pl_module)
        self._write_history(trainer, pl_module)

    def _write_history(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.history_file is None or not trainer.is_global_zero or not any(self.history.values()):
            return
        model_name = (pl_module.hparams.get("cfg") or {}).get("model", {}).get("name", "")
        figure = training_history_figure(self.history, title=f"{model_name} training history".strip())
        self.history_file.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.history_file)
        log.info("Training curves: %s", self.history_file)

    # -- TensorBoard reports --
    @staticmethod
    def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
        return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wants_reports = self.every_n_epochs > 0 or self.on_last_epoch
        if wants_reports and self._tensorboard(trainer) is None and trainer.is_global_zero:
            log.info(
                "Reports callback: no TensorBoard logger (use logger=tensorboard), so no confusion matrix or "
                "misclassified-image reports; training_history.png is still written."
            )

    def is_report_epoch(self, trainer: L.Trainer) -> bool:
        """Whether the current validation run gets a periodic report (never for the sanity check)."""
        if trainer.sanity_checking or self._tensorboard(trainer) is None:
            return False
        return bool(self.every_n_epochs) and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _collects(self, trainer: L.Trainer) -> bool:
        """Whether the current validation run is collected: a report epoch, or any epoch that may be the last."""
        return self.is_report_epoch(trainer) or (
            self.on_last_epoch and not trainer.sanity_checking and self._tensorboard(trainer) is not None
        )

    def _reset_epoch(self) -> None:
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._mistakes: list[Mistake] = []

    def _capture(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            self._captured = output.detach()

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._captured = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset_epoch()
        self._remove_hook()
        if self._collects(trainer):
            self._hook = pl_module.register_forward_hook(self._capture)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._hook is None or dataloader_idx != 0:
            return
        images, targets = batch[0], batch[1]
        logits, self._captured = self._captured, None
        if logits is None or logits.shape[0] != targets.shape[0]:  # validation_step did not call forward
            with torch.no_grad():
                logits = pl_module(images).detach()
            self._captured = None
        self.add_batch(images, targets, logits)

    def add_batch(self, images: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor) -> None:
        """Keep the batch's logits and targets, and its most confident mistakes (at most ``max_images`` in all)."""
        logits, targets = logits.float().cpu(), targets.cpu()
        self._logits.append(logits)
        self._targets.append(targets)
        if not self.max_images:
            return
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        wrong = (predicted != targets).nonzero().flatten().tolist()
        # Only this batch's best candidates can enter the kept set: convert just those to uint8.
        wrong = sorted(wrong, key=lambda i: -float(confidence[i]))[: self.max_images]
        for i in wrong:
            image = (images[i].detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
            self._mistakes.append(Mistake(image, int(targets[i]), int(predicted[i]), float(confidence[i])))
        self._mistakes.sort(key=lambda mistake: -mistake.confidence)
        del self._mistakes[self.max_images :]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is None:
            return
        self._remove_hook()
        if not self._logits:
            return
        logits, targets = torch.cat(self._logits), torch.cat(self._targets)
        if trainer.world_size > 1:  # each validation image is on exactly one rank
            logits, targets = _gather_shares(pl_module, logits), _gather_shares(pl_module, targets)
        if trainer.is_global_zero:
            pending = (trainer.current_epoch + 1, trainer.global_step, logits, targets, self._mistakes)
            self._pending = None if self.is_report_epoch(trainer) else pending
            if self._pending is None:
                self.log_report(trainer, pl_module, *pending)
        self._reset_epoch()

    def _log_pending(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report the last validated epoch if it was not reported yet (``on_last_epoch``)."""
        pending, self._pending = self._pending, None
        if pending is not None and self.on_last_epoch and trainer.is_global_zero:
            self.log_report(trainer, pl_module, *pending)

    def log_report(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        epoch: int,
        step: int,
        logits: torch.Tensor,
        targets: torch.Tensor,
        mistakes: list[Mistake],
    ) -> None:
        """Write the confusion matrix, the confused-pairs table and the mistakes grid of the validation after
        ``epoch`` (1-based) to TensorBoard at global ``step``."""
        tensorboard = self._tensorboard(trainer)
        assert tensorboard is not None  # _collects checked it
        class_names = _class_names(trainer, pl_module, logits.shape[1])
        report = split_metrics(logits, targets, class_names)
        experiment = tensorboard.experiment
        sorting = ", lowest recall first" if self.order == "recall" else ""
        title = (
            f"Validation after epoch {epoch}: top-1 {report.top1:.3f} on {report.num_images} images\n"
            f"rows normalised{sorting}"
        )
        experiment.add_figure("val/confusion_matrix", confusion_matrix_figure(report, title, self.order), step)
        if self.max_pairs:
            pairs = most_confused_pairs(report, self.max_pairs)
            heading = f"**Most confused classes after epoch {epoch}** (validation, {report.num_images} images)\n\n"
            experiment.add_text("val/most_confused", heading + confused_pairs_markdown(pairs), step)
        if mistakes:
            errors = report.num_images - int(report.confusion.trace())
            title = f"Most confident mistakes after epoch {epoch} ({len(mistakes)} of {errors})"
            experiment.add_figure("val/misclassified", misclassified_figure(mistakes, class_names, title), step)
        experiment.flush()
        self.reports_logged += 1

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove_hook()
        self._reset_epoch()


def _gather_shares(pl_module: L.LightningModule, tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (N_r, ...) concatenated in rank order (on CPU), for shares of different lengths
    (the validation loader does not pad them to one length)."""
    local = tensor.to(pl_module.device)
    counts = pl_module.all_gather(torch.tensor(local.shape[0], device=pl_module.device)).flatten().tolist()
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = pl_module.all_gather(padded)  # (world size, max count, ...)
    return torch.cat([gathered[rank, :count] for rank, count in enumerate(counts)]).cpu()


def _class_names(trainer: L.Trainer, pl_module: L.LightningModule, num_classes: int) -> list[str]:
    """Class names from the module's hparams, else the data module, else the label numbers."""
    names = pl_module.hparams.get("class_names") or getattr(trainer.datamodule, "class_names", None)
    return list(names) if names and len(names) == num_classes else [str(i) for i in range(num_classes)]
