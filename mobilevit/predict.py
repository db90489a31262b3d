"""Classify image files with a checkpoint from train.py, or a file exported from one (``.onnx``, ``.pte``, ``.tflite``,
run by its own runtime): top-k classes with names and probabilities.

    python -m mobilevit.predict ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt inputs=photos/
    python -m mobilevit.predict ckpt_path=last inputs='photos/**/*.jpg' output=preds.csv topk=3

``inputs`` is an image file, a directory (searched recursively for image files), a glob pattern (quote it
so the shell leaves it alone) or a list of these (``inputs=[a.jpg,more/]``). Any format and mode Pillow
reads is accepted (grayscale, RGBA, CMYK, palette, 16-bit, WebP, ...): EXIF orientation is applied,
transparent areas become white, and the evaluation transform recorded with the checkpoint's weights is used.
Unreadable files are reported and skipped. Writes ``output`` (CSV, one row per file and rank); exit code
0 when at least one image was classified, 1 when none could be read, 2 for a usage error.
"""

from __future__ import annotations

import csv
import glob
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mobilevit.checkpoint import classifier_from_weights, read_trained
from mobilevit.data.images import (
    IMAGE_EXTENSIONS,
    UnreadableImageError,
    is_image_file,
    load_image,
    require_utf8_names,
    walk_files,
)
from mobilevit.errors import UserInputError, require_int
from mobilevit.export.runtime import is_artifact, load_artifact
from mobilevit.inference import hflip_tta_logits
from mobilevit.utils import (
    display_path,
    exit_on_user_error,
    register_config_resolvers,
    resolve_ckpt_path,
    set_project_root,
)
from mobilevit.utils.precision import autocast_dtype

set_project_root(Path(__file__).resolve().parents[1])
register_config_resolvers()  # the run directory's ${claim_run_dir:...}

CSV_COLUMNS: tuple[str, ...] = ("file", "rank", "class_index", "class_name", "probability")
NO_IMAGE_EXIT_CODE = 1
REQUIRED_KEYS: dict[str, str] = {
    "ckpt_path": "<file.ckpt | run directory | last>",
    "inputs": "<image file | directory | 'glob/*.jpg' | [a.jpg,folder]>",
}


@dataclass
class Prediction:
    """Top-k classes of one image, most probable first."""

    file: Path
    class_indices: list[int]
    probabilities: list[float]


@dataclass
class PredictionRun:
    """Everything one call of :func:`predict` produced."""

    predictions: list[Prediction]
    skipped: list[tuple[Path, str]]  # (file, reason): unreadable files
    class_names: list[str]
    output: Path | None
    left_out: list[Path] = field(default_factory=list)  # files in input folders without an image extension


def _is_image_file(path: Path) -> bool:
    return path.is_file() and is_image_file(path)


def find_images(inputs: str | Sequence[str], left_out: list[Path] | None = None) -> list[Path]:
    """Files named by ``inputs``: files as given, directories searched recursively the way the datasets are
    (:func:`~mobilevit.data.images.walk_files`: symlinked folders followed), glob patterns expanded.

    Directories and patterns yield only files with an image extension; the other files of directories are appended
    to ``left_out``. The result keeps the order of ``inputs`` (sorted within each entry) without duplicates. Names
    that are not valid UTF-8 are refused (:func:`~mobilevit.data.images.require_utf8_names`).
    """
    entries = [inputs] if isinstance(inputs, str) else list(inputs)
    if not entries:
        raise UserInputError("inputs is empty: pass inputs=<image file | directory | 'glob/*.jpg'>.")
    found: dict[Path, None] = {}
    for entry in map(str, entries):
        path = Path(entry).expanduser()
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            walked = list(walk_files(path))
            matches = sorted(p for p in walked if is_image_file(p))
            if left_out is not None:
                left_out.extend(p for p in walked if not is_image_file(p))
        elif glob.has_magic(entry):
            matches = sorted(p for p in map(Path, glob.glob(str(path), recursive=True)) if _is_image_file(p))
        else:
            raise UserInputError(f"inputs: '{entry}' is not a file, a directory or a glob pattern that exists.")
        if not matches:
            kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise UserInputError(f"inputs: '{entry}' contains no image files ({kinds}).")
        found.update(dict.fromkeys(matches))
    require_utf8_names(found)
    return list(found)


class Classifier:
    """A train.py checkpoint ready for inference: BatchNorm fused, evaluation transform, class names."""

    def __init__(
        self, ckpt_path: str | Path, device: str = "auto", precision: str = "auto", hflip_tta: bool | None = None
    ) -> None:
        weights = read_trained(ckpt_path)
        classifier = classifier_from_weights(weights, channels_last=True, fuse_bn=True)
        self.hflip_tta = classifier.hflip_tta if hflip_tta is None else bool(hflip_tta)
        self.device = _device(device)
        self.autocast_dtype = autocast_dtype(precision, self.device.type)
        self.net = classifier.net.to(self.device)
        self.class_names: list[str] = list(weights.class_names or map(str, range(weights.num_classes)))
        self.transform = weights.eval_transform()

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities (float32, CPU) of a batch of transformed images (flip-averaged with
        ``hflip_tta``)."""
        images = images.to(self.device, memory_format=torch.channels_last)
        with torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
            logits = hflip_tta_logits(self.net, images) if self.hflip_tta else self.net(images)
            return logits.float().softmax(dim=1).cpu()


class ArtifactClassifier:
    """An exported artifact (``.onnx`` / ``.pte`` / ``.tflite`` with its sidecar) behind :class:`Classifier`'s
    interface, run on the CPU by its own runtime (ONNX Runtime, ExecuTorch, LiteRT)."""

    def __init__(self, path: str | Path, hflip_tta: bool | None = None) -> None:
        self.artifact = load_artifact(path)
        self.hflip_tta = self.artifact.hflip_tta if hflip_tta is None else bool(hflip_tta)
        self.class_names: list[str] = self.artifact.class_names
        self.transform = self.artifact.eval_transform()

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities (float32) of a batch of transformed images."""
        logits = hflip_tta_logits(self.artifact, images) if self.hflip_tta else self.artifact(images)
        return logits.float().softmax(dim=1)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"device must be auto, cpu, cuda or cuda:<index>, got {name!r}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device={name} but CUDA is not available: use device=cpu or device=auto.")
    if device.type not in ("cpu", "cuda"):
        raise UserInputError(f"device must be auto, cpu, cuda or cuda:<index>, got {name!r}.")
    return device


