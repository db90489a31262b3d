"""Results table and plot from finished training runs.

Every train.py run writes ``summary.json`` into its run directory (see :func:`write_run_summary`). This command
collects them into a markdown table and a plot of test accuracy against parameters and latency:

    python -m mobilevit.report logs/train/runs/2026-11-25_05-00-00 logs/train/runs/2026-11-25_06-00-00
    python -m mobilevit.report logs/train --output docs/results.md --plot docs/results.png

Nothing in the table is typed by hand: every cell comes from a summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from mobilevit.errors import UserInputError  # noqa: E402
from mobilevit.models import fuse_batchnorm  # noqa: E402
from mobilevit.utils.machine import machine_info, machine_label  # noqa: E402
from mobilevit.utils.precision import fast_precision  # noqa: E402

SUMMARY_FILE = "summary.json"
COLUMNS: tuple[str, ...] = (
    "experiment", "variant", "params", "protocol", "resolution", "epochs", "wall time", "machine",
    "val top-1", "test top-1", "test macro F1", "date",
)  # fmt: skip


@torch.inference_mode()
def measure_latency_ms(net: nn.Module, image_size: int, device: torch.device, repeats: int = 20) -> float:
    """Median batch-1 forward time (ms) of ``net`` on the inference fast path (fused BN, channels-last, bf16)."""
    fused = fuse_batchnorm(net).to(device=device, memory_format=torch.channels_last).eval()
    image = torch.randn(1, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(fast_precision(device.type))
    times = []
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for index in range(repeats + 5):  # 5 warm-up passes
            start = time.perf_counter()
            fused(image)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= 5:
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _protocol(data_cfg: dict[str, Any]) -> str:
    protocol = str(data_cfg.get("split_protocol") or data_cfg.get("_target_", "").rsplit(".", 1)[-1])
    return {"official_trainval": "official, trained on train+val"}.get(protocol, protocol)


def write_run_summary(
    output_dir: str | Path,
    run_cfg: dict[str, Any],
    metrics: dict[str, float],
    net: nn.Module,
    epochs: int,
    wall_time_s: float,
    device: torch.device,
    experiment: str | None,
    stopped: dict[str, Any] | None = None,
) -> Path:
    """Write ``<output_dir>/summary.json``: what was trained, on what, for how long, how well, and why and when
    training stopped (``stopped``: reason, epoch, global_step, time)."""
    image_size = int(run_cfg["data"]["image_size"])
    eval_image_size = int(run_cfg["data"].get("eval_image_size") or image_size)
    summary = {
        "experiment": experiment or "-",
        "model": run_cfg["model"].get("name"),
        "params": sum(p.numel() for p in net.parameters()),
        "protocol": _protocol(run_cfg["data"]),
        "image_size": image_size,
        "eval_image_size": eval_image_size,
        "epochs": epochs,
        "wall_time_s": wall_time_s,
        "latency_ms": measure_latency_ms(net, eval_image_size, device),
        "precision": run_cfg["trainer"].get("precision"),
        "metrics": metrics,
        "machine": machine_info(device),
        "stopped": stopped,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(Path(output_dir).resolve()),
    }
    path = Path(output_dir) / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def find_summaries(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every summary.json in or under ``paths`` (run directories or folders of runs), oldest first."""
    files: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file() and path.name == SUMMARY_FILE:
            files.add(path.resolve())
        elif path.is_dir():
            files.update(file.resolve() for file in path.rglob(SUMMARY_FILE))
        else:
            raise UserInputError(f"'{path}' is neither a run directory nor a {SUMMARY_FILE} file.")
    if not files:
        raise UserInputError(f"No {SUMMARY_FILE} found under {[str(p) for p in paths]}: finish a train.py run first.")
    summaries = [json.loads(file.read_text()) for file in files]
    return sorted(summaries, key=lambda summary: summary["finished"])


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f} %"


def _resolution(summary: dict[str, Any]) -> str:
    train, test = summary["image_size"], summary.get("eval_image_size", summary["image_size"])
    return f"{train} px" if train == test else f"{train} px (test {test})"


def table_row(summary: dict[str, Any]) -> list[str]:
    """The table's cells for one run."""
    metrics = summary["metrics"]
    val = metrics.get("val/acc_best", metrics.get("val/acc"))
    return [
        summary["experiment"],
        summary["model"],
        f"{summary['params'] / 1e6:.2f} M",
        summary["protocol"],
        _resolution(summary),
        str(summary["epochs"]),
        f"{summary['wall_time_s'] / 60:.1f} min",
        machine_label(summary["machine"]),
        _percent(val),
        _percent(metrics.get("test/acc")),
        "-" if "test/f1" not in metrics else f"{metrics['test/f1']:.3f}",
        summary["finished"][:10],
    ]


def markdown_table(summaries: Sequence[dict[str, Any]]) -> str:
    """A GitHub markdown table, one row per run."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_row(summary)) + " |" for summary in summaries]
    return "\n".join(lines) + "\n"


def plot_results(summaries: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Test top-1 against parameters and against batch-1 latency, one labelled point per run."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for axis, key, label in (
        (axes[0], "params", "parameters (millions)"),
        (axes[1], "latency_ms", "batch-1 latency, fast path (ms)"),
    ):
        for summary in summaries:
            x = summary[key] / 1e6 if key == "params" else summary[key]
            y = 100 * summary["metrics"].get("test/acc", float("nan"))
            axis.scatter(x, y, s=40)
            axis.annotate(
                f"{summary['experiment']} ({summary['protocol']})\n"
                f"{summary['model']} @ {_resolution(summary)}",
                (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7,
            )  # fmt: skip
        axis.margins(x=0.35, y=0.15)  # room for the labels
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 (%)")
    machines = sorted({machine_label(summary["machine"]) for summary in summaries})
    dates = sorted(summary["finished"][:10] for summary in summaries)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]}..{dates[-1]}"
    figure.suptitle(f"Flowers-102 runs, {when}, measured on {'; '.join(machines)}", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Collect finished train.py runs into a results table and plot.")
    parser.add_argument("runs", nargs="+", help="run directories or folders containing runs (searched recursively)")
    parser.add_argument("--output", type=Path, default=None, help="write the markdown table here (default: print)")
    parser.add_argument("--plot", type=Path, default=Path("results.png"), help="accuracy plot (PNG)")
    args = parser.parse_args(argv)
    try:
        summaries = find_summaries(args.runs)
    except UserInputError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    table = markdown_table(summaries)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    print(table, end="")
    print(f"Plot: {plot_results(summaries, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
