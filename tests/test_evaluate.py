"""train.py -> evaluate.py end to end: the model is rebuilt from the checkpoint and the result files are checked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from PIL import Image

from evaluate import evaluate
from mobilevit.errors import UserInputError
from train import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_result_files(out: Path, result: dict, split: str, ckpt_path: str) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result
    assert {"top1", "top5", "macro_f1", "loss", "num_images", "split", "ckpt_path"} <= metrics.keys()
    assert metrics["split"] == split and metrics["num_images"] == 12  # 4 images x 3 classes
    assert Path(metrics["ckpt_path"]) == Path(ckpt_path).resolve()
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    assert metrics["loss"] > 0.0

    with (out / "per_class.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3
    assert [row["class_name"] for row in rows] == sorted(["circle", "square", "triangle"])
    assert sum(int(row["support"]) for row in rows) == 12
    for row in rows:
        assert all(0.0 <= float(row[key]) <= 1.0 for key in ("precision", "recall", "f1"))

    png = (out / "confusion_matrix.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    with Image.open(out / "confusion_matrix.png") as image:
        assert image.format == "PNG" and min(image.size) >= 300


def test_train_then_evaluate_test_and_val(make_cfg) -> None:
    train_cfg = make_cfg(
        [
            *TINY_SYNTHETIC,
            *FAST_TRAIN,
            "model=mobilevit_xxs",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "logger=none",
        ],
        run_name="trained",
    )
    train_metrics, objects = train(train_cfg)
    ckpt_path = objects["best_ckpt"]

    for split in ("test", "val"):
        cfg = make_cfg(
            [f"ckpt_path={ckpt_path}", f"data.split={split}", "trainer=cpu", "trainer.precision=32-true"],
            config_name="eval",
            run_name=split,
        )
        result = evaluate(cfg)
        _check_result_files(Path(cfg.paths.output_dir), result, split, ckpt_path)
        # The same weights on the same split as train.py's test stage / last validation (1 epoch: best == last);
        # evaluate.py folds BatchNorm, which must not change float32 results.
        assert result["top1"] == pytest.approx(train_metrics[f"{split}/acc"], abs=1e-6)
        assert result["top5"] == pytest.approx(train_metrics[f"{split}/acc_top5"], abs=1e-6)
        assert result["macro_f1"] == pytest.approx(train_metrics[f"{split}/f1"], abs=1e-6)
        assert result["loss"] == pytest.approx(train_metrics[f"{split}/loss"], rel=1e-4)

    # `ckpt_path=<run dir>` picks the run's last.ckpt.
    cfg = make_cfg([f"ckpt_path={train_cfg.paths.output_dir}", "trainer=cpu"], config_name="eval", run_name="by_dir")
    assert evaluate(cfg)["ckpt_path"].endswith("last.ckpt")


def test_evaluate_needs_ckpt_path(make_cfg) -> None:
    with pytest.raises(UserInputError, match="ckpt_path"):
        evaluate(make_cfg(config_name="eval"))
