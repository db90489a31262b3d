"""Tests for mobilevit.data: transforms, data modules and their Hydra configs (offline, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

import torchvision.datasets.flowers102 as tv_flowers102
from mobilevit.data import (
    FLOWERS102_CLASSES,
    Flowers102DataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
    Augmentation,
    basic_augmentation,
    eval_transform,
    no_augmentation,
    seed_augmentation,
    strong_augmentation,
)
from conftest import FLOWERS_ROOT
from mobilevit.data.synthetic import MANIFEST_NAME
from mobilevit.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
SHARED_FLOWERS = FLOWERS_ROOT


def _pil_images() -> dict[str, Image.Image]:
    return {
        "RGB": Image.new("RGB", (80, 50), (255, 0, 0)),
        "L": Image.new("L", (50, 80), 128),
        "RGBA": Image.new("RGBA", (60, 60), (0, 0, 255, 100)),
        "CMYK": Image.new("CMYK", (40, 70), (0, 255, 0, 0)),
        "P": Image.new("RGB", (45, 45), (0, 200, 0)).convert("P"),
    }


def _check_image_tensor(x: torch.Tensor, size: int) -> None:
    assert type(x) is torch.Tensor  # plain tensor, not a tv_tensors subclass
    assert x.shape == (3, size, size)
    assert x.dtype == torch.float32
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0


@pytest.mark.parametrize(
    "make_transform",
    [
        lambda: eval_transform(32),
        lambda: no_augmentation(32, crop_pct=0.875),
        lambda: basic_augmentation(32),
        lambda: basic_augmentation(32, scale=[0.5, 1.0], hflip_prob=1.0),
        lambda: seed_augmentation(32),
        lambda: strong_augmentation(32),
        lambda: strong_augmentation(32, auto_augment="randaugment", random_erase_prob=1.0),
    ],
    ids=["eval", "none", "basic", "basic-custom", "seed", "strong", "strong-randaugment"],
)
def test_transforms_shape_dtype_range(make_transform) -> None:
    transform = make_transform()
    for image in _pil_images().values():
        out = transform(image)
        _check_image_tensor(out, 32)
    # uint8 tensors, RGB and single channel
    _check_image_tensor(transform(torch.randint(0, 256, (3, 40, 70), dtype=torch.uint8)), 32)
    _check_image_tensor(transform(torch.randint(0, 256, (1, 50, 50), dtype=torch.uint8)), 32)


def test_eval_transform_resizes_then_center_crops() -> None:
    # Left half black, right half white: center crop of a wide image must contain both.
    image = Image.new("L", (200, 100), 0)
    image.paste(255, (100, 0, 200, 100))
    out = eval_transform(64, crop_pct=0.5)(image)  # resize shorter side to 128, crop 64
    assert out[:, :, :20].max() < 0.05 and out[:, :, -20:].min() > 0.95
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])  # gray -> RGB copies
    # Deterministic, and identical to the `none` preset.
    torch.testing.assert_close(out, no_augmentation(64, crop_pct=0.5)(image))


def test_basic_augmentation_flips() -> None:
    image = Image.new("L", (64, 64), 0)
    image.paste(255, (0, 0, 32, 64))  # white left half
    flipped = basic_augmentation(64, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=1.0)(image)
    assert flipped[:, :, :30].max() < 0.05 and flipped[:, :, -30:].min() > 0.95


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": 32, "scale": (0.9, 0.1)}, "augmentation.scale"),
        ({"image_size": 32, "hflip_prob": 2.0}, "augmentation.hflip_prob"),
    ],
)
def test_basic_augmentation_rejects_bad_args(kwargs, text) -> None:
    with pytest.raises(UserInputError, match=text):
        basic_augmentation(**kwargs)


def test_eval_transform_rejects_bad_crop_pct() -> None:
    with pytest.raises(UserInputError, match="crop_pct"):
        eval_transform(32, crop_pct=1.5)


# ----------------------------------------------------------------------------- synthetic


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic") / "data"


def _synthetic(root: Path, **kwargs) -> SyntheticDataModule:
    args = dict(num_classes=4, train_per_class=6, val_per_class=3, test_per_class=2, source_size=48)
    args.update(image_size=32, batch_size=5, num_workers=0)
    args.update(kwargs)
    return SyntheticDataModule(root, **args)


def test_synthetic_generates_files_and_loads(synthetic_root: Path) -> None:
    dm = _synthetic(synthetic_root)
    assert dm.num_classes == 4 and dm.class_names == sorted(dm.class_names)
    assert not synthetic_root.exists()  # nothing written before prepare_data
    dm.prepare_data()
    manifest = json.loads((synthetic_root / MANIFEST_NAME).read_text())
    assert manifest["classes"] == dm.class_names
    for split, per_class in (("train", 6), ("val", 3), ("test", 2)):
        for name in dm.class_names:
            files = sorted((synthetic_root / split / name).glob("*.jpg"))
            assert len(files) == per_class
            with Image.open(files[0]) as image:
                assert image.size == (48, 48) and image.mode == "RGB"

    dm.setup("fit")
    dm.setup("test")
    assert len(dm.dataset("train")) == 24 and len(dm.dataset("val")) == 12 and len(dm.dataset("test")) == 8
    labels = []
    for x, y in dm.train_dataloader():
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        labels.append(y)
    assert torch.cat(labels).bincount().tolist() == [6, 6, 6, 6]
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (5, 3, 32, 32) and y.dtype == torch.int64
    # Labels follow class_names: the file's folder is its class.
    test_set = dm.dataset("test")
    for path, label in test_set.samples:
        assert Path(path).parent.name == dm.class_names[label]


def test_synthetic_skips_regeneration_and_redoes_on_change(synthetic_root: Path) -> None:
    _synthetic(synthetic_root).prepare_data()  # idempotent with the module test above
    marker = synthetic_root / "train" / "marker.txt"
    marker.write_text("kept if not regenerated")
    manifest_mtime = (synthetic_root / MANIFEST_NAME).stat().st_mtime_ns
    _synthetic(synthetic_root).prepare_data()
    assert marker.exists() and (synthetic_root / MANIFEST_NAME).stat().st_mtime_ns == manifest_mtime

    # Different arguments -> regenerated from scratch.
    _synthetic(synthetic_root, seed=1, train_per_class=3).prepare_data()
    assert not marker.exists()
    assert len(list((synthetic_root / "train").rglob("*.jpg"))) == 12

    # A generation that crashed (no manifest; partial files) is redone.
    (synthetic_root / MANIFEST_NAME).unlink()
    next((synthetic_root / "val").rglob("*.jpg")).unlink()
    _synthetic(synthetic_root).prepare_data()
    assert (synthetic_root / MANIFEST_NAME).exists()
    assert len(list((synthetic_root / "train").rglob("*.jpg"))) == 24


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    _synthetic(tmp_path / "a", num_classes=2).prepare_data()
    _synthetic(tmp_path / "b", num_classes=2).prepare_data()
    for file_a in (tmp_path / "a").rglob("*.jpg"):
        assert file_a.read_bytes() == (tmp_path / "b" / file_a.relative_to(tmp_path / "a")).read_bytes()


def test_synthetic_refuses_foreign_folder_and_bad_args(tmp_path: Path) -> None:
    (tmp_path / "train" / "cats").mkdir(parents=True)
    with pytest.raises(UserInputError, match="refusing to overwrite"):
        _synthetic(tmp_path).prepare_data()
    assert (tmp_path / "train" / "cats").is_dir()
    with pytest.raises(UserInputError, match="data.num_classes"):
        SyntheticDataModule(tmp_path / "x", num_classes=11)


def test_synthetic_is_learnable(tmp_path: Path) -> None:
    """A tiny CNN trained for a few seconds beats chance by far on held-out data."""
    torch.manual_seed(0)
    dm = _synthetic(tmp_path, num_classes=6, train_per_class=40, val_per_class=10, batch_size=20)
    dm.prepare_data()
    dm.setup("fit")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 6),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threading only adds contention on a busy CPU
    try:
        for _ in range(8):
            for x, y in dm.train_dataloader():
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(net(x), y).backward()
                optimizer.step()
        correct = total = 0
        with torch.no_grad():
            for x, y in dm.val_dataloader():
                correct += (net(x).argmax(1) == y).sum().item()
                total += len(y)
    finally:
        torch.set_num_threads(threads)
    assert correct / total > 0.6  # chance is 1/6


# ----------------------------------------------------------------------------- image folder


def _make_image_folder(root: Path, splits: dict[str, list[str]], per_class: int = 2) -> None:
    for split, classes in splits.items():
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                mode = ("RGB", "L", "RGBA")[k % 3]
                Image.new(mode, (40 + 8 * k, 36), 30 * index).save(folder / f"img{k}.png")


def test_imagefolder_loads_and_keeps_train_label_order(tmp_path: Path) -> None:
    # val lacks "b": its labels must still follow train's numbering.
    _make_image_folder(tmp_path, {"train": ["a", "b", "c"], "val": ["a", "c"], "test": ["c"]}, per_class=3)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    dm = ImageFolderDataModule(tmp_path, image_size=32, batch_size=4, num_workers=0, split="val")
    assert dm.class_names == ["a", "b", "c"] and dm.num_classes == 3
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert sorted(label for _, label in dm.dataset("val").samples) == [0, 0, 0, 2, 2, 2]
    assert {label for _, label in dm.dataset("test").samples} == {2}
    assert len(dm.test_dataloader().dataset) == 6  # split="val" serves val


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


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not a folder"):
        ImageFolderDataModule(tmp_path / "nope")

    _make_image_folder(tmp_path / "no_val", {"train": ["a", "b"]})
    with pytest.raises(UserInputError, match=r"Missing val folder .*no_val.*val"):
        ImageFolderDataModule(tmp_path / "no_val")

    _make_image_folder(tmp_path / "extra", {"train": ["a", "b"], "val": ["a", "b", "zebra"]})
    with pytest.raises(UserInputError, match=r"lacks: \['zebra'\]"):
        ImageFolderDataModule(tmp_path / "extra")

    _make_image_folder(tmp_path / "no_test", {"train": ["a", "b"], "val": ["a", "b"]})
    dm = ImageFolderDataModule(tmp_path / "no_test", image_size=32, num_workers=0)  # split=test
    dm.setup("fit")  # training works without test/
    expected = r"No test split.*no_test.*data.split=val.*'train', 'val', 'test'"
    with pytest.raises(UserInputError, match=expected):
        dm.setup("test")
    with pytest.raises(UserInputError, match="data.split must be one of"):
        ImageFolderDataModule(tmp_path / "no_test", split="train")
    with pytest.raises(UserInputError, match="Unknown split"):
        dm.dataloader("holdout")

    _make_image_folder(tmp_path / "empty_class", {"train": ["a", "b"], "val": ["a"]})
    for image in (tmp_path / "empty_class" / "train" / "b").iterdir():
        image.unlink()
    with pytest.raises(UserInputError, match="Could not read the train images"):
        ImageFolderDataModule(tmp_path / "empty_class", num_workers=0).setup("fit")


# ----------------------------------------------------------------------------- flowers102


def test_flowers102_missing_without_download(tmp_path: Path) -> None:
    dm = Flowers102DataModule(tmp_path, download=False, image_size=32, num_workers=0)
    assert dm.num_classes == 102 and dm.class_names[0] == "pink primrose"
    with pytest.raises(UserInputError) as info:
        dm.prepare_data()
    message = str(info.value)
    for text in ("imagelabels.mat", "setid.mat", "jpg/", "data.root=/datasets/flowers102", "MOBILEVIT_DATA_DIR",
                 "experiment=quickstart", "download=false", "robots.ox.ac.uk"):  # fmt: skip
        assert text in message
    with pytest.raises(UserInputError, match="imagelabels.mat"):
        dm.setup("fit")


def test_flowers102_offline_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_flowers102, "download_and_extract_archive", offline)
    monkeypatch.setattr(tv_flowers102, "download_url", offline)
    dm = Flowers102DataModule(tmp_path / "flowers", download=True, num_workers=0)
    with pytest.raises(UserInputError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "download failed" in message and "name resolution" in message
    assert "flowers-102/setid.mat" in message and "experiment=quickstart" in message


def test_flowers102_class_names_match_torchvision() -> None:
    assert len(FLOWERS102_CLASSES) == 102 and len(set(FLOWERS102_CLASSES)) == 102
    reference = getattr(tv_flowers102.Flowers102, "classes", None)
    if reference is None:
        pytest.skip("this torchvision has no Flowers102.classes to compare with")
    assert list(FLOWERS102_CLASSES) == list(reference)


@pytest.mark.skipif(
    not SHARED_FLOWERS.is_dir(), reason=f"real Flowers-102 copy not found at {SHARED_FLOWERS}"
)
def test_flowers102_real_official_splits() -> None:
    dm = Flowers102DataModule(SHARED_FLOWERS, download=False, image_size=32, batch_size=4, num_workers=0)
    dm.prepare_data()  # files present: no download attempted
    dm.setup()
    sizes = {split: len(dm.dataset(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 1020, "val": 1020, "test": 6149}
    assert len(dm.class_names) == 102
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.max() < 102


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
    assert not dm.multiscale and dm.multiscale_seed == 0  # no root `seed` key here

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
        assert dm.multiscale and dm.multiscale_seed == 7
        factors = [0.625, 0.75, 1.0, 1.125, 1.25]
        expected = sorted({max(32, int(f * dm.image_size / 32 + 0.5) * 32) for f in factors})
        assert dm.multiscale_sizes == expected
        cfg.data.multiscale_sizes = [96, 64]
        assert instantiate(cfg.data).multiscale_sizes == [64, 96]


def test_flowers102_mocked_download_lands_in_the_documented_layout(tmp_path: Path, monkeypatch) -> None:
    """prepare_data() with a successful (mocked, offline) download: the archive and the two .mat files land in
    <root>/flowers-102/ as the error message documents, and the data module reads them."""
    import numpy as np
    from PIL import Image
    from scipy.io import savemat

    requested: list[str] = []

    def fake_archive(url: str, download_root: str, **kwargs) -> None:  # 102flowers.tgz extracts to jpg/
        requested.append(url)
        (Path(download_root) / "jpg").mkdir(parents=True)
        for image_id in range(1, 7):
            Image.new("RGB", (40, 30), (40 * image_id, 0, 0)).save(Path(download_root) / "jpg" / f"image_{image_id:05d}.jpg")

    def fake_url(url: str, root: str, **kwargs) -> None:
        requested.append(url)
        name = url.rsplit("/", 1)[-1]
        arrays = {"imagelabels.mat": {"labels": np.array([[1, 1, 2, 2, 3, 3]])},
                  "setid.mat": {"trnid": np.array([[1, 3, 5]]), "valid": np.array([[2, 4]]), "tstid": np.array([[6]])}}
        savemat(Path(root) / name, arrays[name])

    monkeypatch.setattr(tv_flowers102, "download_and_extract_archive", fake_archive)
    monkeypatch.setattr(tv_flowers102, "download_url", fake_url)
    monkeypatch.setattr(tv_flowers102, "check_integrity", lambda path, md5=None: Path(path).is_file())  # no md5
    dm = Flowers102DataModule(tmp_path / "data", download=True, image_size=32, batch_size=2, num_workers=0)
    dm.prepare_data()
    base = tmp_path / "data" / "flowers-102"
    assert sorted(url.rsplit("/", 1)[-1] for url in requested) == ["102flowers.tgz", "imagelabels.mat", "setid.mat"]
    assert (base / "imagelabels.mat").is_file() and (base / "setid.mat").is_file()
    assert (base / "jpg" / "image_00001.jpg").is_file() and dm.files_present()
    message = dm._missing_message("example")  # the layout the error message documents
    assert all(str(base.resolve() / name) in message for name in ("imagelabels.mat", "setid.mat", "jpg/image_00001.jpg"))
    dm.setup("fit")
    assert len(dm.dataset("train")) == 3 and len(dm.dataset("val")) == 2
    dm.prepare_data()  # present now: nothing downloaded again
    assert len(requested) == 3


def _first_batch_shape(root: Path, cache_images: bool) -> list[int]:
    dm = _synthetic(root, num_workers=1, cache_images=cache_images)
    dm.prepare_data()
    dm.setup("fit")
    return list(next(iter(dm.train_dataloader()))[0].shape)


@pytest.mark.parametrize("cache_images", [False, True])
def test_loader_workers_start_inside_a_joblib_worker(synthetic_root: Path, cache_images: bool) -> None:
    """Hydra's joblib launcher runs each job in a loky process, whose default start method ('loky') DataLoader
    workers cannot start with: the loaders use the platform's own default there."""
    from joblib import Parallel, delayed

    _synthetic(synthetic_root).prepare_data()  # the files, written once
    jobs = Parallel(n_jobs=2, backend="loky")  # with n_jobs=1 joblib runs the job in this process
    shapes = jobs(delayed(_first_batch_shape)(synthetic_root, cache_images) for _ in range(2))
    assert shapes == [[5, 3, 32, 32]] * 2
