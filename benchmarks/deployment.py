"""Deployment benchmark: batch-1 latency, batch-32 throughput and file size of every way this project ships a model.

Usage (from the repository root, on an otherwise idle machine)::

    python benchmarks/deployment.py --threads 2 --json docs/runs/deployment.json      # measure (see docs)
    python benchmarks/deployment.py --table docs/runs/deployment.json --markdown docs/deployment.md  # table only
    python benchmarks/deployment.py --quick --json /tmp/deployment.json               # smoke run (tests)

Runtimes, each on the CPU with ``--threads`` threads: PyTorch eager fp32 (ours: BatchNorm folded, channels-last;
timm's ``create_model``, as shipped), ONNX Runtime fp32 and int8 (static QDQ, per-channel), ExecuTorch with the
XNNPACK delegate fp32 and int8 (PT2E), LiteRT (its XNNPACK delegate) fp32 and int8 (the same PT2E program). Every variant is measured in fp32 on ExecuTorch; the full set of runtimes
(int8 included) for ``--int8-models``. Networks are randomly initialised with 1000 classes and int8 ranges are
calibrated on random images: speed and size do not depend on the weights' values (accuracy: docs/evaluation.md).
Latency is the median of ``--repeats`` batch-1 calls after ``--warmup``; throughput is images/s of the median
batch-``--batch-size`` call. A variant's runtimes are timed in ``--rounds`` interleaved rounds (the calls split
between them), so that a speed change of the machine during the run does not favour one runtime over another. The
run record (``--json``) holds every raw time and the machine; ``--table`` turns a record into the markdown table of
docs/deployment.md (never typed by hand).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    machine_caption, median, pin_threads, positive_int, print_machine, show_markdown, time_repeats, write_json,
)
from mobilevit.export.cli import DEFAULT_FLOAT_OPS, default_float_ops
from mobilevit.models import build_model, list_models
from mobilevit.models.fuse import fuse_batchnorm
from mobilevit.utils.machine import machine_info

INT8_MODELS = ("mobilevit_xxs", "mobilevit_xs", "mobilevitv2_050", "mobilevitv2_100")
RUNTIME_TITLES = {
    "eager": "PyTorch eager fp32 (ours)",
    "timm": "PyTorch eager fp32 (timm)",
    "onnxruntime": "ONNX Runtime fp32",
    "onnxruntime-int8": "ONNX Runtime int8",
    "executorch": "ExecuTorch/XNNPACK fp32",
    "executorch-int8": "ExecuTorch/XNNPACK int8",
    "executorch-int8-float-silu": "ExecuTorch/XNNPACK int8, SiLU float (v1's default)",
    "executorch-int8-float-residual-attention-silu":
        "ExecuTorch/XNNPACK int8, residual adds, attention products and SiLU float (v2's default)",
    "litert": "LiteRT/XNNPACK fp32",
    "litert-int8": "LiteRT/XNNPACK int8, the variant's default float groups",
}
RUNTIMES = tuple(RUNTIME_TITLES)
# int8 programs with operation groups kept float (mobilevit.export.executorch.FLOAT_OP_GROUPS): the speed they cost.
FLOAT_OPS = {
    "executorch-int8-float-silu": DEFAULT_FLOAT_OPS["v1"],
    "executorch-int8-float-residual-attention-silu": DEFAULT_FLOAT_OPS["v2"],
}  # fmt: skip


def _runner(runtime: str, name: str, size: int, folder: Path, threads: int, calibration: int) -> tuple[Callable, int | None]:
    """(a function images -> logits, file size in bytes or None) for ``runtime`` and variant ``name``."""
    from mobilevit.export import load_artifact
    from mobilevit.export.sidecar import write_sidecar

    net = fuse_batchnorm(build_model(name, num_classes=1000).eval())
    if runtime == "eager":
        net = net.to(memory_format=torch.channels_last)
        return lambda x: net(x.contiguous(memory_format=torch.channels_last)), None
    if runtime == "timm":
        import timm

        model = timm.create_model(name, num_classes=1000).eval()
        return model, None
    images = torch.rand(calibration, 3, size, size, generator=torch.Generator().manual_seed(0))
    int8 = "-int8" in runtime
    suffix = "onnx" if runtime.startswith("onnx") else "tflite" if runtime.startswith("litert") else "pte"
    path = folder / f"{name}_{runtime}.{suffix}"
    if runtime.startswith("onnxruntime"):
        from mobilevit.export.onnx import export_onnx, quantize_onnx

        fp32 = export_onnx(net, folder / f"{name}_fp32_tmp.onnx", (size, size))
        if int8:
            quantize_onnx(fp32, path, images)
        else:
            fp32.rename(path)
    elif runtime.startswith("litert"):
        from mobilevit.export.litert import export_litert

        # The defaults: v2 cannot ship an int8 attention on LiteRT (litert.check_float_ops).
        export_litert(net, path, (size, size), images if int8 else None, float_ops=default_float_ops(name))
    else:
        from mobilevit.export.executorch import export_executorch

        export_executorch(net, path, (size, size), images if int8 else None, float_ops=FLOAT_OPS.get(runtime, ()))
    sidecar = {"format": "bench", "class_names": [str(i) for i in range(1000)], "input": {"shape": [1, 3, size, size]}}
    write_sidecar(path, {**sidecar, "preprocessing": {"image_size": size}})
    artifact = load_artifact(path, threads=threads)
    return artifact, path.stat().st_size


# Pause before timing a runtime: ONNX Runtime's threads keep spinning for a while after a call, and measured here they
# made the next runtime's calls up to 2x slower; 50 ms of pause removed it.
SETTLE_S = 0.1


def _spread(calls: int, rounds: int) -> list[int]:
    """``calls`` split over ``rounds`` as evenly as possible (the first rounds take the remainder)."""
    return [calls // rounds + (r < calls % rounds) for r in range(rounds)]


def measure_variant(name: str, runtimes: list[str], size: int, args: argparse.Namespace, folder: Path) -> list[dict]:
    """The rows of variant ``name``, one per runtime: latency (ms, batch 1), throughput (img/s, batch
    ``args.batch_size``), file size. Every runtime's file is made first; then the runtimes are timed in
    ``args.rounds`` interleaved rounds, each timing every runtime in turn (after a pause of :data:`SETTLE_S` and one
    untimed call), so that a machine whose speed changes during the run slows every runtime of the comparison alike."""
    runners = {rt: _runner(rt, name, size, folder, args.threads, args.calibration_images) for rt in runtimes}
    one, batch = torch.rand(1, 3, size, size), torch.rand(args.batch_size, 3, size, size)
    latency: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
    throughput: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
    with torch.inference_mode():
        for run, _ in runners.values():
            time_repeats(lambda: run(one), 0, args.warmup)  # noqa: B023 - called before the loop moves on
        for calls, times, images in ((args.repeats, latency, one), (max(1, args.repeats // 4), throughput, batch)):
            for round_calls in _spread(calls, args.rounds):
                for runtime, (run, _) in runners.items():
                    if round_calls:
                        time.sleep(SETTLE_S)
                        times[runtime] += time_repeats(lambda: run(images), round_calls, 1)  # noqa: B023 - as above
    rows = []
    for runtime, (_, file_bytes) in runners.items():
        row = {
            "model": name,
            "runtime": runtime,
            "image_size": size,
            "file_bytes": file_bytes,
            "latency_ms": 1000 * median(latency[runtime]),
            "throughput_img_s": args.batch_size / median(throughput[runtime]),
            "latency_s_raw": latency[runtime],
            "throughput_s_raw": throughput[runtime],
        }
        print(f"{name:16s} {runtime:17s} {row['latency_ms']:8.2f} ms  {row['throughput_img_s']:8.1f} img/s", flush=True)
        rows.append(row)
    return rows


def plan(args: argparse.Namespace) -> dict[str, list[str]]:
    """The runtimes to measure, by variant: each of ``--runtimes`` for the int8 models, ExecuTorch fp32 (if one of
    them) for all."""
    variants = {name: list(args.runtimes) for name in args.int8_models}
    if "executorch" in args.runtimes:
        variants |= {name: ["executorch"] for name in args.models if name not in args.int8_models}
    return variants


def markdown(record: dict[str, Any]) -> str:
    """The docs table of a run record: one row per variant and runtime, with the speed-ups over eager."""
    rows = record["rows"]
    eager = {(r["model"], r["image_size"]): r["latency_ms"] for r in rows if r["runtime"] == "eager"}
    timm = {(r["model"], r["image_size"]): r["latency_ms"] for r in rows if r["runtime"] == "timm"}
    fp32_size = {(r["model"], r["runtime"]): r["file_bytes"] for r in rows if "-int8" not in r["runtime"]}
    header = ["variant", "px", "runtime", "batch-1 latency", f"batch-{record['batch_size']} img/s", "file"]
    header += ["vs ours eager", "vs timm eager"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---|" + "---:|" * (len(header) - 3)]
    for r in rows:
        key = (r["model"], r["image_size"])
        ours = eager.get(key)
        theirs = timm.get(key)
        size = "" if r["file_bytes"] is None else f"{r['file_bytes'] / 2**20:.2f} MiB"
        base = fp32_size.get((r["model"], r["runtime"].split("-int8")[0]))
        if "-int8" in r["runtime"] and base:
            size += f" ({100 * r['file_bytes'] / base:.0f} %)"
        speedups = ["" if base_ms is None else f"{base_ms / r['latency_ms']:.2f}x" for base_ms in (ours, theirs)]
        lines.append(
            f"| {r['model']} | {r['image_size']} | {RUNTIME_TITLES[r['runtime']]} | {r['latency_ms']:.2f} ms | "
            f"{r['throughput_img_s']:.1f} | {size} | {speedups[0]} | {speedups[1]} |"
        )
    return f"{machine_caption(record['machine'], record['threads'])}\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--image-size", type=positive_int, default=256)
    parser.add_argument("--batch-size", type=positive_int, default=32, help="throughput batch")
    parser.add_argument("--repeats", type=positive_int, default=40, help="timed batch-1 calls (throughput: a quarter)")
    parser.add_argument("--warmup", type=positive_int, default=5)
    parser.add_argument(
        "--rounds", type=positive_int, default=10, help="interleaved rounds over a variant's runtimes (--repeats split)"
    )
    parser.add_argument("--calibration-images", type=positive_int, default=32)
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    parser.add_argument("--int8-models", nargs="+", default=list(INT8_MODELS), choices=list_models())
    parser.add_argument(
        "--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES,
        help="runtimes measured for --int8-models (ExecuTorch fp32: for every one of --models)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: mobilevit_xxs at 64 px, few repeats")
    parser.add_argument("--json", type=Path, help="write the run record here")
    parser.add_argument("--table", type=Path, help="only turn this run record into the markdown table")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    if args.table:
        table = markdown(json.loads(args.table.read_text()))
        show_markdown(table, args.markdown)
        return 0
    if args.quick:
        args.models, args.int8_models, args.image_size = ["mobilevit_xxs"], ["mobilevit_xxs"], 64
        args.batch_size, args.repeats, args.warmup, args.calibration_images = 4, 4, 1, 4
    pin_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    print_machine(info)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            row
            for name, runtimes in plan(args).items()
            for row in measure_variant(name, runtimes, args.image_size, args, Path(tmp))
        ]
    record = {"threads": args.threads, "batch_size": args.batch_size, "machine": info, "rows": rows}
    write_json(record, args.json)
    table = markdown(record)
    show_markdown(table, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
