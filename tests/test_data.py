"""mobilevit/data as a whole: the Hydra data configs instantiate their data modules, and the loaders of
data/base.py (class counts without decoding, workers inside a joblib worker). Each data module has its own file:
test_synthetic.py, test_imagefolder.py, test_flowers102.py (and test_splits.py); the transforms are in
test_transforms.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import check_image_tensor as _check_image_tensor
from helpers import make_image_folder as _make_image_folder
from helpers import synthetic_datamodule as _synthetic
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from mobilevit.data import (
    Flowers102DataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
    Augmentation,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"


def test_class_counts_from_labels_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_image_folder(tmp_path / "folder", {"train": ["a", "b", "c"], "val": ["a"]}, per_class=3)
    (tmp_path / "folder" / "train" / "b" / "img0.png").unlink()
    synthetic = _synthetic(tmp_path / "synthetic", num_classes=3, train_per_class=4)
    synthetic.prepare_data()

    def no_decoding(*args, **kwargs):
        raise AssertionError("class_counts() decoded an image")

    monkeypatch.setattr("torchvision.datasets.folder.pil_loader", no_decoding)
    folder = ImageFolderDataModule(tmp_path / "folder", num_workers=0)
    counts = folder.class_counts()
    assert counts.dtype == torch.int64 and counts.tolist() == [3, 2, 3]
    assert synthetic.class_counts().tolist() == [4, 4, 4]
    multiscale = ImageFolderDataModule(tmp_path / "folder", num_workers=0, multiscale=True, image_size=32)
    assert multiscale.class_counts().tolist() == [3, 2, 3]  # through the multi-scale dataset wrapper


# ----------------------------------------------------------------------------- configs


def _option(group: str, name: str):
    """configs/<group>/<name>.yaml after its own defaults list (e.g. data/shared/loader), as Hydra composes it."""
    node = OmegaConf.load(CONFIGS / group / f"{name}.yaml")
    defaults = node.pop("defaults", [])
    parts = [_option(group, entry.split("@")[0]) for entry in defaults if entry != "_self_"]
    return OmegaConf.merge(*parts, node)


def _config(data: str, augmentation: str, data_dir: Path, **data_overrides):
    cfg = OmegaConf.create(
        {
            "paths": {"data_dir": str(data_dir), "output_dir": str(data_dir / "run")},
            "data": _option("data", data),
            "augmentation": _option("augmentation", augmentation),
        }
    )
    cfg.data.merge_with(data_overrides)
    return cfg


@pytest.mark.parametrize("augmentation", ["none", "basic", "crop_flip_jitter", "strong", "crop_flip_trivialaugment"])
def test_configs_instantiate(tmp_path: Path, augmentation: str) -> None:
    cfg = _config("synthetic", augmentation, tmp_path, num_workers=0)
    preset = instantiate(cfg.augmentation)
    built = preset(cfg.data.image_size)
    assert isinstance(built, Augmentation)
    _check_image_tensor(built(Image.new("RGB", (70, 90))), cfg.data.image_size)
    # Only a preset that mixes has a batch transform (crop_flip_trivialaugment never mixes: no one-hot collate).
    assert (built.batch is not None) == (augmentation == "strong")
    if augmentation == "crop_flip_trivialaugment":  # the strong preset without erasing or mixing
        assert cfg.augmentation.scale == [0.25, 1.0] and cfg.augmentation.mix_prob == 0
        assert cfg.augmentation.random_erase_prob == 0 and cfg.augmentation.auto_augment == "trivialaugment"
    dm = instantiate(cfg.data, augmentation=preset)
    assert isinstance(dm, SyntheticDataModule) and dm.augmentation is preset
    _check_image_tensor(dm.train_transform(48)(Image.new("RGB", (70, 90))), 48)
    assert dm.root == tmp_path / "synthetic" and dm.num_classes == 6
    assert not dm.multiscale and dm.shuffle_seed == 0  # no root `seed` key here

    flowers = instantiate(_config("flowers102", augmentation, tmp_path).data)
    assert isinstance(flowers, Flowers102DataModule)
    assert flowers.root == tmp_path / "flowers102" and flowers.image_size == 256 and flowers.download
    assert flowers.split == "test" and flowers.crop_pct == 0.9 and flowers.batch_size == 64
    assert flowers.split_protocol == "official" and flowers.split_seed == 0
    assert flowers.stratified_sizes == {"train": 6500, "val": 689, "test": 1000}
    assert flowers.split_dir == tmp_path / "run"
    # The dataset config sets no schedule (the recipe's, in train.yaml): alone it builds one size.
    assert flowers.resolution_schedule is None and not flowers.reloads_train_dataloader
    assert flowers.size_plan.schedule_batch == "fixed"

    folder_cfg = _config("imagefolder", augmentation, tmp_path)
    assert OmegaConf.is_missing(folder_cfg.data, "root")
    _make_image_folder(tmp_path / "mine", {"train": ["x", "y"], "val": ["x", "y"]})
    folder_cfg.data.root = str(tmp_path / "mine")
    assert instantiate(folder_cfg.data).class_names == ["x", "y"]


def test_data_configs_multiscale_keys(tmp_path: Path) -> None:
    """The multi-scale keys of every data yaml reach the module; the seed follows the run's ``seed``."""
    _make_image_folder(tmp_path / "mine", {"train": ["x", "y"], "val": ["x", "y"]})
    for data in ("flowers102", "imagefolder", "synthetic"):
        cfg = _config(data, "basic", tmp_path, multiscale=True, root=str(tmp_path / "mine"))
        cfg.seed = 7
        dm = instantiate(cfg.data, augmentation=instantiate(cfg.augmentation))
        assert dm.multiscale and dm.shuffle_seed == 7
        factors = [0.625, 0.75, 1.0, 1.125, 1.25]
        expected = sorted({max(32, int(f * dm.image_size / 32 + 0.5) * 32) for f in factors})
        assert dm.multiscale_sizes == expected
        cfg.data.multiscale_sizes = [96, 64]
        assert instantiate(cfg.data).multiscale_sizes == [64, 96]


def _first_batch_shape(root: Path, cache_images: bool) -> list[int]:
    dm = _synthetic(root, num_workers=1, cache_images=cache_images)
    dm.prepare_data()
    dm.setup("fit")
    return list(next(iter(dm.train_dataloader()))[0].shape)


@pytest.mark.parametrize("cache_images", [False, True])
def test_loader_workers_start_inside_a_joblib_worker(tmp_path: Path, cache_images: bool) -> None:
    """Hydra's joblib launcher runs each job in a loky process, whose default start method ('loky') DataLoader
    workers cannot start with: the loaders use the platform's own default there."""
    from joblib import Parallel, delayed

    _synthetic(tmp_path).prepare_data()  # the files, written once
    jobs = Parallel(n_jobs=2, backend="loky")  # with n_jobs=1 joblib runs the job in this process
    shapes = jobs(delayed(_first_batch_shape)(tmp_path, cache_images) for _ in range(2))
    assert shapes == [[5, 3, 32, 32]] * 2
