"""Operator profile of an exported file: where one batch-1 call spends its time, in the file's own runtime.

Usage (from the repository root, on an otherwise idle machine)::

    python benchmarks/operator_profile.py logs/train/runs/<time>/checkpoints/last_int8.pte --threads 2
    python benchmarks/operator_profile.py fp32.onnx int8.onnx --runs 100 --json profile.json
    python benchmarks/operator_profile.py --table docs/runs/operator_profile.json --top 10 \\
        --markdown docs/operator_profile.md

- ExecuTorch (``.pte``): the program's ETDump (``_load_for_executorch(enable_etdump=True)``) read by ExecuTorch's
  ``Inspector``. XNNPACK reports each operator it runs inside the delegate (``Fully Connected (NC, QS8, QC8W)
  GEMM``, ``Convolution (NHWC, QC8) IGEMM``, ``Convert (NC)`` for int8 <-> float, ...); operators outside it run on
  ExecuTorch's portable kernels (``native_call_<op>``). Time per operator instance is its median over ``--runs``.
- ONNX Runtime (``.onnx``): its profiler's kernel time per node (``SessionOptions.enable_profiling``), median over
  ``--runs`` per node.

Instances are summed per operator kind; the table gives ms per call and the share of the call's operator time.
The input is a random image of the shape in the artifact's sidecar.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import machine_caption, pin_threads, positive_int, print_machine, show_markdown, write_json
from mobilevit.export.runtime import load_artifact, onnxruntime_session
from mobilevit.utils.machine import machine_info
from mobilevit.utils.run import exit_on_user_error

# ETDump events of the runtime itself (loading, the whole call, the delegate call), not operators.
EXECUTORCH_FRAMEWORK_EVENTS = {
    "Program::load_method", "Method::init", "Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"
}


def _executorch_profile(path: Path, image: torch.Tensor, runs: int) -> dict[str, float]:
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    program = _load_for_executorch(str(path), enable_etdump=True)
    for _ in range(runs):
        program.forward((image,))
    with tempfile.TemporaryDirectory() as folder:
        etdump = Path(folder, "profile.etdp")
        program.write_etdump_result_to_file(str(etdump))
        inspector = Inspector(etdump_path=str(etdump))
    times: dict[str, float] = defaultdict(float)
    for block in inspector.event_blocks:
        for event in block.events:
            if event.perf_data is not None and event.name not in EXECUTORCH_FRAMEWORK_EVENTS:
                times[re.sub(r" #\d+$", "", event.name)] += event.perf_data.p50  # ms
    return dict(times)


def _onnxruntime_profile(path: Path, image: torch.Tensor, runs: int, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        session = onnxruntime_session(path, threads, profile_prefix=str(Path(folder, "profile")))
        for _ in range(runs):
            session.run(None, {"images": image.numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[(event["args"]["op_name"], event["name"])].append(event["dur"] / 1000)  # µs -> ms
    times: dict[str, float] = defaultdict(float)
    for (op_type, _), durations in per_node.items():
        times[op_type] += statistics.median(durations)
    return dict(times)


def profile(path: Path, runs: int, threads: int) -> dict[str, Any]:
    """The record of one artifact: ms per call of each operator kind (summed over its instances), largest first.

    Raises:
        UserInputError: a missing file or sidecar, an unknown suffix, or a runtime that is not installed.
    """
    artifact = load_artifact(path, threads)  # checks the file, its sidecar and the runtime; sets ExecuTorch's threads
    image = torch.rand(1, *artifact.sidecar["input"]["shape"][1:], generator=torch.Generator().manual_seed(0))
    if artifact.format == "onnx":
        times = _onnxruntime_profile(path, image, runs, threads)
    else:
        times = _executorch_profile(path, image, runs)
    operators = dict(sorted(times.items(), key=lambda item: -item[1]))
    return {"artifact": str(path), "runtime": artifact.format, "runs": runs, "operator_ms": operators}


def markdown(record: dict[str, Any], top: int) -> str:
    """One table per artifact: the ``top`` operator kinds by time, with their share of the operator time."""
    sections = [machine_caption(record["machine"], record["threads"])]
    for item in record["artifacts"]:
        total = sum(item["operator_ms"].values())
        lines = [f"{item['artifact']} ({item['runtime']}, median of {item['runs']} calls): {total:.2f} ms of operator "
                 "time per call", ""]
        lines += ["| operator | ms per call | share |", "|---|---:|---:|"]
        for name, ms in list(item["operator_ms"].items())[:top]:
            lines.append(f"| {name} | {ms:.3f} | {100 * ms / total:.0f} % |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifacts", nargs="*", type=Path, help=".pte or .onnx files, each with its sidecar")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--runs", type=positive_int, default=50, help="profiled batch-1 calls per artifact")
    parser.add_argument("--top", type=positive_int, default=15, help="operator kinds per table")
    parser.add_argument("--json", type=Path, help="write the record here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--table", type=Path, help="only turn this record into the tables")
    args = parser.parse_args(argv)
    if args.table:
        show_markdown(markdown(json.loads(args.table.read_text()), args.top), args.markdown)
        return 0
    if not args.artifacts:
        parser.error("pass artifacts to profile, or --table RECORD")
    pin_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    print_machine(info)
    with exit_on_user_error():
        artifacts = [profile(path, args.runs, args.threads) for path in args.artifacts]
    record = {"threads": args.threads, "machine": info, "artifacts": artifacts}
    write_json(record, args.json)
    show_markdown(markdown(record, args.top), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
