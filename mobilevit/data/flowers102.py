"""Oxford Flowers-102 data module with the official train/val/test splits."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import Flowers102

from mobilevit.data.base import ImageClassificationDataModule, Transform
from mobilevit.errors import UserInputError

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


class Flowers102DataModule(ImageClassificationDataModule):
    """Oxford Flowers-102 (102 classes; official splits train 1020 / val 1020 / test 6149),
    read with ``torchvision.datasets.Flowers102`` from ``<root>/flowers-102/``.

    Args:
        root: folder that contains ``flowers-102/``.
        download: download the dataset in ``prepare_data()`` when it is missing.
        Other arguments: see :class:`ImageClassificationDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        download: bool = True,
        image_size: int = 256,
        batch_size: int = 64,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        split: str = "test",
        crop_pct: float = 0.9,
        train_transform: Transform | None = None,
    ) -> None:
        super().__init__(
            root,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            split=split,
            crop_pct=crop_pct,
            train_transform=train_transform,
        )
        self.download = bool(download)
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
            f"or point data.root at an existing copy (e.g. data.root=../shared/flowers102). "
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

    def _make_dataset(self, split: str, transform: Transform) -> Flowers102:
        if not self.files_present():
            raise UserInputError(self._missing_message("the files are missing (did prepare_data() run?)."))
        try:
            return Flowers102(str(self.root), split=split, transform=transform, download=False)
        except RuntimeError as error:  # torchvision's checksum check of the .mat files failed
            raise UserInputError(
                self._missing_message(f"imagelabels.mat or setid.mat is corrupted ({error}).")
            ) from error
