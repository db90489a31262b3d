"""mobilevit/data/synthetic.py: the synthetic shapes dataset is generated once, deterministically, refuses to
overwrite a foreign folder, loads and is scanned like an image folder, and is learnable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import synthetic_datamodule
from PIL import Image

from mobilevit.data import SyntheticDataModule
from mobilevit.data.synthetic import MANIFEST_NAME
from mobilevit.errors import UserInputError


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic") / "data"


def test_synthetic_generates_files_and_loads(synthetic_root: Path) -> None:
    dm = synthetic_datamodule(synthetic_root)
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
    synthetic_datamodule(synthetic_root).prepare_data()  # idempotent with the module test above
    marker = synthetic_root / "train" / "marker.txt"
    marker.write_text("kept if not regenerated")
    manifest_mtime = (synthetic_root / MANIFEST_NAME).stat().st_mtime_ns
    synthetic_datamodule(synthetic_root).prepare_data()
    assert marker.exists() and (synthetic_root / MANIFEST_NAME).stat().st_mtime_ns == manifest_mtime

    # Different arguments -> regenerated from scratch.
    synthetic_datamodule(synthetic_root, seed=1, train_per_class=3).prepare_data()
    assert not marker.exists()
    assert len(list((synthetic_root / "train").rglob("*.jpg"))) == 12

    # A generation that crashed (no manifest; partial files) is redone.
    (synthetic_root / MANIFEST_NAME).unlink()
    next((synthetic_root / "val").rglob("*.jpg")).unlink()
    synthetic_datamodule(synthetic_root).prepare_data()
    assert (synthetic_root / MANIFEST_NAME).exists()
    assert len(list((synthetic_root / "train").rglob("*.jpg"))) == 24


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    synthetic_datamodule(tmp_path / "a", num_classes=2).prepare_data()
    synthetic_datamodule(tmp_path / "b", num_classes=2).prepare_data()
    for file_a in (tmp_path / "a").rglob("*.jpg"):
        assert file_a.read_bytes() == (tmp_path / "b" / file_a.relative_to(tmp_path / "a")).read_bytes()


def test_synthetic_refuses_foreign_folder_and_bad_args(tmp_path: Path) -> None:
    (tmp_path / "train" / "cats").mkdir(parents=True)
    with pytest.raises(UserInputError, match="refusing to overwrite"):
        synthetic_datamodule(tmp_path).prepare_data()
    assert (tmp_path / "train" / "cats").is_dir()
    with pytest.raises(UserInputError, match="data.num_classes"):
        SyntheticDataModule(tmp_path / "x", num_classes=11)


def test_synthetic_is_learnable(tmp_path: Path) -> None:
    """A tiny CNN trained for a few seconds beats chance by far on held-out data."""
    torch.manual_seed(0)
    dm = synthetic_datamodule(tmp_path, num_classes=6, train_per_class=40, val_per_class=10, batch_size=20)
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


def test_synthetic_data_is_scanned_like_an_image_folder(tmp_path: Path) -> None:
    from mobilevit.data import SyntheticDataModule

    data = SyntheticDataModule(tmp_path, num_classes=2, train_per_class=2, val_per_class=1, test_per_class=1,
                               source_size=32, image_size=32)  # fmt: skip
    data.prepare_data()
    (tmp_path / "train" / data.class_names[0] / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    with pytest.raises(UserInputError, match=r"(?s)1 unreadable image file .*train/circle/cut\.jpg"):
        data.setup("fit")
