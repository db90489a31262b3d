"""Reliability, bad and odd images in an image folder: odd ones load as upright RGB and train; unreadable ones are
found by a scan before training and stop the run with one message, or are skipped with data.skip_bad_images=true."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, upright_image
from PIL import Image, ImageFile

from mobilevit.data import ImageFolderDataModule, load_image, scan_images
from mobilevit.errors import UserInputError
from mobilevit.utils import exit_on_user_error
from train import train

BIG = 8000  # side of the very large image


def _write_odd_images(folder: Path) -> dict[str, tuple[int, int]]:
    """One readable image per odd case; returns file name -> expected (width, height) after loading."""
    folder.mkdir(parents=True, exist_ok=True)
    base = upright_image()
    base.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    base.convert("L").save(folder / "gray.png")
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(folder / "palette_transparent.png", transparency=0)
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    Image.fromarray((np.arange(48 * 32, dtype=np.uint32).reshape(32, 48) * 40).astype(np.uint16)).save(
        folder / "gray16.png"
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    base.transpose(Image.Transpose.ROTATE_90).save(folder / "exif_rotated.jpg", quality=95, exif=exif)
    Image.new("RGB", (1, 1), (200, 40, 40)).save(folder / "one_pixel.png")
    Image.new("RGB", (BIG, BIG), (40, 160, 40)).save(folder / "huge.jpg", quality=75)  # ~1 MB, decodes to 192 MB
    sizes = {name: (48, 32) for name in ("cmyk.jpg", "gray.png", "palette_transparent.png", "rgba.png", "gray16.png")}
    return {**sizes, "exif_rotated.jpg": (48, 32), "one_pixel.png": (1, 1), "huge.jpg": (BIG, BIG)}


def _write_bad_files(folder: Path) -> list[str]:
    """Unreadable files with image extensions, plus a non-image file; returns the unreadable names."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = folder / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, quality=90)
    data = buffer.read_bytes()
    buffer.unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) * 2 // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is a text file with a .jpg name\n")
    (folder / "notes.txt").write_text("not an image: left out, and logged")
    return ["empty.jpg", "text.jpg", "truncated.jpg"]


