"""Recording and scripting callbacks of the tests. Most are added to a run by class path
(``+callbacks.<key>._target_=...``), also in train.py subprocesses and DDP ranks (run with ``PYTHONPATH=tests``): they
live here, not in the test files, so that their path stays ``recorders.<Name>`` whatever a test file is called or
wherever it moves, and a subprocess imports this small module rather than a test file. Write a path as
``target(RecordLR)``. The others (StateRecorder, ValidationStates) are added in-process by several test files."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from helpers import read_checkpoint
from lightning.pytorch.callbacks import Callback, Timer

from mobilevit.callbacks import TrainingDiagnostics

PAGE = os.sysconf("SC_PAGE_SIZE")


def target(callback: type) -> str:
    """The class path Hydra instantiates ``callback`` from (``recorders.<Name>``)."""
    return f"{callback.__module__}.{callback.__qualname__}"


# ----------------------------------------------------------------------------- training steps and learning rates


class RecordLR(Callback):
    """The learning rate of every optimizer step this process ran: {global step: lr of the first param group}."""

    def __init__(self) -> None:
        self.lrs: dict[int, float] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


class StopAfterFirstEpoch(Callback):
    """Ends fit after epoch 0, its checkpoint written: an interrupted run, configured for more epochs."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            trainer.should_stop = True


class StopAfterEpoch(Callback):
    """Ends fit after epoch ``epoch`` (0-based), after its checkpoint was written: an interruption at an epoch
    boundary, with the run configured for more epochs (so the learning-rate schedule is the full run's)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


class CountSteps(Callback):
    """Counts the optimizer steps this process ran."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.steps.append(trainer.global_step)


class PauseAtBatchStart(Callback):
    """Writes the global step to ``progress_file`` at every training batch start, then sleeps: a slow step that a
    test can kill the process in. By then every checkpoint of the previous step is complete."""

    def __init__(self, progress_file: str, seconds: float = 1.0) -> None:
        self.progress_file = Path(progress_file)
        self.seconds = seconds

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.progress_file.write_text(str(trainer.global_step))
        time.sleep(self.seconds)


class AtStep(Callback):
    """At the start of global step ``step``: ``action`` = sleep (a slow step), infinite_loss (that step's loss becomes +inf),
    ctrl_c (KeyboardInterrupt, as Ctrl-C raises it) or sigterm (a real SIGTERM sent to this process)."""

    def __init__(self, step: int, action: str) -> None:
        self.step, self.action = step, action

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        if self.action == "sleep":
            time.sleep(2.5)
        elif self.action == "infinite_loss":
            pl_module.training_loss = lambda logits, targets: (logits.float().abs().sum() + 1) * float("inf")
        elif self.action == "ctrl_c":
            raise KeyboardInterrupt
        elif self.action == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)


class InjectNaN(Callback):
    """Turns the images of the batch at global step ``at_step`` into NaN, so that step's loss is NaN."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.at_step:
            batch[0].fill_(float("nan"))


class RecordGradients(Callback):
    """Records the global L2 norm and the largest absolute value of the gradients that every optimizer step used
    (after Lightning clipped them; they are zeroed only at the start of the next step)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.max_abs: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        self.max_abs.append(max(float(g.abs().max()) for g in grads))


# ----------------------------------------------------------------------------- validation scripted by the test


class ScriptedValAccuracy(Callback):
    """Makes validation accuracy follow ``schedule[epoch]`` exactly: the module's logits of every validation batch
    are replaced by ones that are right for that fraction of its images (training and test are untouched)."""

    def __init__(self, schedule: dict[int, float]) -> None:
        self.schedule = {int(epoch): float(value) for epoch, value in schedule.items()}
        self._targets: torch.Tensor | None = None
        self._hook = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._hook = pl_module.register_forward_hook(self._scripted(self.schedule[trainer.current_epoch]))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._targets = batch[1]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _scripted(self, accuracy: float):
        def hook(module, args, output: torch.Tensor) -> torch.Tensor:
            targets, rows = self._targets, torch.arange(len(self._targets))
            predicted = torch.where(rows < round(accuracy * len(rows)), targets, (targets + 1) % output.shape[1])
            logits = torch.zeros_like(output)
            logits[rows, predicted] = 10.0
            return logits

        return hook


class ScriptedValidation(Callback):
    """Validation predictions scripted from the targets: all right after the first epoch, all wrong after the others
    (val/acc 1.0, then 0.0), so a trial's best value and its final value differ."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        shift = 0 if trainer.current_epoch == 0 and not trainer.sanity_checking else 1
        wanted = (batch[1] + shift) % pl_module.num_classes
        self.hook = pl_module.register_forward_hook(lambda module, args, out: 10.0 * F.one_hot(wanted, out.shape[1]))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.hook.remove()


class Score(L.Callback):
    """Logs ``val/score`` = ``value`` at every validation: a metric the test controls, for pruning tests. With
    ``record``, each rank writes the epochs it trained to ``<record>/rank<r>``."""

    def __init__(self, value: float, record: str | None = None) -> None:
        self.value = value
        self.record = record

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("val/score", float(self.value), sync_dist=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.record:
            Path(self.record).mkdir(parents=True, exist_ok=True)
            (Path(self.record) / f"rank{trainer.global_rank}").write_text(str(trainer.current_epoch))


class SpyReports(TrainingDiagnostics):
    """TrainingDiagnostics that counts the validation batches it collects, per 0-based epoch."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.collected: dict[int, int] = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        before = len(self._logits)
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if len(self._logits) > before:
            self.collected[trainer.current_epoch] = self.collected.get(trainer.current_epoch, 0) + 1