def _batches(
    files: list[Path], classifier: Classifier, batch_size: int, skipped: list[tuple[Path, str]], console: Console
) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Transformed images in batches; unreadable files are reported once and added to ``skipped``."""
    batch_files: list[Path] = []
    tensors: list[torch.Tensor] = []
    for file in files:
        try:
            tensor = classifier.transform(load_image(file))
        except UnreadableImageError as exc:
            reason = exc.reason
            skipped.append((file, reason))
            console.print(Text(f"Skipped {display_path(file)}: cannot read it as an image ({reason})", style="yellow"))
            continue
        batch_files.append(file)
        tensors.append(tensor)
        if len(tensors) == batch_size:
            yield batch_files, torch.stack(tensors)
            batch_files, tensors = [], []
    if tensors:
        yield batch_files, torch.stack(tensors)


def write_predictions_csv(run: PredictionRun, path: Path) -> None:
    """One row per file and rank: file, rank (1 = best), class_index, class_name, probability."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for prediction in run.predictions:
            pairs = zip(prediction.class_indices, prediction.probabilities, strict=True)
            for rank, (index, probability) in enumerate(pairs, start=1):
                writer.writerow([prediction.file, rank, index, run.class_names[index], f"{probability:.6f}"])


def print_predictions(run: PredictionRun, console: Console) -> None:
    """A table of each image's top-k classes, then a one-line summary."""
    if run.predictions:
        top_k = len(run.predictions[0].class_indices)
        table = Table(title=f"Top-{top_k} predictions")
        table.add_column("file", overflow="fold")
        table.add_column("rank", justify="right")
        table.add_column("class")
        table.add_column("probability", justify="right")
        for prediction in run.predictions:
            pairs = zip(prediction.class_indices, prediction.probabilities, strict=True)
            for rank, (index, probability) in enumerate(pairs, start=1):
                name = display_path(prediction.file) if rank == 1 else ""
                table.add_row(name, str(rank), run.class_names[index], f"{probability:.4f}", end_section=rank == top_k)
        console.print(table)
    summary = f"Predicted {len(run.predictions)} image(s); skipped {len(run.skipped)} unreadable file(s)"
    if run.left_out:
        summary += f" and {len(run.left_out)} without an image extension"
    summary += "."
    console.print(summary, style="bold" if run.predictions else "bold red")
    if run.output is not None and run.predictions:
        console.print(f"CSV: [cyan]{display_path(run.output)}[/]")


def predict(cfg: DictConfig, console: Console | None = None) -> PredictionRun:
    """Classify ``cfg.inputs`` with ``cfg.ckpt_path``; print the table and write ``cfg.output`` (if set)."""
    console = console or Console(soft_wrap=True)
    for key, values in REQUIRED_KEYS.items():
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise UserInputError(f"predict needs {key}={values}.")
    top_k = require_int(cfg.get("topk", 5), "topk", 1)
    batch_size = require_int(cfg.get("batch_size", 32), "batch_size", 1)
    inputs = cfg.inputs
    left_out: list[Path] = []
    files = find_images(list(inputs) if isinstance(inputs, ListConfig) else str(inputs), left_out)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, Path(cfg.paths.log_dir) / "train")
    hflip_tta = cfg.get("hflip_tta")
    classifier: Classifier | ArtifactClassifier
    if is_artifact(ckpt_path):
        classifier = ArtifactClassifier(ckpt_path, None if hflip_tta is None else bool(hflip_tta))
    else:
        classifier = Classifier(
            ckpt_path,
            device=str(cfg.get("device", "auto")),
            precision=str(cfg.get("precision", "auto")),
            hflip_tta=None if hflip_tta is None else bool(hflip_tta),
        )
    top_k = min(top_k, len(classifier.class_names))

    predictions: list[Prediction] = []
    skipped: list[tuple[Path, str]] = []
    for batch_files, images in _batches(files, classifier, batch_size, skipped, console):
        values, indices = classifier.probabilities(images).topk(top_k, dim=1)
        for file, probs, classes in zip(batch_files, values.tolist(), indices.tolist(), strict=True):
            predictions.append(Prediction(file, classes, probs))

    output = Path(cfg.output) if cfg.get("output") else None
    run = PredictionRun(predictions, skipped, classifier.class_names, output, left_out)
    if output is not None and predictions:
        write_predictions_csv(run, output)
    print_predictions(run, console)
    return run


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run = predict(cfg)
    if not run.predictions:
        sys.exit(NO_IMAGE_EXIT_CODE)


if __name__ == "__main__":
    main()
