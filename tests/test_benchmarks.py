"""Smoke tests of the benchmark scripts: tiny settings, checks of the result structure only (no timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import data_pipeline, throughput


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_measure_train_step_in_process() -> None:
    spec = throughput.MeasureSpec(
        impl="ours", model="mobilevit_xxs", setting="bf16-mixed+channels_last", mode="train",
        img_size=32, batch_size=2, threads=1, repeats=2, warmup=0, num_classes=5,
    )
    record = throughput.measure(spec)
    assert record["unit"] == "img/s" and _positive(record["value"])
    assert record["batch_size"] == 2 and len(record["times_s"]) == 2
    assert all(_positive(t) for t in record["times_s"])
    assert record["peak_mem_mb"] >= 0


def test_throughput_main_isolated_runs(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    result = throughput.main([
        "--model", "mobilevit_xxs", "--img-size", "32", "--batch-size", "2", "--threads", "1",
        "--repeats", "1", "--warmup", "0", "--settings", "32-true", "--modes", "infer",
        "--fast-path", "--num-classes", "5", "--json", str(out), "--markdown", str(tmp_path / "throughput.md"),
    ])  # fmt: skip
    assert json.loads(out.read_text()) == result
    markdown = (tmp_path / "throughput.md").read_text().splitlines()
    assert markdown[0].startswith(result["machine"]["cpu_model"]) and result["machine"]["date"] in markdown[0]
    assert "| Setting | Metric | Ours | Ours BN-fused | timm | Ours/timm | Fused/timm |" in markdown
    infer_row = next(line for line in markdown if line.startswith("| 32-true | infer img/s"))
    assert f"{result['ratios']['32-true']['infer']:.2f}x" in infer_row
    assert result["benchmark"] == "throughput"
    for key in ("date", "cpu_model", "logical_cores", "torch", "timm"):
        assert result["machine"][key]
    by_impl = result["results"]["32-true"]
    assert set(by_impl) == {"ours", "timm", "ours_fused"}
    for impl in by_impl.values():
        record = impl["infer"]
        assert record["unit"] == "img/s" and _positive(record["value"]) and record["batch_size"] == 2
        assert _positive(record["peak_mem_mb"])  # a fresh process grows by at least the model's weights
    ratios = result["ratios"]["32-true"]
    for key in ("infer", "infer_peak_mem", "infer_fused", "infer_fused_peak_mem"):
        assert _positive(ratios[key])
    assert math.isclose(ratios["infer"], by_impl["ours"]["infer"]["value"] / by_impl["timm"]["infer"]["value"])


def test_throughput_rejects_unknown_model_and_setting() -> None:
    with pytest.raises(SystemExit, match="mobilevit_xxs"):
        throughput.main(["--model", "resnet_nope"])
    with pytest.raises(SystemExit, match=r"bf16-mixed\+channels_last"):
        throughput.main(["--model", "mobilevit_xxs", "--settings", "fp16"])


def test_data_pipeline_main(flowers_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    result = data_pipeline.main([
        "--root", str(flowers_root), "--img-size", "32", "--num-images", "4", "--repeats", "1", "--warmup", "0",
        "--workers", "1", "--batch-size", "2", "--num-batches", "2", "--loader-warmup-batches", "1",
        "--train-batch-size", "2", "--threads", "1", "--json", str(out),
    ])  # fmt: skip
    assert json.loads(out.read_text()) == result
    assert result["benchmark"] == "data_pipeline"
    assert result["config"]["presets"][0] == "basic"
    assert set(result["results"]) == set(data_pipeline.available_presets())
    assert result["training"]["model"] == "mobilevit_xxs" and _positive(result["training"]["img_s"])
    for preset, by_measure in result["results"].items():
        assert set(by_measure) == {"pil", "decode_jpeg", "loader_1w"}
        for key, record in by_measure.items():
            assert _positive(record["img_s"]) and _positive(record["per_worker_img_s"])
            assert math.isclose(
                result["ratios"][preset][key], record["per_worker_img_s"] / result["training"]["img_s"]
            )


def test_data_pipeline_missing_dataset_exits_cleanly(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="Flowers-102 not found"):
        data_pipeline.main(["--root", str(tmp_path)])


@pytest.mark.parametrize("preset", data_pipeline.available_presets())
def test_presets_instantiate_at_requested_size(preset: str) -> None:
    from PIL import Image

    transform = data_pipeline.load_preset(preset, 32)
    image = transform(Image.new("RGB", (40, 30), (200, 100, 50)))
    assert tuple(image.shape) == (3, 32, 32)


def test_model_choice_table_has_every_variant_with_measured_latency() -> None:
    from benchmarks import model_choice
    from mobilevit.models import list_models

    table = model_choice.model_choice_table([32], torch.device("cpu"))
    rows = table.strip().splitlines()[2:]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == list_models()
    assert all(float(row.split(" | ")[3].split()[0]) > 0 for row in rows)  # a real timing in every row
    assert "| mobilevit_xxs | 1.3 M | 69.0 % |" in table


def _evaluated(folder: Path, evaluated: Path, top1: float, **metrics: str) -> Path:
    """An evaluate.py output directory for ``evaluated`` (what its metrics.json holds)."""
    folder.mkdir(parents=True)
    record = {"top1": top1, "top5": 0.95, "num_images": 1000, "split": "test", "hflip_tta": True,
              "ckpt_path": str(evaluated), "model": "mobilevit_xxs", **metrics}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def test_shipped_accuracy_compares_each_artifact_with_its_checkpoint(tmp_path: Path, capsys) -> None:
    from benchmarks import shipped_accuracy

    checkpoint = tmp_path / "run_a" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    qat_checkpoint = tmp_path / "run_a_qat" / "checkpoints" / "last.ckpt"  # fine-tuned from run_a
    artifacts = {
        "fp32.onnx": (1000, None, checkpoint),
        "int8.onnx": (260, {"scheme": "int8", "method": "entropy", "calibration_images": 300}, checkpoint),
        "qat.onnx": (260, {"scheme": "int8", "method": "minmax", "calibration_images": 300,
                           "qat_from": str(checkpoint)}, qat_checkpoint),
        "qat.pte": (300, {"scheme": "int8", "method": "qat", "qat_from": str(checkpoint), "float_ops": ["residual"]},
                    qat_checkpoint),
    }  # fmt: skip
    for name, (size, quantization, source) in artifacts.items():
        (tmp_path / name).write_bytes(b"\0" * size)
        (tmp_path / f"{name}.json").write_text(json.dumps({"source": str(source), "quantization": quantization}))
    dirs = [
        _evaluated(tmp_path / "eval_ckpt", checkpoint, 0.80),
        _evaluated(tmp_path / "eval_fp32", tmp_path / "fp32.onnx", 0.80, artifact="onnx", weights="fp32"),
        _evaluated(tmp_path / "eval_int8", tmp_path / "int8.onnx", 0.79, artifact="onnx", weights="int8"),
        _evaluated(tmp_path / "eval_qat_onnx", tmp_path / "qat.onnx", 0.795, artifact="onnx", weights="int8"),
        _evaluated(tmp_path / "eval_qat_pte", tmp_path / "qat.pte", 0.81, artifact="executorch", weights="int8"),
    ]
    record_path, table_path = tmp_path / "shipped.json", tmp_path / "shipped.md"
    assert shipped_accuracy.main([*map(str, dirs), "--json", str(record_path), "--markdown", str(table_path)]) == 0
    table = table_path.read_text()
    assert table.startswith("`run_a/last.ckpt`: mobilevit_xxs, test split, 1000 images, flip TTA")
    assert "| PyTorch (checkpoint) | fp32 |  |  | 80.0 % | 95.0 % |  |" in table
    assert "| ONNX Runtime | fp32 |  | 0.00 MB | 80.0 % | 95.0 % | +0.0 pt |" in table
    int8_row = "| ONNX Runtime | int8 | entropy, 300 images | 0.00 MB (26.0 % of fp32) | 79.0 % | 95.0 % | -1.0 pt |"
    assert int8_row in table
    # Quantization-aware training's files are compared with the fp32 checkpoint it started from.
    assert "| ONNX Runtime | int8 | QAT (run_a_qat/last.ckpt) + minmax, 300 images | 0.00 MB (26.0 % of fp32) " in table
    qat_row = "| ExecuTorch/XNNPACK | int8 | QAT (run_a_qat/last.ckpt), float: residual | 0.00 MB | 81.0 % | 95.0 % |"
    assert qat_row in table
    assert "`run_a_qat" not in table  # no group of its own
    assert str(tmp_path) not in record_path.read_text()  # names, not machine paths
    assert shipped_accuracy.main(["--table", str(record_path)]) == 0
    assert capsys.readouterr().out.endswith(table)  # the table is regenerated from the record alone


def test_shipped_accuracy_update_replaces_rows_of_the_same_file_and_keeps_the_rest(tmp_path: Path) -> None:
    from benchmarks import shipped_accuracy

    checkpoints = {}
    for run in ("run_a", "run_b"):
        checkpoints[run] = tmp_path / run / "checkpoints" / "last.ckpt"
        checkpoints[run].parent.mkdir(parents=True)
        checkpoints[run].write_bytes(b"x")
    for name, run in (("a.pte", "run_a"), ("a_int8.pte", "run_a"), ("b.pte", "run_b")):
        (tmp_path / name).write_bytes(b"\0" * 100)
        (tmp_path / f"{name}.json").write_text(json.dumps({"source": str(checkpoints[run])}))
    record_path = tmp_path / "shipped.json"
    first = [
        _evaluated(tmp_path / "eval_a", checkpoints["run_a"], 0.80),
        _evaluated(tmp_path / "eval_a_pte", tmp_path / "a.pte", 0.70, artifact="executorch", weights="fp32"),
    ]
    assert shipped_accuracy.main([*map(str, first), "--json", str(record_path)]) == 0
    later = [  # a re-evaluated file, a new file of run_a, a new checkpoint
        _evaluated(tmp_path / "eval_a_pte2", tmp_path / "a.pte", 0.80, artifact="executorch", weights="fp32"),
        _evaluated(tmp_path / "eval_b", checkpoints["run_b"], 0.60),
        _evaluated(tmp_path / "eval_a_int8", tmp_path / "a_int8.pte", 0.79, artifact="executorch", weights="int8"),
    ]
    assert shipped_accuracy.main([*map(str, later), "--update", str(record_path)]) == 0
    rows = json.loads(record_path.read_text())["rows"]
    assert [(row["source"], row["file"], row["top1"]) for row in rows] == [
        ("run_a/last.ckpt", "last.ckpt", 0.80),
        ("run_a/last.ckpt", "a.pte", 0.80),
        ("run_a/last.ckpt", "a_int8.pte", 0.79),
        ("run_b/last.ckpt", "last.ckpt", 0.60),
    ]
    with pytest.raises(SystemExit) as exit_info:
        shipped_accuracy.main([str(later[0]), "--update", str(tmp_path / "none.json")])
    assert exit_info.value.code == 2


def test_shipped_accuracy_names_a_directory_without_results(tmp_path: Path, capsys) -> None:
    from benchmarks import shipped_accuracy

    with pytest.raises(SystemExit) as exit_info:
        shipped_accuracy.main([str(tmp_path)])
    assert exit_info.value.code == 2 and f"{tmp_path}: no metrics.json" in capsys.readouterr().err


def test_operator_profile_times_each_runtimes_operators(tmp_path: Path, capsys) -> None:
    """A v1 program lowered to XNNPACK profiles as XNNPACK operators only (nothing on portable kernels); the ONNX
    file as its node types; a missing artifact is one line and exit code 2."""
    from benchmarks import operator_profile
    from mobilevit.export.executorch import export_executorch
    from mobilevit.export.onnx import export_onnx
    from mobilevit.export.sidecar import write_sidecar
    from mobilevit.models import build_model

    net = build_model("mobilevit_xxs", num_classes=3).eval()
    files = [export_onnx(net, tmp_path / "m.onnx", (64, 64)), tmp_path / "m.pte"]
    export_executorch(net, files[1], (64, 64))
    sidecar = {"format": "test", "class_names": ["a", "b", "c"], "input": {"shape": [1, 3, 64, 64]}}
    for path in files:
        write_sidecar(path, {**sidecar, "preprocessing": {"image_size": 64}})
    record_path = tmp_path / "profile.json"
    assert operator_profile.main([*map(str, files), "--threads", "1", "--runs", "3", "--json", str(record_path)]) == 0
    onnx_record, pte_record = json.loads(record_path.read_text())["artifacts"]
    assert onnx_record["runtime"] == "onnx" and pte_record["runtime"] == "executorch"
    assert {"Conv", "MatMul", "Softmax"} <= set(onnx_record["operator_ms"])
    assert any(name.startswith("Convolution (NHWC, F32)") for name in pte_record["operator_ms"])
    assert not [name for name in pte_record["operator_ms"] if name.startswith("native_call_")]
    for record in (onnx_record, pte_record):  # a tiny operator can take under the timer's resolution
        assert all(math.isfinite(ms) and ms >= 0 for ms in record["operator_ms"].values())
        assert _positive(sum(record["operator_ms"].values()))
    assert "ms of operator time per call" in capsys.readouterr().out
    table = tmp_path / "profile.md"
    assert operator_profile.main(["--table", str(record_path), "--markdown", str(table)]) == 0
    assert "m.pte (executorch, median of 3 calls)" in table.read_text() and "| Conv |" in table.read_text()
    with pytest.raises(SystemExit) as exit_info:
        operator_profile.main([str(tmp_path / "missing.pte")])
    assert exit_info.value.code == 2 and "missing.pte does not exist" in capsys.readouterr().err
