"""The best checkpoint of the whole run, also when ``ckpt_path=last`` resumes into a new run directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn


class BestCheckpoint(ModelCheckpoint):
    """Lightning's :class:`ModelCheckpoint` that keeps the best checkpoints across a resume into another folder.

    Lightning reloads ``best_model_score`` only when the checkpoint's ``dirpath`` equals this run's; train.py resumes
    into a new run directory, so the first validation after a resume would become "best" whatever its score. Here
    the previous run's best checkpoint files are copied into this run's ``dirpath`` (a run directory stays
    self-contained, and the previous run's files are never deleted by ``save_top_k``) together with their scores,
    before the first training step: the run then ends with the same best checkpoint as an uninterrupted one.
    Arguments: :class:`ModelCheckpoint`'s.
    """

    _carried: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key, so checkpoints written with Lightning's class resume into this one and vice versa.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        previous_dir = state_dict.get("dirpath", self.dirpath)
        if previous_dir == self.dirpath or not state_dict.get("best_k_models"):
            super().load_state_dict(state_dict)
        elif state_dict.get("monitor") != self.monitor:
            rank_zero_warn(
                f"Resumed checkpoint tracked {state_dict.get('monitor')!r}, this run {self.monitor!r}: the best "
                "checkpoint starts anew."
            )
        else:
            self._carried = state_dict  # applied in on_train_start, once this run's folder is known to be used

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        carried, self._carried = self._carried, None
        if carried is None or self.dirpath is None:
            return
        best_k: dict[str, Any] = {}
        for old_path, score in carried["best_k_models"].items():
            old, new = Path(old_path), Path(self.dirpath) / Path(old_path).name
            if not old.is_file():
                rank_zero_warn(f"Best checkpoint {old} of the resumed run is gone: its score is not carried over.")
                continue
            if trainer.is_global_zero and not new.exists():
                new.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(old, new)
            best_k[str(new)] = score
        trainer.strategy.barrier("best_checkpoint_carry")
        if not best_k:
            return
        best, worst = (min, max) if self.mode == "min" else (max, min)
        self.best_k_models = best_k
        self.best_model_path = best(best_k, key=best_k.get)
        self.best_model_score = best_k[self.best_model_path]
        self.kth_best_model_path = worst(best_k, key=best_k.get)
        self.kth_value = best_k[self.kth_best_model_path]
