"""Training/inference throughput, batch-1 latency and peak memory of our MobileViT against timm's.

Usage (from the repository root)::

    python benchmarks/throughput.py --model mobilevit_xs --img-size 256 --batch-size 32 --threads 2 \
        --repeats 5 --warmup 2 --settings 32-true,32-true+channels_last,bf16-mixed,bf16-mixed+channels_last --fast-path --json out.json

Every (implementation, setting, mode) figure is measured in a fresh Python process, so peak memory is that
measurement's own; see benchmarks/README.md for the methodology.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    current_rss_mb,
    fmt,
    fmt_ratio,
    median,
    non_negative_int,
    parse_choices,
    peak_rss_mb,
    pin_threads,
    positive_int,
    print_machine,
    print_table,
    ratio,
    release_free_memory,
    report_worker_result,
    resolve_device,
    run_isolated,
    synchronizer,
    time_repeats,
    write_json,
    write_markdown,
)
from mobilevit.errors import UserInputError
from mobilevit.utils.machine import machine_info
from mobilevit.utils.precision import autocast_dtype


@dataclass(frozen=True)
class Setting:
    """Which precision the forward pass runs in (Lightning's names) and how inputs and weights are laid out."""

    precision: str
    channels_last: bool


# Named <Lightning precision>[+channels_last], as trainer.precision and module.channels_last say it.
SETTINGS: dict[str, Setting] = {
    "32-true": Setting("32-true", channels_last=False),
    "32-true+channels_last": Setting("32-true", channels_last=True),
    "bf16-mixed": Setting("bf16-mixed", channels_last=False),
    "bf16-mixed+channels_last": Setting("bf16-mixed", channels_last=True),
}
MODES = ("train", "infer", "latency")
# "ours_fused" is our model with BatchNorm folded (mobilevit.models.fuse_batchnorm); inference modes only.
IMPLS = ("ours", "timm", "ours_fused")
UNITS = {"train": "img/s", "infer": "img/s", "latency": "ms"}
LR = 1e-3


@dataclass(frozen=True)
class MeasureSpec:
    """One measurement: a model implementation under one setting in one mode."""

    impl: str
    model: str
    setting: str
    mode: str
    img_size: int
    batch_size: int
    threads: int
    repeats: int
    warmup: int
    device: str = "cpu"
    num_classes: int = 1000
    latency_iters: int = 10


# ----------------------------------------------------------------------------- one measurement


def build_model(impl: str, name: str, num_classes: int) -> nn.Module:
    """Our model (optionally BN-folded) or timm's, randomly initialised, with a ``num_classes`` head."""
    if impl == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    from mobilevit.models import create_model, fuse_batchnorm

    model = create_model(name, num_classes=num_classes)
    return fuse_batchnorm(model) if impl == "ours_fused" else model


def _train_step(
    model: nn.Module, inputs: torch.Tensor, num_classes: int, autocast: Callable[[], Any]
) -> Callable[[], None]:
    """A closure doing forward + cross-entropy + backward + AdamW step on a fixed batch."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    targets = torch.randint(0, num_classes, (inputs.shape[0],), device=inputs.device)

    def step() -> None:
        with autocast():
            loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _inference_step(
    model: nn.Module, inputs: torch.Tensor, autocast: Callable[[], Any], iters: int
) -> Callable[[], None]:
    """A closure running ``iters`` eval-mode forward passes under ``torch.inference_mode``."""
    model.eval()

    def step() -> None:
        with torch.inference_mode(), autocast():
            for _ in range(iters):
                model(inputs)

    return step


def _prepare(spec: MeasureSpec, batch: int) -> tuple[Callable[[], None], int]:
    """Build the model and a fixed input for ``spec`` at ``batch``; return the step to time and its forwards."""
    device = torch.device(spec.device)
    setting = SETTINGS[spec.setting]
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = build_model(spec.impl, spec.model, spec.num_classes).to(device, memory_format=memory_format)
    inputs = torch.rand(batch, 3, spec.img_size, spec.img_size, device=device)
    inputs = inputs.contiguous(memory_format=memory_format)

    dtype = autocast_dtype(setting.precision, device.type)

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    if spec.mode == "train":
        return _train_step(model, inputs, spec.num_classes, autocast), 1
    iters = spec.latency_iters if spec.mode == "latency" else 1
    return _inference_step(model, inputs, autocast, iters), iters


def measure(spec: MeasureSpec) -> dict[str, Any]:
    """Take one measurement in this process; returns value (img/s or ms), peak memory and raw times.

    Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and, on CPU, the growth of this process's peak
    RSS over its RSS just before the measured model was built (meaningful only in a fresh process). Before that
    baseline, one step of the same kind on a 2-image batch loads the kernels' code and starts the thread pools,
    so the figure is the measurement's own memory (weights, optimizer state, activations, workspaces), not
    one-off library start-up.
    """
    pin_threads(spec.threads)
    device = torch.device(spec.device)
    torch.manual_seed(0)
    prime_step, _ = _prepare(spec, batch=2)
    prime_step()
    del prime_step
    release_free_memory()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = current_rss_mb()

    batch = 1 if spec.mode == "latency" else spec.batch_size
    step, iters = _prepare(spec, batch)
    times = time_repeats(step, spec.repeats, spec.warmup, synchronizer(device))

    seconds_per_call = median(times) / iters
    value = seconds_per_call * 1000.0 if spec.mode == "latency" else batch / seconds_per_call
    if device.type == "cuda":
        peak_mem_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mem_mb = max(peak_rss_mb() - rss_before, 0.0)
    return {
        "value": value,
        "unit": UNITS[spec.mode],
        "peak_mem_mb": peak_mem_mb,
        "batch_size": batch,
        "iters_per_repeat": iters,
        "times_s": times,
    }


# ----------------------------------------------------------------------------- the whole benchmark


def plan(args: argparse.Namespace) -> list[MeasureSpec]:
    """All measurements, interleaved: per setting and mode, ours and timm back to back.

    The order inside each pair alternates from one setting to the next, so slow drift of the machine
    (thermal, background load) falls on both implementations equally.
    """
    base = MeasureSpec(
        impl="ours",
        model=args.model,
        setting=args.settings[0],
        mode=args.modes[0],
        img_size=args.img_size,
        batch_size=args.batch_size,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        num_classes=args.num_classes,
        latency_iters=args.latency_iters,
    )
    specs = []
    for index, setting in enumerate(args.settings):
        impls = ["ours", "timm"] if index % 2 == 0 else ["timm", "ours"]
        impls += ["ours_fused"] if args.fast_path else []
        for mode in args.modes:
            specs += [
                replace(base, impl=impl, setting=setting, mode=mode)
                for impl in impls
                if not (impl == "ours_fused" and mode == "train")
            ]
    return specs


def collect_ratios(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """ours/timm (and ours_fused/timm) for each setting's value and peak memory in every mode measured."""
    ratios: dict[str, dict[str, float | None]] = {}
    for setting, by_impl in results.items():
        timm_results = by_impl.get("timm", {})
        entry: dict[str, float | None] = {}
        for impl, suffix in (("ours", ""), ("ours_fused", "_fused")):
            for mode, record in by_impl.get(impl, {}).items():
                reference = timm_results.get(mode)
                if reference is None:
                    continue
                entry[f"{mode}{suffix}"] = ratio(record["value"], reference["value"])
                entry[f"{mode}{suffix}_peak_mem"] = ratio(record["peak_mem_mb"], reference["peak_mem_mb"])
        ratios[setting] = entry
    return ratios


def _table_rows(setting: str, result: dict[str, Any], mode: str, fused: bool) -> list[list[str]]:
    """The speed row and the peak-memory row of one setting and mode."""
    by_impl, ratios, batch = result["results"][setting], result["ratios"][setting], result["config"]["batch_size"]
    speed_label = "latency ms (bs 1)" if mode == "latency" else f"{mode} img/s (bs {batch})"
    impls = ["ours", "ours_fused", "timm"] if fused else ["ours", "timm"]
    suffixes = ["", "_fused"] if fused else [""]
    rows = []
    for label, key, ratio_suffix, higher_is_better in (
        (speed_label, "value", "", mode != "latency"),
        (f"{mode} peak MiB", "peak_mem_mb", "_peak_mem", False),
    ):
        cells = [fmt(by_impl.get(impl, {}).get(mode, {}).get(key)) for impl in impls]
        cells += [fmt_ratio(ratios.get(f"{mode}{suffix}{ratio_suffix}"), higher_is_better) for suffix in suffixes]
        rows.append([setting, label, *cells])
    return rows


def print_results(result: dict[str, Any]) -> str:
    """A table with ours, (ours BN-fused), timm and the ratios side by side."""
    config = result["config"]
    fused = config["fast_path"]
    columns = ["Setting", "Metric", "Ours", *(["Ours BN-fused"] if fused else []), "timm", "Ours/timm"]
    columns += ["Fused/timm"] if fused else []
    rows = [
        row
        for setting in result["results"]
        for mode in config["modes"]
        for row in _table_rows(setting, result, mode, fused)
    ]
    machine = print_machine(result["machine"])
    table = print_table(
        f"{config['model']} @ {config['img_size']}px on {config['device']} ({config['threads']} threads), "
        f"median of {config['repeats']} after {config['warmup']} warm-up",
        columns,
        rows,
        caption="Green ratio = ours better (higher img/s, lower ms or MiB).",
    )
    return f"{machine}\n\n{table}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilevit_xs", help="a name both create_model and timm know")
    parser.add_argument("--img-size", type=positive_int, default=256)
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch of the train/infer figures")
    parser.add_argument("--threads", type=positive_int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed repeats before timing")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated: {', '.join(SETTINGS)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--num-classes", type=positive_int, default=1000)
    parser.add_argument("--latency-iters", type=positive_int, default=10,
                        help="batch-1 forwards per latency repeat (the repeat's mean is one sample)")
    parser.add_argument("--fast-path", action="store_true",
                        help="also measure our inference with BatchNorm folded (mobilevit.models.fuse_batchnorm)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (- for stdout)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    return parser


def validate(args: argparse.Namespace) -> None:
    """Turn option strings into lists and check the model exists in both zoos."""
    import timm

    from mobilevit.models import list_models

    args.settings = parse_choices(args.settings, list(SETTINGS), "--settings")
    args.modes = parse_choices(args.modes, list(MODES), "--modes")
    resolve_device(args.device)
    if args.model not in list_models() or not timm.is_model(args.model):
        shared = sorted(set(list_models()) & set(timm.list_models()))
        raise UserInputError(
            f"--model {args.model!r} must exist in both mobilevit and timm; valid: {', '.join(shared)}."
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything ``args`` asks for, each in its own process; returns the JSON-ready result."""
    validate(args)
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in args.settings}
    for spec in plan(args):
        record = run_isolated(Path(__file__), asdict(spec), args.threads)
        results[spec.setting].setdefault(spec.impl, {})[spec.mode] = record
    config = {key: value for key, value in vars(args).items() if key not in ("json", "markdown", "_worker")}
    return {
        "benchmark": "throughput",
        "machine": machine_info(torch.device(args.device)),
        "config": config,
        "results": results,
        "ratios": collect_ratios(results),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the result dict it prints and (with ``--json``) writes."""
    args = build_parser().parse_args(argv)
    if args._worker is not None:  # hidden: one isolated measurement, reported to the parent process
        report_worker_result(measure(MeasureSpec(**json.loads(args._worker))))
        return {}
    try:
        result = run(args)
    except UserInputError as error:
        raise SystemExit(f"error: {error}") from None
    write_markdown(print_results(result), args.markdown)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
