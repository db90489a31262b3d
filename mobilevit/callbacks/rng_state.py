"""Random number generator states in checkpoints, so a resumed run draws the same numbers as an uninterrupted one."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RNGStateCheckpoint(Callback):
    """Save the global RNG states of Python, NumPy, torch and CUDA in every checkpoint and restore them on resume.

    Lightning checkpoints hold no RNG state, so after ``ckpt_path=...`` the shuffling, augmentation and dropout of
    the following epochs would differ from an uninterrupted run. With this callback, resuming from a checkpoint
    written at the end of an epoch reproduces the uninterrupted run bit for bit (``trainer.deterministic=true``, same
    hardware). Only plain tensors and tuples are stored, so checkpoints still load with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        random.setstate(_as_tuples(state_dict["python"]))
        name, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
        torch.set_rng_state(state_dict["torch"])
        cuda_states = state_dict.get("cuda") or []
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _as_tuples(value: Any) -> Any:
    """Python's RNG state with its nested tuples restored (some serialisers turn tuples into lists)."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value
