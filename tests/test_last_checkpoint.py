"""mobilevit/callbacks/last_checkpoint.py: ``checkpoints/last.ckpt`` holds every finished epoch."""

from __future__ import annotations

from pathlib import Path

from conftest import FAST_TRAIN, TINY_SYNTHETIC
from recorders import RecordLastCheckpointEpoch, target

from train import train

COMMON = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


def test_last_checkpoint_is_written_after_every_epoch_when_validation_is_less_frequent(make_cfg) -> None:
    """check_val_every_n_epoch=3: last.ckpt still holds every finished epoch (a crash loses at most one)."""
    cfg = make_cfg([*COMMON, "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=3"])
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    cfg = make_cfg([*COMMON, "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=3",
                    f"+callbacks.record._target_={target(RecordLastCheckpointEpoch)}", f"+callbacks.record.path={last}"])  # fmt: skip
    _, objects = train(cfg)
    (recorder,) = [cb for cb in objects["trainer"].callbacks if isinstance(cb, RecordLastCheckpointEpoch)]
    assert recorder.epochs == [None, 0, 1, 2]
