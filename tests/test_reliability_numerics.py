"""Reliability, numerical faults: gradient clipping (trainer.gradient_clip_val / gradient_clip_algorithm) takes
effect. A non-finite loss is tested in test_nan_guard.py."""

from __future__ import annotations

from conftest import FAST_TRAIN, TINY_SYNTHETIC
from recorders import RecordGradients, target

from train import train

COMMON = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


def _gradients(make_cfg, *overrides: str) -> RecordGradients:
    cfg = make_cfg(
        [*COMMON, "+trainer.fast_dev_run=2", f"+callbacks.grads._target_={target(RecordGradients)}", *overrides]
    )
    _, objects = train(cfg)
    (recorder,) = [c for c in objects["trainer"].callbacks if isinstance(c, RecordGradients)]
    assert len(recorder.norms) == 2
    return recorder


def test_gradient_clipping_takes_effect(make_cfg) -> None:
    """Without clipping the gradient norm exceeds 0.05; with trainer.gradient_clip_val=0.05 (norm) it never does,
    and with gradient_clip_algorithm=value no element exceeds 1e-4."""
    plain = _gradients(make_cfg)
    assert min(plain.norms) > 0.05 and max(plain.max_abs) > 1e-4
    by_norm = _gradients(make_cfg, "trainer.gradient_clip_val=0.05")
    assert max(by_norm.norms) <= 0.05 * (1 + 1e-4)
    by_value = _gradients(make_cfg, "trainer.gradient_clip_val=1e-4", "trainer.gradient_clip_algorithm=value")
    assert max(by_value.max_abs) <= 1e-4 * (1 + 1e-6)
    print(f"grad norm unclipped {plain.norms}, clipped to 0.05: {by_norm.norms}")