# ----------------------------------------------------------------------------- what a run did (also per DDP rank)


class SnapshotFinalWeights(L.Callback):
    """Keeps a copy of the network's weights when fitting ends (before any test)."""

    weights: dict[str, torch.Tensor] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        type(self).weights = {name: value.detach().clone() for name, value in pl_module.net.state_dict().items()}


class RecordLastCheckpointEpoch(Callback):
    """At the start of every epoch, the completed epochs that checkpoints/last.ckpt holds (None: no file yet)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.epochs: list[int | None] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(read_checkpoint(self.path)["epoch"] if self.path.is_file() else None)


class RecordSizes(L.Callback):
    """Writes each training step's [epoch, image size, batch length] to ``<folder>/rank<r>.json``; with
    ``stop_after_epoch``, stops training at the end of that epoch (as an interruption would)."""

    def __init__(self, folder: str, stop_after_epoch: int | None = None) -> None:
        self.folder = Path(folder)
        self.stop_after_epoch = stop_after_epoch
        self.steps: list[list[int]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.steps.append([trainer.current_epoch, batch[0].shape[-1], batch[0].shape[0]])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.stop_after_epoch:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.steps))


class RecordSizesSkewedClock(RecordSizes):
    """RecordSizes, with rank 1's training clock 40 minutes ahead of rank 0's (the ranks' clocks never agree), from
    ``setup`` on: before the first epoch's loader picks its size."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank == 1:
            timer = next(callback for callback in trainer.callbacks if isinstance(callback, Timer))
            clock = timer.time_elapsed
            timer.time_elapsed = lambda stage="train": clock(stage) + 2400.0


class RecordBatches(Callback):
    """Writes every training step's image size, batch length and sample indices to ``<folder>/rank<r>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.steps: list[dict] = []
        self.plan: list[list[tuple[int, int]]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.plan = list(trainer.train_dataloader.batch_sampler)  # this epoch's batches (deterministic)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        images, _ = batch
        self.steps.append(
            {
                "epoch": trainer.current_epoch,
                "size": images.shape[-1],
                "batch": images.shape[0],
                "indices": [index for index, _ in self.plan[batch_idx]],
                "planned_size": self.plan[batch_idx][0][1],
                "sampler": type(trainer.train_dataloader.batch_sampler).__name__,
            }
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"world_size": trainer.world_size, "steps": self.steps}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class RecordRank(Callback):
    """Saves ``<folder>/rank<r>.pt``: world size, validation batches, this rank's training batches, the weights at the
    start of training and after every optimizer step (parameters only, flattened), and the step losses."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.val_batches = 0
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.weights: list[torch.Tensor] = []
        self.losses: list[float] = []

    @staticmethod
    def _flat(pl_module: L.LightningModule) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in pl_module.net.parameters()])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights.append(self._flat(pl_module))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.batches.append((batch[0].detach().clone(), batch[1].detach().clone()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append(self._flat(pl_module))
        self.losses.append(float(outputs["loss"]))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.val_batches += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "world_size": trainer.world_size, "global_step": trainer.global_step, "val_batches": self.val_batches,
            "batches": self.batches, "weights": self.weights, "losses": self.losses,
        }  # fmt: skip
        torch.save(record, self.folder / f"rank{trainer.global_rank}.pt")


class RecordEnd(Callback):
    """Saves ``<folder>/rank<r>.json``: the global step, epoch and learning rate when training ends."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        lr = trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0]
        record = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, "lr": lr}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


# ----------------------------------------------------------------------------- weights during training


def float_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items() if value.is_floating_point()}


class StateRecorder(L.Callback):
    """Keeps a copy of the module's floating-point state when fit starts and after every optimizer step."""

    def __init__(self) -> None:
        self.starts: list[dict[str, torch.Tensor]] = []
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts.append(float_state(pl_module))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.states.append(float_state(pl_module))


class ValidationStates(L.Callback):
    """Keeps the module's floating-point state at the start of every validation after the sanity check (after the
    EMA callback swapped in the weights it validates)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.states.append(float_state(pl_module))


# ----------------------------------------------------------------------------- memory of a process and its workers


def child_pids(pid: int | None = None) -> set[int]:
    """Live child processes of ``pid`` (default: this process), from /proc."""
    pid = pid or os.getpid()
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found.update(int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except FileNotFoundError:
        return 0.0


class RecordMemory(Callback):
    """At the end of every training epoch: RSS of the main process and of its (dataloader worker) children."""

    def __init__(self) -> None:
        self.main_mb: list[float] = []
        self.workers_mb: list[float] = []
        self.worker_pids: list[set[int]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        children = child_pids()
        self.main_mb.append(rss_mb(os.getpid()))
        self.workers_mb.append(sum(rss_mb(pid) for pid in children))
        self.worker_pids.append(children)
