"""Decode + augment throughput per DataLoader worker on Flowers-102, next to the model's training step rate.

Usage (from the repository root)::

    python benchmarks/data_pipeline.py --img-size 128 --workers 1,2 --json data.json

For every augmentation preset in configs/augmentation/ it measures (a) single-process decode+augment img/s with
PIL decoding (torchvision's default loader), (b) the same with ``torchvision.io.decode_jpeg`` on the file bytes,
(c) DataLoader img/s with each ``--workers`` count (reported per worker), and prints each per-worker rate divided
by (d) the single-process training img/s of our model (default: mobilevit_xxs, bf16-mixed + channels_last, batch 64).
A ratio >= ``--target-ratio`` (2x) means one worker feeds the training loop with room to spare.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import Flowers102
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from benchmarks.common import (
    FLOWERS_ROOT,
    REPO_ROOT,
    fmt,
    median,
    non_negative_int,
    parse_choices,
    parse_int_list,
    pin_threads,
    positive_int,
    print_machine,
    print_table,
    ratio,
    resolve_device,
    time_repeats,
    write_json,
    write_markdown,
)
from benchmarks.throughput import SETTINGS, MeasureSpec, measure
from mobilevit.errors import UserInputError
from mobilevit.utils.machine import machine_info
from mobilevit.utils.run import RENAMED_OPTIONS

AUGMENTATION_DIR = REPO_ROOT / "configs" / "augmentation"
CROP_PCT = 0.9  # value given to presets that interpolate ${data.crop_pct} (the data configs' default)
Transform = Callable[[Any], torch.Tensor]


def decode_jpeg_loader(path: str | Path) -> torch.Tensor:
    """Read a JPEG file and decode it with ``torchvision.io.decode_jpeg`` into a uint8 (3, H, W) tensor."""
    return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)


# Image loaders compared: torchvision's default (PIL, what the data modules use) and torchvision.io.
DECODERS: dict[str, Callable[[str | Path], Any] | None] = {"pil": None, "decode_jpeg": decode_jpeg_loader}


# ----------------------------------------------------------------------------- inputs


def available_presets() -> list[str]:
    """Augmentation presets found in configs/augmentation/, ``basic`` first (deprecated aliases left out)."""
    renamed = RENAMED_OPTIONS["augmentation"]
    names = sorted(path.stem for path in AUGMENTATION_DIR.glob("*.yaml") if path.stem not in renamed)
    return sorted(names, key=lambda name: name != "basic")


def load_preset(name: str, img_size: int) -> Transform:
    """``configs/augmentation/<name>.yaml`` (a size-free preset) built at ``img_size``."""
    preset = OmegaConf.load(AUGMENTATION_DIR / f"{name}.yaml")
    # ${data.*} interpolations in a preset resolve against these values.
    root = OmegaConf.create({"data": {"image_size": img_size, "crop_pct": CROP_PCT}, "augmentation": preset})
    return instantiate(root.augmentation)(img_size)


def check_flowers(root: Path) -> None:
    """Exit with a clear message when the Flowers-102 copy is not at ``root``."""
    base = root / "flowers-102"
    if not ((base / "imagelabels.mat").is_file() and (base / "setid.mat").is_file() and (base / "jpg").is_dir()):
        raise SystemExit(
            f"Flowers-102 not found at {root} (expected {base}/imagelabels.mat, setid.mat and jpg/). "
            f"Pass --root pointing at the folder that contains flowers-102/."
        )


def make_dataset(root: Path, split: str, transform: Transform, decoder: str) -> Flowers102:
    """Flowers-102 ``split`` whose items are ``transform(decoded image)``."""
    loader = DECODERS[decoder]
    extra = {} if loader is None else {"loader": loader}
    return Flowers102(str(root), split=split, transform=transform, download=False, **extra)


# ----------------------------------------------------------------------------- measurements


def per_image_rate(dataset: Dataset, num_images: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Single-process img/s of ``dataset[i]`` (decode + augment) over its first ``num_images`` items."""
    indices = range(min(num_images, len(dataset)))

    def step() -> None:
        for index in indices:
            dataset[index]

    times = time_repeats(step, repeats, warmup)
    img_s = len(indices) / median(times)
    return {"img_s": img_s, "per_worker_img_s": img_s, "workers": 1, "images": len(indices), "times_s": times}


