"""Time-to-accuracy record (mobilevit/callbacks/time_to_accuracy.py): in summary.json, kept across a resume, and
plotted by python -m mobilevit.report --time-plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

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
    # The first session is made to have lasted 1000 s: the resumed record must count from there.
    checkpoint = torch.load(last, weights_only=True)
    (key,) = [key for key in checkpoint["callbacks"] if "TimeToAccuracy" in key]
    checkpoint["callbacks"][key]["seconds"] = 1000.0
    torch.save(checkpoint, last)
    first_points = checkpoint["callbacks"][key]["points"]
    resumed = make_cfg([*RUN, "trainer.max_epochs=2", f"ckpt_path={last}"], run_name="resumed")
    started = time.perf_counter()
    train(resumed)
    resumed_points = json.loads((Path(resumed.paths.output_dir) / "summary.json").read_text())["time_to_accuracy"]
    assert [(p["epoch"], p["images"]) for p in resumed_points] == [(1, 24), (2, 48)]  # the record continues
    assert resumed_points[0] == first_points[0]
    assert 1000.0 < resumed_points[1]["seconds"] < 1000.0 + (time.perf_counter() - started)

    plot = tmp_path / "time.png"
    figures = []
    savefig = Figure.savefig
    with pytest.MonkeyPatch.context() as patch:  # keep the figures that are saved, to read what they show
        patch.setattr(Figure, "savefig", lambda self, *args, **kwargs: (figures.append(self), savefig(self, *args, **kwargs))[1])
        assert report.main([str(tmp_path / "logs"), "--plot", str(tmp_path / "r.png"), "--time-plot", str(plot)]) == 0
    assert plot.stat().st_size > 10_000
    (axis,) = [f.axes[0] for f in figures if f.axes and f.axes[0].get_xlabel() == "training wall-clock time (min)"]
    drawn = sorted((tuple(line.get_xdata()), tuple(line.get_ydata())) for line in axis.lines)
    runs = [json.loads(path.read_text())["time_to_accuracy"] for path in (tmp_path / "logs").rglob("summary.json")]
    expected = sorted(
        (tuple(p["seconds"] / 60 for p in points), tuple(100 * p["val/acc"] for p in points)) for points in runs
    )
    assert len(drawn) == len(expected) == 3  # one line per run: its minutes and accuracies
    for (x, y), (minutes, accuracy) in zip(drawn, expected, strict=True):
        assert x == pytest.approx(minutes) and y == pytest.approx(accuracy)
