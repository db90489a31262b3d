"""mobilevit/run_summary.py: the summary.json of a run (its latency timed in the run's precision, the overrides that
can be shared); test_report.py checks the summary that train.py writes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mobilevit import inference, run_summary
from mobilevit.models import create_model


@pytest.mark.parametrize(("precision", "timed_in"), [("bf16-mixed", "bf16-mixed"), ("32-true", "32-true"), ("64-true", "32-true")])
def test_summary_latency_is_timed_in_the_runs_precision(
    precision: str, timed_in: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = []
    monkeypatch.setattr(inference, "autocast_dtype", lambda p, device_type: asked.append(p))
    run_cfg = {"data": {"image_size": 32}, "model": {"name": "mobilevit_xxs"}, "trainer": {"precision": precision}}
    net = create_model("mobilevit_xxs", num_classes=3)
    path = run_summary.write_run_summary(tmp_path, run_cfg, {}, net, 1, 1.0, torch.device("cpu"), None)
    summary = json.loads(path.read_text())
    assert asked == [timed_in] and summary["latency_precision"] == timed_in and summary["precision"] == precision


def test_summaries_keep_the_recipe_overrides_but_no_machine_paths() -> None:
    from mobilevit.run_summary import shareable_overrides

    overrides = ["experiment=flowers102_cpu", "data.root=/home/me/flowers", "paths.log_dir=logs2",
                 "+hydra.run.dir=x", "ckpt_path='~/runs/last.ckpt'", "trainer.max_time=00:00:10:00", "seed=1"]  # fmt: skip
    assert shareable_overrides(overrides) == ["experiment=flowers102_cpu", "trainer.max_time=00:00:10:00", "seed=1"]
