"""Which operations to keep in float for int8: the ExecuTorch/XNNPACK int8 graph of a checkpoint, simulated in PyTorch
(PT2E quantize/dequantize nodes), with each set of ``--float-ops`` groups kept float, scored on the validation split.

Usage (from the repository root)::

    python benchmarks/int8_sensitivity.py CKPT [CKPT ...] --float-ops none residual "residual attention" \\
        --json sensitivity.json --markdown sensitivity.md
    python benchmarks/int8_sensitivity.py --table docs/runs/int8_sensitivity.json --markdown docs/int8_sensitivity.md

Each set is calibrated as ``python -m mobilevit.export CKPT --format executorch --quantize int8`` calibrates (the
same images of the training split, ``--calibration-method``), then top-1 is counted on ``--split`` (default val: tune
there, report the test split from the exported files with evaluate.py) without flip TTA. ``none`` is plain int8. The
simulated graph runs PyTorch's float kernels between the quantize/dequantize pairs, so its accuracy is close to, not
equal to, the file's (docs/shipped_accuracy.md measures the files).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import pin_threads, positive_int, run_name, show_markdown, write_json
from mobilevit.checkpoint import datamodule_from_weights
from mobilevit.errors import require_choice
from mobilevit.export import calibration
from mobilevit.export.executorch import FLOAT_OP_GROUPS, PT2E_CALIBRATION_METHODS, quantize_pt2e
from mobilevit.models import read_weights
from mobilevit.utils.run import exit_on_user_error

NONE = "none"


def float_op_sets(texts: list[str]) -> list[tuple[str, ...]]:
    """``["none", "residual", "residual attention"]`` -> ``[(), ("residual",), ("residual", "attention")]``."""
    sets = []
    for text in texts:
        groups = tuple(group for group in text.split() if group != NONE)
        for group in groups:
            require_choice(group, "--float-ops", [NONE, *FLOAT_OP_GROUPS])
        sets.append(groups)
    return sets


def top1(network: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy of ``network`` (one image per call: the int8 graph's static batch) over ``batches``."""
    correct = total = 0
    with torch.no_grad():
        for images, labels in batches:
            predictions = torch.cat([network(image).argmax(1) for image in images.split(1)])
            correct += int((predictions == labels).sum())
            total += len(labels)
    return correct / total


def measure(args: argparse.Namespace, checkpoint: str) -> dict[str, Any]:
    """The record of one checkpoint: fp32 and each float-op set's simulated int8 top-1 on ``args.split``."""
    weights = read_weights(checkpoint)
    size = (weights.preprocessing.image_size,) * 2
    images = calibration.calibration_images(weights, args.calibration_images, args.seed, args.data_root)
    datamodule = datamodule_from_weights(
        weights, {"num_workers": 0, "cache_images": False, "batch_size": 64, "root": args.data_root}
    )
    datamodule.prepare_data()
    datamodule.setup("validate" if args.split == "val" else "test")
    loader = datamodule.val_dataloader() if args.split == "val" else datamodule.test_dataloader()
    batches = list(loader)
    network = weights.build(fuse_bn=True).eval()
    rows = [{"float_ops": None, "top1": top1(network, batches), "seconds": None}]
    print(f"fp32: top-1 {100 * rows[0]['top1']:.1f} %", flush=True)
    for float_ops in float_op_sets(args.float_ops):
        start = time.perf_counter()
        simulated = quantize_pt2e(copy.deepcopy(network), size, images, args.calibration_method, float_ops)
        row = {"float_ops": list(float_ops), "top1": top1(simulated, batches), "seconds": time.perf_counter() - start}
        print(f"int8, float: {' '.join(float_ops) or NONE}: top-1 {100 * row['top1']:.1f} %", flush=True)
        rows.append(row)
    return {
        "checkpoint": run_name(Path(checkpoint)),
        "model": weights.variant,
        "split": args.split,
        "num_images": sum(len(labels) for _, labels in batches),
        "calibration": {"method": args.calibration_method, "images": len(images), "seed": args.seed},
        "rows": rows,
    }


def markdown(record: dict[str, Any]) -> str:
    """The run record as tables, one per checkpoint: top-1 of fp32 and of each simulated int8 graph, and the change
    against fp32."""
    return "\n".join(_checkpoint_table(result) for result in record["checkpoints"])


def _checkpoint_table(record: dict[str, Any]) -> str:
    fp32 = record["rows"][0]["top1"]
    calibration_info = record["calibration"]
    lines = [
        f"`{record['checkpoint']}`: {record['model']}, {record['split']} split ({record['num_images']} images, "
        f"no TTA), int8 simulated in PyTorch; {calibration_info['method']} ranges from {calibration_info['images']} "
        "training images",
        "",
        "| weights | kept float | top-1 | vs fp32 |",
        "|---|---|---:|---:|",
    ]
    for row in record["rows"]:
        if row["float_ops"] is None:
            lines.append(f"| fp32 |  | {100 * fp32:.1f} % |  |")
        else:
            kept = " ".join(row["float_ops"]) or NONE
            lines.append(f"| int8 | {kept} | {100 * row['top1']:.1f} % | {100 * (row['top1'] - fp32):+.1f} pt |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*", help="train.py checkpoints (.ckpt)")
    parser.add_argument(
        "--float-ops", nargs="+", default=[NONE, "residual", "residual attention"],
        help=f"sets of groups kept float, each one argument ('{NONE}' for plain int8; groups: "
        f"{', '.join(FLOAT_OP_GROUPS)})",
    )  # fmt: skip
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--calibration-images", type=positive_int, default=calibration.DEFAULT_CALIBRATION_IMAGES)
    parser.add_argument("--calibration-method", default="minmax", choices=PT2E_CALIBRATION_METHODS)
    parser.add_argument("--seed", type=int, default=0, help="which calibration images are drawn")
    parser.add_argument("--data-root", help="where the data is (default: the checkpoint's data.root)")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--json", type=Path, help="write the run record here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--table", type=Path, help="only turn this run record into the markdown table")
    args = parser.parse_args(argv)
    if args.table:
        show_markdown(markdown(json.loads(args.table.read_text())), args.markdown)
        return 0
    if not args.checkpoints:
        parser.error("give a checkpoint (or --table RECORD)")
    pin_threads(args.threads)
    with exit_on_user_error():
        float_op_sets(args.float_ops)  # refuse an unknown group before anything is loaded
        record = {"checkpoints": [measure(args, checkpoint) for checkpoint in args.checkpoints]}
    write_json(record, args.json)
    show_markdown(markdown(record), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
