"""Time-to-accuracy record (mobilevit/callbacks/time_to_accuracy.py): in summary.json, kept across a resume, and
plotted by python -m mobilevit.report --time-plot."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import FAST_TRAIN, TINY_SYNTHETIC
from mobilevit import report
from train import train

RUN = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


def test_summary_records_accuracy_against_time_and_images(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg([*RUN, "trainer.max_epochs=2"])
    train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    points = summary["time_to_accuracy"]
    assert [point["epoch"] for point in points] == [1, 2]
    assert [point["images"] for point in points] == [24, 48]  # 3 classes x 8 training images per epoch
    assert 0 < points[0]["seconds"] < points[1]["seconds"] < summary["wall_time_s"]
    assert all(0.0 <= point["val/acc"] <= 1.0 for point in points)

    first = make_cfg([*RUN, "trainer.max_epochs=1"], run_name="first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = make_cfg([*RUN, "trainer.max_epochs=2", f"ckpt_path={last}"], run_name="resumed")
    train(resumed)
    resumed_points = json.loads((Path(resumed.paths.output_dir) / "summary.json").read_text())["time_to_accuracy"]
    assert [(p["epoch"], p["images"]) for p in resumed_points] == [(1, 24), (2, 48)]  # the record continues
    assert resumed_points[1]["seconds"] > resumed_points[0]["seconds"]

    plot = tmp_path / "time.png"
    assert report.main([str(tmp_path / "logs"), "--plot", str(tmp_path / "r.png"), "--time-plot", str(plot)]) == 0
    assert plot.stat().st_size > 10_000
