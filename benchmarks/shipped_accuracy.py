"""Accuracy of the files that ship: evaluate.py's results for a checkpoint and the artifacts exported from it, as one
run record and a markdown table (top-1/top-5, file size, the change against the checkpoint).

Usage (from the repository root), after ``python evaluate.py ckpt_path=<checkpoint or artifact> data.split=test``
for a checkpoint and each artifact exported from it::

    python benchmarks/shipped_accuracy.py EVAL_DIR [EVAL_DIR ...] --json docs/runs/shipped_accuracy.json \\
        --markdown docs/shipped_accuracy.md
    python benchmarks/shipped_accuracy.py EVAL_DIR [EVAL_DIR ...] --update docs/runs/shipped_accuracy.json \\
        --markdown docs/shipped_accuracy.md
    python benchmarks/shipped_accuracy.py --table docs/runs/shipped_accuracy.json --markdown docs/shipped_accuracy.md

An EVAL_DIR is an evaluate.py output directory (its ``metrics.json``). For an artifact, the file it evaluated gives
the size and its sidecar (``<artifact>.json``) the quantization and the checkpoint it came from; rows are grouped by
that checkpoint and compared with the checkpoint's own row. ``--update`` adds the rows to an existing record: a row of
the same checkpoint, runtime and file replaces the old one, the other rows stay. An int8 file exported from a
quantization-aware training checkpoint is compared with the fp32 checkpoint that training started from. The record
keeps names, not machine paths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_name, show_markdown, write_json
from mobilevit.errors import UserInputError
from mobilevit.utils.run import exit_on_user_error

RUNTIME_TITLES = {
    "checkpoint": "PyTorch (checkpoint)", "onnx": "ONNX Runtime", "executorch": "ExecuTorch/XNNPACK",
    "litert": "LiteRT",
}  # fmt: skip


def read_row(eval_dir: Path) -> dict[str, Any]:
    """One record row from an evaluate.py output directory.

    Raises:
        UserInputError: no metrics.json in ``eval_dir``, or an artifact whose file or sidecar is gone.
    """
    metrics_file = eval_dir / "metrics.json"
    if not metrics_file.is_file():
        raise UserInputError(f"{eval_dir}: no metrics.json (pass evaluate.py output directories).")
    metrics = json.loads(metrics_file.read_text())
    evaluated = Path(metrics["ckpt_path"])
    runtime = metrics.get("artifact") or "checkpoint"
    row = {
        "model": metrics["model"],
        "split": metrics["split"],
        "num_images": metrics["num_images"],
        "hflip_tta": metrics["hflip_tta"],
        "runtime": runtime,
        "weights": metrics.get("weights") or "fp32",
        "calibration": None,
        "file": evaluated.name,
        "file_bytes": None,
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "source": run_name(evaluated),
    }
    if runtime == "checkpoint":
        return row
    sidecar_file = evaluated.with_name(evaluated.name + ".json")
    if not evaluated.is_file() or not sidecar_file.is_file():
        raise UserInputError(f"{eval_dir}: the evaluated artifact {evaluated} or its sidecar is gone.")
    sidecar = json.loads(sidecar_file.read_text())
    quantization = sidecar.get("quantization") or {}
    row["file_bytes"] = evaluated.stat().st_size
    row["source"] = run_name(Path(sidecar["source"]))
    if quantization:
        method = quantization.get("method")
        count = quantization.get("calibration_images")
        ranges = f"{method}, {count} images" if count else method
        if quantization.get("qat_from"):  # compared with the fp32 checkpoint quantization-aware training started from
            ranges = f"QAT ({row['source']})" + ("" if method == "qat" else f" + {ranges}")
            row["source"] = run_name(Path(quantization["qat_from"]))
        floats = quantization.get("float_ops")
        row["calibration"] = ranges + (f", float: {' '.join(floats)}" if floats else "")
    return row


def markdown(record: dict[str, Any]) -> str:
    """The docs table of a record: per checkpoint, its row then each artifact's, with top-1 against the checkpoint
    and each int8 file's size as a share of the fp32 file of the same runtime."""
    rows = record["rows"]
    header = "| runtime | weights | calibration | file | top-1 | top-5 | top-1 vs checkpoint |"
    parts = []
    for source in dict.fromkeys(row["source"] for row in rows):
        group = [row for row in rows if row["source"] == source]
        checkpoint = next((row for row in group if row["runtime"] == "checkpoint"), None)
        fp32_bytes = {row["runtime"]: row["file_bytes"] for row in group if row["weights"] == "fp32"}
        first = group[0]
        tta = ", flip TTA" if first["hflip_tta"] else ""
        lines = [f"`{source}`: {first['model']}, {first['split']} split, {first['num_images']} images{tta}", "",
                 header, "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for row in group:
            size = "" if row["file_bytes"] is None else f"{row['file_bytes'] / 1e6:.2f} MB"
            base = fp32_bytes.get(row["runtime"])
            if row["weights"] != "fp32" and row["file_bytes"] and base:
                size += f" ({100 * row['file_bytes'] / base:.1f} % of fp32)"
            change = ""
            if checkpoint is not None and row is not checkpoint:
                change = f"{100 * (row['top1'] - checkpoint['top1']):+.1f} pt"
            runtime = RUNTIME_TITLES.get(row["runtime"], row["runtime"])
            lines.append(
                f"| {runtime} | {row['weights']} | {row['calibration'] or ''} | {size} | {100 * row['top1']:.1f} % "
                f"| {100 * row['top5']:.1f} % | {change} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def updated(record: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``record`` with ``rows`` added: each replaces the row of the same source, runtime and file (in place), or is
    appended after the rows of its source (a new source goes last)."""
    def key(row: dict[str, Any]) -> tuple[str, str, str]:
        return row["source"], row["runtime"], row["file"]

    new = {key(row): row for row in rows}
    merged = [new.pop(key(row), row) for row in record["rows"]]
    for row in new.values():
        last_of_source = max((i for i, old in enumerate(merged) if old["source"] == row["source"]), default=None)
        merged.insert(len(merged) if last_of_source is None else last_of_source + 1, row)
    return {**record, "rows": merged}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("eval_dirs", nargs="*", type=Path, help="evaluate.py output directories")
    parser.add_argument("--json", type=Path, help="write the record here")
    parser.add_argument("--update", type=Path, help="add the rows to this record (replacing rows of the same file)")
    parser.add_argument("--table", type=Path, help="only turn this record into the markdown table")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.table:
            record = json.loads(args.table.read_text())
        elif args.eval_dirs:
            rows = [read_row(eval_dir) for eval_dir in args.eval_dirs]
            if args.update:
                if not args.update.is_file():
                    raise UserInputError(f"--update {args.update}: no such record.")
                record = updated(json.loads(args.update.read_text()), rows)
                write_json(record, args.update)
            else:
                record = {"rows": rows}
            write_json(record, args.json)
        else:
            raise UserInputError("Pass evaluate.py output directories, or --table RECORD.")
        table = markdown(record)
        show_markdown(table, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
