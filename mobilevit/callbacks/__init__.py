"""Lightning callbacks and the checkpoint plugin of this project."""

from mobilevit.callbacks.best_checkpoint import BestCheckpoint
from mobilevit.callbacks.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from mobilevit.callbacks.diagnostics import TrainingDiagnostics
from mobilevit.callbacks.duration_estimate import DurationEstimate
from mobilevit.callbacks.ema import EMAWeightAveraging
from mobilevit.callbacks.last_checkpoint import LastCheckpoint
from mobilevit.callbacks.model_summary import NetworkSummary
from mobilevit.callbacks.nan_guard import NonFiniteLossError, NonFiniteLossGuard
from mobilevit.callbacks.optuna_pruning import OptunaPruning
from mobilevit.callbacks.qat import QuantizationAwareTraining
from mobilevit.callbacks.resolution import ResolutionScheduler
from mobilevit.callbacks.rng_state import RNGStateCheckpoint
from mobilevit.callbacks.time_to_accuracy import TimeToAccuracy

__all__ = [
    "AtomicCheckpointIO",
    "BestCheckpoint",
    "DurationEstimate",
    "EMAWeightAveraging",
    "LastCheckpoint",
    "NetworkSummary",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "OptunaPruning",
    "QuantizationAwareTraining",
    "ResolutionScheduler",
    "RNGStateCheckpoint",
    "TimeToAccuracy",
    "TrainingDiagnostics",
    "atomic_torch_save",
]
