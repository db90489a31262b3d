"""Class-stratified, seeded dataset splits that are identical on every machine, and their JSON record."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mobilevit.errors import UserInputError

__all__ = ["SPLIT_FILE_NAME", "stratified_split", "write_split_json"]

SPLIT_FILE_NAME = "split.json"


def _column_counts(class_sizes: np.ndarray, total: int, size: int, key: str) -> np.ndarray:
    """Per-class counts summing to ``size``, proportional to ``class_sizes`` (largest remainder), >= 1 each."""
    quotas = class_sizes * size / total
    counts = np.maximum(1, np.floor(quotas).astype(np.int64))
    remainders = quotas - counts
    # Stable sorts: ties broken by class index, so the result depends on the labels only.
    while counts.sum() < size:
        order = np.argsort(-remainders, kind="stable")
        step = min(size - int(counts.sum()), len(order))
        counts[order[:step]] += 1
        remainders[order[:step]] -= 1
    while counts.sum() > size:
        reducible = np.flatnonzero(counts > 1)
        if reducible.size == 0:
            raise UserInputError(f"{key}={size} is smaller than the number of classes ({len(counts)}).")
        order = reducible[np.argsort(remainders[reducible], kind="stable")]
        step = min(int(counts.sum()) - size, len(order))
        counts[order[:step]] -= 1
        remainders[order[:step]] += 1
    return counts


def stratified_split(
    labels: Sequence[int] | np.ndarray, sizes: Mapping[str, int], seed: int, key: str = "data.stratified_sizes"
) -> dict[str, np.ndarray]:
    """Split the positions ``0..len(labels)-1`` into ``sizes`` (name -> image count), stratified by class.

    Each split gets every class, in proportion to the class's size (largest-remainder rounding, so the
    totals are exact). When the sizes add up to all images, the first split takes what the rounding
    leaves of each class; otherwise the leftover images are unused. Within a class, the images are
    shuffled with ``numpy.random.default_rng([seed, class])`` (PCG64: the same on every platform), then
    cut into the splits in order. Returns name -> sorted positions (int64).
    """
    labels = np.asarray(labels, dtype=np.int64)
    names = list(sizes)
    counts = [int(sizes[name]) for name in names]
    classes, class_sizes = np.unique(labels, return_counts=True)
    total = len(labels)
    if not names or any(c < 1 for c in counts) or sum(counts) > total:
        raise UserInputError(
            f"{key} must give each split a positive size, together at most the {total} images, got {dict(sizes)}."
        )
    if class_sizes.min() < len(names):
        small = classes[class_sizes < len(names)].tolist()
        raise UserInputError(f"Classes {small} have fewer images than there are splits ({len(names)}): {key}.")
    # columns: per-class counts of each split; the remainder column (first split, or "unused") takes the rest.
    exact = sum(counts) == total
    allocated = {
        name: _column_counts(class_sizes, total, count, f"{key}.{name}")
        for name, count in zip(names, counts)
        if not (exact and name == names[0])
    }
    remainder = class_sizes - sum(allocated.values(), np.zeros_like(class_sizes))
    if remainder.min() < (1 if exact else 0):
        raise UserInputError(f"{key}={dict(sizes)} leaves no image of some class for split {names[0]!r}.")
    columns = {name: remainder if name not in allocated else allocated[name] for name in names}

    splits: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for row, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        shuffled = np.random.default_rng([seed, int(label)]).permutation(members)
        start = 0
        for name in names:
            stop = start + int(columns[name][row])
            splits[name].append(shuffled[start:stop])
            start = stop
    return {name: np.sort(np.concatenate(parts)) for name, parts in splits.items()}


def write_split_json(folder: str | Path, files: Mapping[str, Sequence[str]], **info: Any) -> Path:
    """Write ``<folder>/split.json``: ``info`` (protocol, seed, ...), image counts and file names per split."""
    path = Path(folder) / SPLIT_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        **info,
        "sizes": {name: len(names) for name, names in files.items()},
        "files": {name: list(names) for name, names in files.items()},
    }
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record, indent=1))
    temporary.replace(path)
    return path

