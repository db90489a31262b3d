"""mobilevit/callbacks/best_checkpoint.py: the best checkpoint of the whole run, also when ``ckpt_path=last``
resumes into a new run directory."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from helpers import read_checkpoint
from recorders import ScriptedValAccuracy, StopAfterEpoch, target

from train import train


def test_resume_into_a_new_run_keeps_the_whole_runs_best(make_cfg) -> None:
    """Val accuracy 0.5, 0.75, 0.25 over 3 epochs, interrupted after epoch 1 (the best) and resumed into a new
    run directory: the resumed run tests the epoch-1 checkpoint and ends exactly as the uninterrupted run."""
    import json

    schedule = "{0: 0.5, 1: 0.75, 2: 0.25}"
    run = [
        *TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=true", "trainer.max_epochs=3",
        "trainer.deterministic=true", "test_weights=best",
        f"+callbacks.script._target_={target(ScriptedValAccuracy)}", f"+callbacks.script.schedule={schedule}",
    ]  # fmt: skip
    metrics, uninterrupted = train(make_cfg(run, run_name="uninterrupted"))
    first_cfg = make_cfg([*run, f"+callbacks.stop._target_={target(StopAfterEpoch)}", "+callbacks.stop.epoch=1"],
                         run_name="interrupted")  # fmt: skip
    train(first_cfg)
    resumed_cfg = make_cfg([*run, "ckpt_path=last"], run_name="resumed")
    resumed_metrics, resumed = train(resumed_cfg)

    assert metrics["val/acc_best"] == resumed_metrics["val/acc_best"] == 0.75  # not 0.25 (the best after the resume)
    assert resumed_metrics["val/acc"] == 0.25
    for objects in (uninterrupted, resumed):
        assert Path(objects["best_ckpt"]).name == "epoch_001.ckpt"
        assert Path(objects["best_ckpt"]).parent == Path(objects["cfg"].paths.output_dir) / "checkpoints"
        assert float(objects["trainer"].checkpoint_callback.best_model_score) == 0.75
    assert Path(first_cfg.paths.output_dir, "checkpoints", "epoch_001.ckpt").is_file()  # the old run keeps its file
    best = [read_checkpoint(objects["best_ckpt"])["state_dict"] for objects in (uninterrupted, resumed)]
    assert all(torch.equal(best[0][name], best[1][name]) for name in best[0])  # the same weights were tested
    assert {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))} == {
        k: v for k, v in resumed_metrics.items() if k.startswith(("test/", "val/"))
    }
    histories = [  # what training_history.png plots, as each run's final last.ckpt holds it
        next(v for k, v in read_checkpoint(Path(objects["cfg"].paths.output_dir, "checkpoints", "last.ckpt"))["callbacks"].items()
             if k.startswith("TrainingDiagnostics"))["history"]
        for objects in (uninterrupted, resumed)
    ]  # fmt: skip
    assert histories[0] == histories[1] and sorted(histories[1]["val/acc"]) == [0, 1, 2]  # all epochs
    assert Path(resumed_cfg.paths.output_dir, "training_history.png").is_file()
    summaries = [
        json.loads(Path(objects["cfg"].paths.output_dir, "summary.json").read_text()) for objects in (uninterrupted, resumed)
    ]
    assert summaries[0]["metrics"] == summaries[1]["metrics"] and summaries[0]["epochs"] == summaries[1]["epochs"] == 3
