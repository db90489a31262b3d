"""The README's model-choice table: parameters, the papers' ImageNet top-1 and measured batch-1 latency per variant.

Usage (from the repository root)::

    python benchmarks/model_choice.py --threads 2 --markdown model_choice.md

Latency is :func:`mobilevit.inference.measure_latency_ms` (the run summary's own measurement: BatchNorm folded,
channels-last, the fastest precision the hardware runs natively, median of 20 batch-1 forwards after 5 warm-ups) at
each ``--sizes`` resolution. ImageNet top-1 is quoted from the papers (MobileViT v1, Table 1; MobileViT v2, Table 9,
256 px), not measured here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import parse_int_list, pin_threads, positive_int, print_machine, write_markdown
from mobilevit.models import create_model, list_models
from mobilevit.inference import measure_latency_ms
from mobilevit.utils.machine import machine_info

# ImageNet-1k top-1 (%) reported by the papers for models trained at 256 px.
PAPER_TOP1: dict[str, float] = {
    "mobilevit_xxs": 69.0, "mobilevit_xs": 74.8, "mobilevit_s": 78.4,
    "mobilevitv2_050": 70.2, "mobilevitv2_075": 75.6, "mobilevitv2_100": 78.1, "mobilevitv2_125": 79.6,
    "mobilevitv2_150": 80.4, "mobilevitv2_175": 80.8, "mobilevitv2_200": 81.2,
}  # fmt: skip


def model_choice_table(sizes: list[int], device: torch.device) -> str:
    """Markdown: one row per variant with its parameters, paper top-1 and measured latency at each size."""
    header = ["variant", "parameters (1000 classes)", "ImageNet top-1 (paper)"] + [f"latency @ {s} px" for s in sizes]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name in list_models():
        net = create_model(name, num_classes=1000).eval()
        params = sum(p.numel() for p in net.parameters())
        latencies = [f"{measure_latency_ms(net, size, device):.1f} ms" for size in sizes]
        lines.append(f"| {name} | {params / 1e6:.1f} M | {PAPER_TOP1[name]:.1f} % | " + " | ".join(latencies) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="128,256", help="comma-separated input sizes (px)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    device = torch.device("cpu")
    machine = print_machine(machine_info(device))
    table = model_choice_table(parse_int_list(args.sizes, "--sizes"), device)
    print(table, end="")
    write_markdown(f"{machine}\n\n{table}", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
