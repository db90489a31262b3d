"""Lightning callbacks and the checkpoint plugin of this project."""

from mobilevit.callbacks.best_checkpoint import BestCheckpoint
from mobilevit.callbacks.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from mobilevit.callbacks.last_checkpoint import LastCheckpoint
from mobilevit.callbacks.nan_guard import NonFiniteLossError, NonFiniteLossGuard
from mobilevit.callbacks.reports import TrainingReports
from mobilevit.callbacks.rng_state import RNGStateCheckpoint

__all__ = [
    "AtomicCheckpointIO",
    "BestCheckpoint",
    "LastCheckpoint",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "RNGStateCheckpoint",
    "TrainingReports",
    "atomic_torch_save",
]
