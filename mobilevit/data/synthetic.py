"""A small, learnable, on-disk synthetic dataset for quick runs without downloads.

Each class is a distinct shape drawn in a class-specific colour (with jitter) at a random
position and size on a noisy background. Images are written as JPEG files in
``<root>/{train,val,test}/<class>/`` and then read back like any image folder, so the real
decoding path runs.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mobilevit.data.base import SPLITS, Transform
from mobilevit.data.imagefolder import ImageFolderDataModule, list_class_folders
from mobilevit.errors import UserInputError, require_int

MANIFEST_NAME = "manifest.json"  # written last: its presence means the dataset is complete
OWNER_MARKER_NAME = ".synthetic-dataset"  # written first and kept: train/val/test here are ours
GENERATOR_VERSION = 1
# Data module defaults suited to this small dataset (override any of them).
SMALL_DATA_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "batch_size": 32,
    "num_workers": 0,
    "pin_memory": False,
    "persistent_workers": False,
}

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _polygon(cx: float, cy: float, radius: float, sides: int, phase: float) -> list[tuple[float, float]]:
    angles = [phase + 2 * math.pi * k / sides for k in range(sides)]
    return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]


def _draw_circle(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    draw.ellipse(box, fill=colour)


def _draw_square(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    draw.rectangle(box, fill=colour)


def _draw_triangle(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)


def _draw_cross(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    arm = (x1 - x0) / 6
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    draw.rectangle((cx - arm, y0, cx + arm, y1), fill=colour)
    draw.rectangle((x0, cy - arm, x1, cy + arm), fill=colour)


def _draw_ring(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    draw.ellipse(box, outline=colour, width=max(2, round((box[2] - box[0]) / 7)))


def _draw_stripes(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    band = (y1 - y0) / 5
    for k in (0, 2, 4):
        draw.rectangle((x0, y0 + k * band, x1, y0 + (k + 1) * band), fill=colour)


def _draw_diamond(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw.polygon(_polygon((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, 4, 0.0), fill=colour)


def _draw_checker(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cell = (x1 - x0) / 3
    for row in range(3):
        for col in range(3):
            if (row + col) % 2 == 0:
                left, top = x0 + col * cell, y0 + row * cell
                draw.rectangle((left, top, left + cell, top + cell), fill=colour)


def _draw_x_mark(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    width = max(2, round((x1 - x0) / 5))
    draw.line((x0, y0, x1, y1), fill=colour, width=width)
    draw.line((x0, y1, x1, y0), fill=colour, width=width)


def _draw_hexagon(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw.polygon(_polygon((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, 6, math.pi / 6), fill=colour)


ShapeDrawer = Callable[[ImageDraw.ImageDraw, Box, tuple[int, int, int]], None]

# Shape name -> (drawer, base colour). Colours are spread over the hue circle.
SHAPES: dict[str, tuple[ShapeDrawer, tuple[int, int, int]]] = {
    "circle": (_draw_circle, (230, 40, 40)),
    "square": (_draw_square, (40, 200, 60)),
    "triangle": (_draw_triangle, (50, 90, 235)),
    "cross": (_draw_cross, (240, 210, 30)),
    "ring": (_draw_ring, (220, 50, 220)),
    "stripes": (_draw_stripes, (30, 210, 220)),
    "diamond": (_draw_diamond, (250, 140, 20)),
    "checker": (_draw_checker, (245, 245, 245)),
    "x_mark": (_draw_x_mark, (140, 60, 200)),
    "hexagon": (_draw_hexagon, (120, 240, 140)),
}
MAX_CLASSES = len(SHAPES)


def render_shape_image(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``shape`` in its class colour on a random noisy dark background."""
    drawer, base_colour = SHAPES[shape]
    background = rng.integers(0, 90, size=3)
    noise = rng.normal(0.0, 18.0, size=(size, size, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    # Shape spans 35-65% of the side; margin keeps it inside the eval center crop.
    side = rng.uniform(0.35, 0.65) * size
    margin = 0.08 * size
    x0 = rng.uniform(margin, size - margin - side)
    y0 = rng.uniform(margin, size - margin - side)
    colour = tuple(int(c) for c in np.clip(np.array(base_colour) + rng.integers(-25, 26, size=3), 0, 255))
    drawer(ImageDraw.Draw(image), (x0, y0, x0 + side, y0 + side), colour)
    return image


class SyntheticDataModule(ImageFolderDataModule):
    """Generated shapes dataset (see module docstring) read as an image folder.

    ``prepare_data()`` generates it under ``root`` unless a matching complete copy is there
    (``manifest.json`` is written last, so an interrupted generation is redone).

    Args:
        root: folder to generate into (it gets train/, val/, test/ and manifest.json).
        num_classes: number of shape classes, 2..10.
        train_per_class, val_per_class, test_per_class: images per class in each split.
        source_size: side length in pixels of the generated images.
        seed: random seed; the same arguments always produce the same images.
        Other arguments: see :class:`ImageClassificationDataModule` (defaults: ``SMALL_DATA_DEFAULTS``).
    """

    def __init__(
        self,
        root: str | Path,
        num_classes: int = 6,
        train_per_class: int = 100,
        val_per_class: int = 25,
        test_per_class: int = 25,
        source_size: int = 64,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        require_int(num_classes, "data.num_classes", 2, MAX_CLASSES)
        require_int(train_per_class, "data.train_per_class", 1)
        require_int(val_per_class, "data.val_per_class", 1)
        require_int(test_per_class, "data.test_per_class", 1)
        require_int(source_size, "data.source_size", 16)
        self.shapes = list(SHAPES)[:num_classes]
        self.per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        self.source_size = source_size
        self.seed = int(seed)
        super().__init__(root, **{**SMALL_DATA_DEFAULTS, **kwargs})

    def _discover_classes(self) -> list[str]:
        # Same order ImageFolder gives the generated folders: sorted names.
        return sorted(self.shapes)

    def has_split(self, split: str) -> bool:
        return split in SPLITS  # every split is generated

    @property
    def manifest(self) -> dict:
        """Everything that determines the generated files."""
        return {
            "generator_version": GENERATOR_VERSION,
            "classes": self.class_names,
            "per_class": self.per_class,
            "source_size": self.source_size,
            "seed": self.seed,
        }

    def is_generated(self) -> bool:
        """Whether ``root`` holds a complete dataset generated with these arguments."""
        path = self.root / MANIFEST_NAME
        try:
            return json.loads(path.read_text()) == self.manifest
        except (OSError, ValueError):
            return False

    def prepare_data(self) -> None:
        """Generate the dataset unless an identical complete one exists."""
        if self.is_generated():
            return
        existing = [self.root / split for split in SPLITS if (self.root / split).exists()]
        if existing and not (self.root / OWNER_MARKER_NAME).exists():
            names = ", ".join(f"{p.name}/" for p in existing)
            raise UserInputError(
                f"data.root={str(self.root)!r} already has {names} folders that the synthetic generator "
                f"did not write; refusing to overwrite them. Point data.root at an empty or new folder."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / OWNER_MARKER_NAME).touch()
        (self.root / MANIFEST_NAME).unlink(missing_ok=True)
        for folder in existing:
            shutil.rmtree(folder)
        for split_index, split in enumerate(SPLITS):
            rng = np.random.default_rng([self.seed, split_index])
            for shape in self.shapes:
                folder = self.root / split / shape
                folder.mkdir(parents=True, exist_ok=True)
                for index in range(self.per_class[split]):
                    image = render_shape_image(shape, self.source_size, rng)
                    image.save(folder / f"{shape}_{index:05d}.jpg", quality=90)
        temporary = self.root / (MANIFEST_NAME + ".tmp")
        temporary.write_text(json.dumps(self.manifest, indent=2))
        temporary.replace(self.root / MANIFEST_NAME)

    def setup(self, stage: str | None = None) -> None:
        if not self.is_generated():  # e.g. setup() called without prepare_data()
            self.prepare_data()
        super().setup(stage)

    def _make_dataset(self, split: str, transform: Transform | None):
        if not self.is_generated():
            self.prepare_data()
        found = list_class_folders(self.root / split)
        if found != self.class_names:  # e.g. someone edited the folders
            raise UserInputError(
                f"{self.root / split} has class folders {found}, expected {self.class_names}; "
                f"delete {self.root / MANIFEST_NAME} to regenerate the synthetic dataset."
            )
        return super()._make_dataset(split, transform)
