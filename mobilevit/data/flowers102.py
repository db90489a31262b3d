"""Oxford Flowers-102 data module: official splits, or a seeded class-stratified split of all 8189 images."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat
from torch.utils.data import Dataset
from torchvision.datasets import Flowers102

from mobilevit.data.base import SPLITS, ImageClassificationDataModule, Transform
from mobilevit.data.images import load_image
from mobilevit.data.loading import distributed_replicas
from mobilevit.data.splits import stratified_split, write_split_json
from mobilevit.errors import UserInputError, require_int

# The 102 category names in label order 0..101 (the standard Oxford-102 names list).
FLOWERS102_CLASSES: tuple[str, ...] = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
    "english marigold", "tiger lily", "moon orchid", "bird of paradise", "monkshood",
    "globe thistle", "snapdragon", "colt's foot", "king protea", "spear thistle",
    "yellow iris", "globe-flower", "purple coneflower", "peruvian lily", "balloon flower",
    "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian",
    "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower",
    "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil",
    "sword lily", "poinsettia", "bolero deep blue", "wallflower", "marigold", "buttercup",
    "oxeye daisy", "common dandelion", "petunia", "wild pansy", "primula", "sunflower",
    "pelargonium", "bishop of llandaff", "gaura", "geranium", "orange dahlia",
    "pink-yellow dahlia?", "cautleya spicata", "japanese anemone", "black-eyed susan",
    "silverbush", "californian poppy", "osteospermum", "spring crocus", "bearded iris",
    "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose", "thorn apple",
    "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani",
    "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia",
    "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss",
    "foxglove", "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia",
    "blanket flower", "trumpet creeper", "blackberry lily",
)  # fmt: skip

FLOWERS102_URL: str = getattr(
    Flowers102, "_download_url_prefix", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
)


SPLIT_PROTOCOLS: tuple[str, ...] = ("official", "official_trainval", "stratified")  # data.split_protocol
# Keys of the official split ids in setid.mat.
OFFICIAL_SET_IDS: dict[str, str] = {"train": "trnid", "val": "valid", "test": "tstid"}
DEFAULT_STRATIFIED_SIZES: dict[str, int] = {"train": 6500, "val": 689, "test": 1000}


class ImageList(Dataset):
    """Images read from ``files`` with :func:`~mobilevit.data.images.load_image` (upright RGB, as every dataset and
    ``mobilevit.predict`` read them) with integer ``targets``; ``transform`` applied if given."""

    def __init__(self, files: Sequence[Path], targets: Sequence[int], transform: Transform | None = None) -> None:
        self.files = list(files)
        self.targets = list(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = load_image(self.files[index])
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


def _check_sizes(sizes: Mapping[str, int] | None) -> dict[str, int]:
    if sizes is None:
        return dict(DEFAULT_STRATIFIED_SIZES)
    valid = isinstance(sizes, Mapping) and set(sizes) == set(SPLITS)
    if valid:
        for split in SPLITS:
            require_int(sizes[split], f"data.stratified_sizes.{split}", 1)
    else:
        raise UserInputError(
            f"data.stratified_sizes must map train, val and test to image counts "
            f"(default {DEFAULT_STRATIFIED_SIZES}), got {sizes!r}."
        )
    return {split: int(sizes[split]) for split in SPLITS}


class Flowers102DataModule(ImageClassificationDataModule):
    """Oxford Flowers-102 (102 classes, 8189 images) read from ``<root>/flowers-102/``.

    Split protocols (``split_protocol``):

    * ``official``: the dataset's own splits from ``setid.mat``: train 1020 / val 1020 / test 6149.
    * ``official_trainval``: the same, but training on train + val (2040 images), a common protocol for this
      dataset. Val is then seen in training: its metrics are no model-selection signal, test is.
    * ``stratified``: all 8189 images split by :func:`mobilevit.data.splits.stratified_split` with
      ``split_seed`` into ``stratified_sizes`` (default 6500 / 689 / 1000), every class in every split
      in proportion to its size; the same split on every machine for a given seed.

    Labels and splits come from ``imagelabels.mat`` / ``setid.mat`` only (no image decoding). ``data.root`` may
    point at any copy (no checksum runs on it), so its images are scanned before a stage uses them, like every
    dataset's (:meth:`check_images`; unreadable files stop the run, or are left out with ``skip_bad_images``). When
    ``split_dir`` is set, ``setup("fit")`` writes the split (protocol, seed, image file names per split)
    to ``<split_dir>/split.json`` (on global rank 0).

    Args:
        root: folder that contains ``flowers-102/``.
        download: download the dataset in ``prepare_data()`` when it is missing.
        split_protocol: "official", "official_trainval" or "stratified".
        split_seed: seed of the stratified split.
        stratified_sizes: images per split for the stratified protocol: {train: n, val: n, test: n}.
        split_dir: folder to write ``split.json`` into (e.g. the run directory); None writes nothing.
        Other arguments: see :class:`ImageClassificationDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        download: bool = True,
        split_protocol: str = "official",
        split_seed: int = 0,
        stratified_sizes: Mapping[str, int] | None = None,
        split_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        if split_protocol not in SPLIT_PROTOCOLS:
            raise UserInputError(
                f"data.split_protocol must be one of {list(SPLIT_PROTOCOLS)}, got {split_protocol!r}."
            )
        self.download = bool(download)
        self.split_protocol = split_protocol
        self.split_seed = require_int(split_seed, "data.split_seed", 0)
        self.stratified_sizes = _check_sizes(stratified_sizes)
        self.split_dir = Path(split_dir).expanduser() if split_dir not in (None, "") else None
        self.class_names = list(FLOWERS102_CLASSES)

    @property
    def base_folder(self) -> Path:
        return self.root / "flowers-102"

    def files_present(self) -> bool:
        """Whether the label file, split file and image folder all exist (no checksum)."""
        base = self.base_folder
        label_files = ("imagelabels.mat", "setid.mat")
        return all((base / name).is_file() for name in label_files) and (base / "jpg").is_dir()

    def _missing_message(self, problem: str) -> str:
        base = self.base_folder.resolve()
        return (
            f"Flowers-102 is not available under data.root={str(self.root)!r}: {problem}\n"
            f"Expected layout:\n"
            f"  {base}/imagelabels.mat\n"
            f"  {base}/setid.mat\n"
            f"  {base}/jpg/image_00001.jpg ... image_08189.jpg\n"
            f"To supply it, either download 102flowers.tgz, imagelabels.mat and setid.mat from "
            f"{FLOWERS102_URL} into {base}/ and extract the .tgz there (it creates jpg/), "
            f"or point data.root at an existing copy (e.g. data.root=/datasets/flowers102, or set MOBILEVIT_DATA_DIR to "
            f"the folder that holds flowers102/). "
            f"To try the framework without this dataset, run with experiment=quickstart."
        )

    def prepare_data(self) -> None:
        """Download the dataset if its files are missing (and ``download`` is enabled)."""
        if self.files_present():
            return
        if not self.download:
            raise UserInputError(self._missing_message("the files are missing and data.download=false."))
        try:
            Flowers102(str(self.root), split="train", download=True)
        except Exception as error:  # offline, HTTP error, bad checksum, disk full ...
            raise UserInputError(
                self._missing_message(f"the download failed ({type(error).__name__}: {error}).")
            ) from error

    @functools.cached_property
    def all_labels(self) -> np.ndarray:
        """Label (0..101) of every image; ``all_labels[id - 1]`` is image ``id``'s."""
        return self._read_mat("imagelabels.mat", "labels").astype(np.int64) - 1

    @functools.cached_property
    def split_image_ids(self) -> dict[str, np.ndarray]:
        """Image ids (1-based, as in the file names) of train, val and test under ``split_protocol``."""
        if self.split_protocol.startswith("official"):
            ids = {split: self._read_mat("setid.mat", key).astype(np.int64) for split, key in OFFICIAL_SET_IDS.items()}
            if self.split_protocol == "official_trainval":
                ids["train"] = np.concatenate([ids["train"], ids["val"]])
            return ids
        positions = stratified_split(self.all_labels, self.stratified_sizes, self.split_seed)
        return {split: positions[split] + 1 for split in SPLITS}

    def _read_mat(self, name: str, key: str) -> np.ndarray:
        if not self.files_present():
            raise UserInputError(self._missing_message("the files are missing (did prepare_data() run?)."))
        try:
            return np.asarray(loadmat(self.base_folder / name)[key]).reshape(-1)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserInputError(self._missing_message(f"{name} is unreadable or corrupted ({error}).")) from error

    def image_file(self, image_id: int) -> Path:
        return self.base_folder / "jpg" / f"image_{int(image_id):05d}.jpg"

    def image_files(self, split: str) -> list[Path]:
        return [self.image_file(image_id) for image_id in self.split_image_ids[self._check_split(split)]]

    def _samples(self, split: str) -> list[tuple[Path, int]]:
        """(file, label) of ``split``, without the unreadable files left out by ``skip_bad_images``."""
        labels = self.all_labels[self.split_image_ids[self._check_split(split)] - 1].tolist()
        return [(file, label) for file, label in zip(self.image_files(split), labels) if file not in self.bad_images]

    def _labels(self, split: str) -> list[int]:
        return [label for _, label in self._samples(split)]

    def _make_dataset(self, split: str, transform: Transform | None) -> ImageList:
        samples = self._samples(split)
        return ImageList([file for file, _ in samples], [label for _, label in samples], transform)

    def write_split(self, folder: str | Path) -> Path:
        """Write ``<folder>/split.json``: protocol, seed, sizes and image file names of every split."""
        files = {split: [self.image_file(i).name for i in ids] for split, ids in self.split_image_ids.items()}
        stratified = self.split_protocol == "stratified"
        return write_split_json(
            folder,
            files,
            dataset="flowers102",
            protocol=self.split_protocol,
            seed=self.split_seed if stratified else None,
        )

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.split_dir is not None and stage in ("fit", None) and distributed_replicas()[1] == 0:
            self.write_split(self.split_dir)