def loader_rate(
    dataset: Dataset, workers: int, batch_size: int, num_batches: int, warmup_batches: int, repeats: int
) -> dict[str, Any]:
    """DataLoader img/s with ``workers`` processes: median over ``repeats`` passes of ``num_batches`` batches.

    Workers are persistent (started once); each pass starts a new epoch iterator and skips ``warmup_batches``
    untimed batches so the prefetch queue is in steady state when timing starts.
    """
    needed = (warmup_batches + num_batches) * batch_size
    if needed > len(dataset):
        raise UserInputError(
            f"(--loader-warmup-batches + --num-batches) x --batch-size = {needed} images, but the split has "
            f"only {len(dataset)}; lower one of them or use a larger --split."
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    times = []
    for _ in range(repeats):
        batches = iter(loader)
        for _ in range(warmup_batches):
            next(batches)
        start = time.perf_counter()
        for _ in range(num_batches):
            next(batches)
        times.append(time.perf_counter() - start)
        del batches
    img_s = num_batches * batch_size / median(times)
    return {"img_s": img_s, "per_worker_img_s": img_s / workers, "workers": workers, "times_s": times}


def training_rate(args: argparse.Namespace) -> dict[str, Any]:
    """Single-process training img/s of our model (forward + backward + AdamW step), as in throughput.py."""
    spec = MeasureSpec(
        impl="ours",
        model=args.train_model,
        setting=args.train_setting,
        mode="train",
        img_size=args.img_size,
        batch_size=args.train_batch_size,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        num_classes=102,
    )
    record = measure(spec)
    record.pop("peak_mem_mb")  # measured in this shared process: not meaningful here
    return {"model": args.train_model, "setting": args.train_setting, "img_s": record.pop("value"), **record}


def measure_preset(args: argparse.Namespace, preset: str) -> dict[str, dict[str, Any]]:
    """Per-image rates for every decoder and DataLoader rates for every worker count, for one preset."""
    transform = load_preset(preset, args.img_size)
    results = {}
    pin_threads(1)  # like a DataLoader worker, which runs with one intra-op thread
    for decoder in DECODERS:
        dataset = make_dataset(args.root, args.split, transform, decoder)
        record = per_image_rate(dataset, args.num_images, args.repeats, args.warmup)
        results[decoder] = {"decoder": decoder, **record}
    dataset = make_dataset(args.root, args.split, transform, args.loader_decoder)
    for workers in args.workers:
        record = loader_rate(
            dataset, workers, args.batch_size, args.num_batches, args.loader_warmup_batches, args.repeats
        )
        results[f"loader_{workers}w"] = {"decoder": args.loader_decoder, **record}
    return results


# ----------------------------------------------------------------------------- the whole benchmark


def print_results(result: dict[str, Any]) -> str:
    """A table of img/s and per-worker img/s per preset, with each per-worker rate over the training rate."""
    config, training, target = result["config"], result["training"], result["config"]["target_ratio"]
    rows = []
    for preset, by_measure in result["results"].items():
        for key, record in by_measure.items():
            if key.startswith("loader_"):
                workers = record["workers"]
                label = f"DataLoader, {workers} worker{'s' if workers > 1 else ''}, {record['decoder']}"
            else:
                label = f"single process, {record['decoder']}"
            value = result["ratios"][preset][key]
            verdict = "-" if value is None else ("[green]yes[/]" if value >= target else "[red]no[/]")
            rows.append([preset, label, fmt(record["img_s"]), fmt(record["per_worker_img_s"]),
                         "-" if value is None else f"{value:.2f}x", verdict])
    machine = print_machine(result["machine"])
    table = print_table(
        f"Decode + augment on Flowers-102 ({config['split']}) at {config['img_size']}px, "
        f"median of {config['repeats']}",
        ["Preset", "Measurement", "img/s", "img/s per worker", "per worker / train", f">= {target:g}x"],
        rows,
        caption=(
            f"Training: {training['model']} {training['setting']}, batch {training['batch_size']}, "
            f"{config['threads']} threads on {config['device']}: {fmt(training['img_s'])} img/s."
        ),
    )
    return f"{machine}\n\n{table}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=FLOWERS_ROOT, help="folder that contains flowers-102/")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--img-size", type=positive_int, default=128)
    parser.add_argument("--presets", default=None,
                        help="comma-separated presets (default: every configs/augmentation/*.yaml)")
    parser.add_argument("--num-images", type=positive_int, default=256, help="images per single-process repeat")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="untimed repeats before timing")
    parser.add_argument("--workers", default="1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="DataLoader batch size")
    parser.add_argument("--num-batches", type=positive_int, default=16, help="timed batches per DataLoader repeat")
    parser.add_argument("--loader-warmup-batches", type=non_negative_int, default=4)
    parser.add_argument("--loader-decoder", default="pil", choices=list(DECODERS))
    parser.add_argument("--train-model", default="mobilevit_xxs")
    parser.add_argument("--train-batch-size", type=positive_int, default=64)
    parser.add_argument("--train-setting", default="bf16-mixed+channels_last", choices=list(SETTINGS))
    parser.add_argument("--threads", type=positive_int, default=torch.get_num_threads(),
                        help="intra-op threads of the training step")
    parser.add_argument("--device", default="cpu", help="device of the training step: cpu or cuda")
    parser.add_argument("--target-ratio", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here (- for stdout)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the training rate, then every preset; returns the JSON-ready result."""
    check_flowers(args.root)
    presets = available_presets()
    args.presets = presets if args.presets is None else parse_choices(args.presets, presets, "--presets")
    args.workers = parse_int_list(args.workers, "--workers")
    device = resolve_device(args.device)
    from mobilevit.models import list_models

    if args.train_model not in list_models():
        raise UserInputError(f"--train-model {args.train_model!r} is unknown; valid: {', '.join(list_models())}.")

    training = training_rate(args)
    results = {preset: measure_preset(args, preset) for preset in args.presets}
    pin_threads(args.threads)
    ratios = {
        preset: {key: ratio(record["per_worker_img_s"], training["img_s"]) for key, record in by_measure.items()}
        for preset, by_measure in results.items()
    }
    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    config.pop("json")
    config.pop("markdown")
    return {
        "benchmark": "data_pipeline",
        "machine": machine_info(device),
        "config": config,
        "training": training,
        "results": results,
        "ratios": ratios,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the result dict it prints and (with ``--json``) writes."""
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except UserInputError as error:
        raise SystemExit(f"error: {error}") from None
    write_markdown(print_results(result), args.markdown)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