def _plain_images(folder: Path, colour: tuple[int, int, int], count: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (40, 40), tuple(max(0, c - 20 * index) for c in colour)).save(folder / f"{index}.png")


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int]]]:
    """``train/{odd,plain}``, ``val/{odd,plain}``: class ``odd`` holds every odd-but-readable image."""
    root = tmp_path_factory.mktemp("odd")
    sizes = _write_odd_images(root / "train" / "odd")
    _plain_images(root / "train" / "plain", (30, 30, 200))
    _plain_images(root / "val" / "odd", (200, 30, 30), count=2)
    _plain_images(root / "val" / "plain", (30, 30, 200), count=2)
    return root, sizes


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A small image folder with unreadable files in train/ and val/, and a notes.txt in a class folder."""
    root = tmp_path_factory.mktemp("bad")
    for split, count in (("train", 6), ("val", 2)):
        _plain_images(root / split / "red", (220, 40, 40), count)
        _plain_images(root / split / "blue", (40, 40, 220), count)
    bad = [f"train/red/{name}" for name in _write_bad_files(root / "train" / "red")]
    (root / "val" / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return root, [*bad, "val/blue/broken.png"]


@contextlib.contextmanager
def _decoded_sizes() -> Iterator[dict[str, tuple[int, int]]]:
    """File name -> (width, height) at which Pillow decoded each image loaded inside the block (the decode path)."""
    decoded: dict[str, tuple[int, int]] = {}
    real_load = ImageFile.ImageFile.load

    def load(image: ImageFile.ImageFile):
        decoded[Path(image.filename).name] = image.size
        return real_load(image)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", load)
        yield decoded


def _folder_cfg(make_cfg, root: Path, *extra: str):
    return make_cfg(
        [
            "data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
            "model=mobilevit_xxs", *FAST_TRAIN, "logger=none", "test=false", "callbacks.reports=null", *extra,
        ]
    )  # fmt: skip


def test_odd_images_load_as_upright_rgb(odd_dataset) -> None:
    root, sizes = odd_dataset
    for name, size in sizes.items():
        image = load_image(root / "train" / "odd" / name)
        assert image.mode == "RGB" and image.size == size, name
    rotated = np.asarray(load_image(root / "train" / "odd" / "exif_rotated.jpg")).astype(int)
    assert rotated[2, 2, 1] > 150 and rotated[2, 2, 0] < 100  # green block back at the top left: EXIF applied
    palette_file = root / "train" / "odd" / "palette_transparent.png"
    with Image.open(palette_file) as palette:
        see_through = np.asarray(palette) == palette.info["transparency"]  # pixels of the transparent index
    transparent = np.asarray(load_image(palette_file))
    assert transparent.shape == (32, 48, 3) and 0 < see_through.sum() < see_through.size
    assert (transparent[see_through] == 255).all()  # composited on white: exactly (255, 255, 255)
    assert not (transparent[~see_through] == 255).all(axis=-1).any()  # the other pixels keep their colours
    gray16 = np.asarray(load_image(root / "train" / "odd" / "gray16.png"))[..., 0].astype(int)
    assert gray16.max() > 200 and gray16.min() == 0  # 16-bit range scaled to 8 bits, not clipped


def test_odd_images_pass_the_scan_and_train(odd_dataset, make_cfg) -> None:
    root, sizes = odd_dataset
    with _decoded_sizes() as decoded:
        assert scan_images(sorted((root / "train" / "odd").iterdir()), threads=1) == {}
    assert decoded["huge.jpg"] == (BIG // 8, BIG // 8)  # the 8000x8000 JPEG is decoded at 1/8 scale (3 MB, not 192)
    cfg = _folder_cfg(make_cfg, root, "trainer.max_epochs=1", "augmentation=basic")
    metrics, objects = train(cfg)
    dataset = objects["datamodule"].dataset("train")
    assert sorted(Path(path).name for path, _ in dataset.samples if "/odd/" in path) == sorted(sizes)
    images = [dataset[index][0] for index in range(len(dataset))]
    assert all(image.shape == (3, 32, 32) and torch.isfinite(image).all() for image in images)
    assert objects["trainer"].global_step == 3 and np.isfinite(metrics["train/loss"])  # 12 images, batches of 4


def test_bad_images_stop_before_training_with_one_message(bad_dataset, make_cfg, capsys) -> None:
    root, bad = bad_dataset
    cfg = _folder_cfg(make_cfg, root, "trainer.max_epochs=1")
    with pytest.raises(UserInputError) as error:
        train(cfg)
    message = str(error.value)
    assert message.startswith(f"{len(bad)} unreadable image files under data.root={root}")
    assert "data.skip_bad_images=true" in message
    for name in bad:
        assert name in message
    assert "image file is truncated" in message and "empty file (0 bytes)" in message
    assert "notes.txt" not in message  # not an image file: logged, never an error
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # stopped before the first training step
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        train(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: 4 unreadable image files") and "Traceback" not in err


def test_skip_bad_images_trains_without_them_and_logs_which(bad_dataset, make_cfg, caplog) -> None:
    root, bad = bad_dataset
    cfg = _folder_cfg(make_cfg, root, "data.skip_bad_images=true", "+trainer.fast_dev_run=1")
    with caplog.at_level(logging.INFO, logger="mobilevit.data"):
        _, objects = train(cfg)
    log = caplog.text
    assert f"data.skip_bad_images=true: leaving out {len(bad)} unreadable image files" in log
    assert all(name in log for name in bad)
    assert "Left out 1 file without an image extension" in log and "train/red/notes.txt" in log
    datamodule = objects["datamodule"]
    kept = {
        str(Path(path).relative_to(root)) for split in ("train", "val") for path, _ in datamodule.dataset(split).samples
    }
    assert not kept & set(bad) and len(kept) == 16  # 6 + 6 train, 2 + 2 val
    assert objects["trainer"].global_step == 1


def test_scan_finds_every_kind_of_bad_file_quickly(bad_dataset, odd_dataset) -> None:
    """The scan of the bad set plus the odd set (the 8000x8000 JPEG included) lists exactly the unreadable files."""
    bad_root, bad = bad_dataset
    odd_root, _ = odd_dataset
    files = sorted(path for root in (bad_root, odd_root) for path in root.rglob("*.*") if path.suffix != ".txt")
    with _decoded_sizes() as decoded:
        found = scan_images(files, threads=1)
    assert sorted(str(path.relative_to(bad_root)) for path in found) == sorted(bad)
    assert decoded["huge.jpg"] == (BIG // 8, BIG // 8) and decoded["cmyk.jpg"] == (6, 4)  # JPEGs: 1/8 scale
    dm = ImageFolderDataModule(bad_root, image_size=32, num_workers=0, skip_bad_images=True)
    assert dm.class_counts().tolist() == [6, 6 + 3]  # blue, red; before the scan: labels only, bad files counted
    dm.check_images()
    assert dm.class_counts().tolist() == [6, 6]  # the 3 unreadable red files are left out
