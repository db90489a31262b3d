"""Helpers shared by the benchmark scripts: timing, thread pinning, memory, machine info, isolated runs, output."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mobilevit.errors import UserInputError
from mobilevit.utils.timing import median, synchronizer, time_repeats  # noqa: F401  (the benchmarks' timing)

REPO_ROOT = Path(__file__).resolve().parents[1]
# A local Flowers-102 copy, found as the configs find it: $MOBILEVIT_DATA_DIR/flowers102 (default data/flowers102).
FLOWERS_ROOT = Path(os.environ.get("MOBILEVIT_DATA_DIR", REPO_ROOT / "data")).expanduser() / "flowers102"

# Prefix of the line on which an isolated worker process reports its result as JSON.
WORKER_RESULT_PREFIX = "@@BENCHMARK_RESULT@@ "


# ----------------------------------------------------------------------------- command line


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def parse_choices(text: str, choices: Sequence[str], option: str) -> list[str]:
    """Split a comma-separated option value, keeping order, and check every item is in ``choices``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in choices]
    if not items or unknown:
        raise UserInputError(
            f"{option}: unknown or empty choice(s) {unknown or text!r}; valid choices: {', '.join(choices)}."
        )
    return list(dict.fromkeys(items))


def parse_int_list(text: str, option: str) -> list[int]:
    """Split a comma-separated list of positive integers (e.g. ``--workers 1,2``)."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or any(value < 1 for value in values):
        raise UserInputError(f"{option}: expected comma-separated positive integers (e.g. 1,2), got {text!r}.")
    return list(dict.fromkeys(values))


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda[:N]``; a clear error when CUDA is asked for but not available."""
    device = torch.device(name)
    if device.type not in ("cpu", "cuda"):
        raise UserInputError(f"--device must be cpu or cuda, got {name!r}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was given but torch.cuda.is_available() is False on this machine.")
    return device


# ----------------------------------------------------------------------------- timing


def pin_threads(threads: int) -> None:
    """Use exactly ``threads`` intra-op threads in this process (and in OpenMP regions it starts)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


# ----------------------------------------------------------------------------- memory


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc ``malloc_trim``; else a no-op).

    Called before taking an RSS baseline, so memory freed earlier is not silently reused by the measured phase.
    """
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    malloc_trim = getattr(ctypes.CDLL(libc_name), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# ----------------------------------------------------------------------------- isolated runs


def run_isolated(script: Path, spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run ``script --_worker <spec-json>`` in a fresh Python process and return the dict it reports.

    A fresh process per measurement keeps peak-memory figures free of earlier runs. The worker must print
    one line ``WORKER_RESULT_PREFIX + json`` (see :func:`report_worker_result`).
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    completed = subprocess.run(
        [sys.executable, str(script), "--_worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith(WORKER_RESULT_PREFIX):
            return json.loads(line[len(WORKER_RESULT_PREFIX) :])
    tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"Benchmark worker failed (exit code {completed.returncode}) for {spec}:\n{tail}")


def report_worker_result(result: dict[str, Any]) -> None:
    """Print ``result`` on the line the parent process of :func:`run_isolated` looks for."""
    print(WORKER_RESULT_PREFIX + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- machine info


# ----------------------------------------------------------------------------- output


def write_json(result: dict[str, Any], path: Path | None) -> None:
    """Write ``result`` as indented JSON to ``path`` (``-`` prints it to stdout; None does nothing)."""
    if path is None:
        return
    text = json.dumps(result, indent=2)
    if str(path) == "-":
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _console() -> Console:
    # Piped output (files, CI logs) would otherwise be wrapped at 80 columns.
    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], caption: str | None = None
) -> str:
    """Print a rich table (first column left-aligned, the rest right-aligned); return it as markdown."""
    rows = [list(row) for row in rows]
    table = Table(title=title, caption=caption, caption_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    _console().print(table)
    plain = [[Text.from_markup(cell).plain for cell in row] for row in rows]
    lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|---" + "|--:" * (len(columns) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in plain]
    return "\n".join(lines + ([f"\n{caption}"] if caption else [])) + "\n"


def write_markdown(text: str, path: Path | None) -> None:
    """Write the markdown version of the results to ``path`` (None does nothing)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_name(checkpoint: Path) -> str:
    """``<run directory>/<file>`` of a train.py checkpoint (``.../<run>/checkpoints/last.ckpt``): what run records
    keep instead of a machine path."""
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return f"{run.name}/{checkpoint.name}"


def show_markdown(table: str, path: Path | None) -> None:
    """Print a generated markdown table and write it to ``path`` (None: print only)."""
    print(table, end="")
    write_markdown(table, path)


def machine_caption(machine: dict[str, Any], threads: int) -> str:
    """The line above a generated speed table: CPU, its instruction set and int8 dot-product flags, threads, torch
    (e.g. ``AMD EPYC (AVX512, int8 dot product: avx512_vnni), 2 threads, torch 2.14.1``)."""
    isa = machine.get("cpu_capability") or "unknown ISA"
    int8_dot = machine.get("int8_dot_product")
    if int8_dot is not None:  # records made before it was kept do not say
        isa += f", int8 dot product: {' '.join(int8_dot) or 'none'}"
    return f"{machine.get('cpu_model')} ({isa}), {threads} threads, torch {machine.get('torch')}"


def print_machine(info: dict[str, Any]) -> str:
    """Print (and return) one line summarising the machine a run was measured on."""
    target = info.get("gpu") or info["cpu_model"]
    line = (
        f"{target} | {info['usable_cores']} usable cores | load {info['load_average_1m']:.2f} | "
        f"torch {info['torch']} | torchvision {info['torchvision']} | timm {info['timm']} | {info['date']}"
    )
    _console().print(f"[dim]{line}[/dim]")
    return line


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table cell (``-`` when missing)."""
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(value: float | None, higher_is_better: bool) -> str:
    """A ratio coloured green when it favours the numerator and red when it does not."""
    if value is None:
        return "-"
    better = value >= 1.0 if higher_is_better else value <= 1.0
    return f"[{'green' if better else 'red'}]{value:.2f}x[/]"
