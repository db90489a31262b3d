"""Data module for a folder tree of images: ``<root>/{train,val[,test]}/<class>/<image>``."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder

from mobilevit.data.base import SPLITS, ImageClassificationDataModule, Transform
from mobilevit.data.images import (
    IMAGE_EXTENSIONS,
    file_listing,
    is_image_file,
    load_image,
    non_image_files,
    require_utf8_names,
    warn_scan_result,
)
from mobilevit.errors import UserInputError

EXTENSIONS: tuple[str, ...] = tuple(sorted(IMAGE_EXTENSIONS))


def list_class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``folder`` (one per class)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class ClassListImageFolder(ImageFolder):
    """``ImageFolder`` whose label indices come from a given class list (the train split's),
    so that a val/test folder missing some classes still gets the same label numbering.

    Images are read with :func:`mobilevit.data.images.load_image` (upright RGB); files in ``exclude`` are
    left out.
    """

    def __init__(self, root: str | Path, classes: list[str], exclude: Collection[Path] = (), **kwargs: Any) -> None:
        self._fixed_classes = list(classes)
        super().__init__(str(root), loader=load_image, is_valid_file=is_image_file, **kwargs)
        if exclude:
            self.samples = [sample for sample in self.samples if Path(sample[0]) not in exclude]
            self.imgs = self.samples
            self.targets = [target for _, target in self.samples]

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return self._fixed_classes, {name: index for index, name in enumerate(self._fixed_classes)}


class ImageFolderDataModule(ImageClassificationDataModule):
    """Images in class folders: ``<root>/train/<class>/*``, ``<root>/val/<class>/*`` and an
    optional ``<root>/test/<class>/*``. Class names (and label order) are the sorted train/
    folder names. Other arguments: see :class:`ImageClassificationDataModule`.

    Before a stage uses a split, :meth:`check_images` scans its image files (once): unreadable ones (truncated,
    empty, not an image at all) stop the run with one error listing them, or are left out with
    ``skip_bad_images=True``. Files without an image extension are left out and logged.
    """

    def __init__(self, root: str | Path, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.class_names = self._discover_classes()

    def _layout_hint(self) -> str:
        return (
            f"Expected layout: {self.root}/train/<class>/<image>, {self.root}/val/<class>/<image> "
            f"and optionally {self.root}/test/<class>/<image> (set data.root)."
        )

    def has_split(self, split: str) -> bool:
        return split in SPLITS and (self.root / split).is_dir()

    def _split_folder(self, split: str) -> Path:
        folder = self.root / split
        if not folder.is_dir():
            if split == "test":
                raise UserInputError(
                    f"No test split: folder {folder} does not exist. Add it, or evaluate on the "
                    f"validation split with data.split=val (valid splits: {list(SPLITS)})."
                )
            raise UserInputError(f"Missing {split} folder {folder}. {self._layout_hint()}")
        return folder

    def _discover_classes(self) -> list[str]:
        """Class names from train/ (valid UTF-8); checks that val/ exists and holds no unknown classes."""
        if not self.root.is_dir():
            raise UserInputError(f"data.root {self.root} is not a folder. {self._layout_hint()}")
        classes = list_class_folders(self._split_folder("train"))
        require_utf8_names((self.root / "train" / name for name in classes), self.root)  # before any work
        if not classes:
            raise UserInputError(f"{self.root / 'train'} has no class sub-folders. {self._layout_hint()}")
        self._check_known_classes("val", classes)
        return classes

    def _check_known_classes(self, split: str, classes: list[str]) -> None:
        folder = self._split_folder(split)
        unknown = sorted(set(list_class_folders(folder)) - set(classes))
        if unknown:
            raise UserInputError(
                f"{folder} has class folders that {self.root / 'train'} lacks: {unknown}. "
                f"Every val/test class must also be a train class (train classes: {classes})."
            )

    def _image_folder(self, split: str, transform: Transform | None) -> ClassListImageFolder:
        folder = self._split_folder(split)
        if split != "train":
            self._check_known_classes(split, self.class_names)
        try:
            # val/test may lack a few classes; an empty train class is an error.
            dataset = ClassListImageFolder(
                folder, self.class_names, exclude=self.bad_images, transform=transform, allow_empty=split != "train"
            )
        except FileNotFoundError as error:
            raise UserInputError(
                f"Could not read the {split} images under {folder}: {error} "
                f"Supported extensions: {', '.join(EXTENSIONS)}."
            ) from error
        if len(dataset) == 0:
            raise UserInputError(f"{folder} contains no images (supported extensions: {', '.join(EXTENSIONS)}).")
        return dataset

    def _make_dataset(self, split: str, transform: Transform | None) -> ClassListImageFolder:
        return self._image_folder(split, transform)

    def image_files(self, split: str) -> list[Path]:
        return [Path(path) for path, _ in self._image_folder(split, None).samples]

    def _after_scan(self, splits: Sequence[str]) -> None:
        self._report_non_images(splits)

    def _report_non_images(self, splits: Sequence[str]) -> None:
        folders = [self.root / split / name for split in splits for name in self.class_names]
        others = non_image_files(folder for folder in folders if folder.is_dir())
        if others:
            warn_scan_result(
                f"Left out {len(others)} file{'s' if len(others) != 1 else ''} without an image extension "
                f"({', '.join(EXTENSIONS)}) in the class folders of {self.root}:\n{file_listing(others, self.root)}"
            )
