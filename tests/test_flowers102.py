"""mobilevit/data/flowers102.py: the Flowers-102 data module without the files, with a failed or a mocked download,
on the real copy, and on a small look-alike copy with a rotated and a truncated image (scanned and read like every
dataset). The split protocols are in test_splits.py."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.flowers102 as tv_flowers102
from conftest import FLOWERS_ROOT, upright_image
from PIL import Image

from mobilevit.data import FLOWERS102_CLASSES, Flowers102DataModule, load_image
from mobilevit.errors import UserInputError

SHARED_FLOWERS = FLOWERS_ROOT


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


# -- read and scanned like every dataset (test_reliability_images.py tests the image folder) --


@pytest.fixture
def flowers_copy(tmp_path: Path) -> Path:
    """A 6-image Flowers-102 look-alike (official split 3/2/1) whose image 1 is EXIF-rotated and image 3 truncated."""
    from scipy.io import savemat

    base = tmp_path / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    for image_id in range(1, 7):
        upright_image().save(base / "jpg" / f"image_{image_id:05d}.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright_image().transpose(Image.Transpose.ROTATE_90).save(base / "jpg" / "image_00001.jpg", quality=95, exif=exif)
    truncated = base / "jpg" / "image_00003.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 1, 2, 2, 3, 3]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 3, 5]]), "valid": np.array([[2, 4]]), "tstid": np.array([[6]])})
    return tmp_path


def test_flowers102_copy_is_scanned_before_training(flowers_copy: Path) -> None:
    from mobilevit.data import Flowers102DataModule

    data = Flowers102DataModule(flowers_copy, download=False, image_size=32, batch_size=2, num_workers=0)
    with pytest.raises(UserInputError) as error:
        data.setup("fit")
    message = str(error.value)
    assert message.startswith(f"1 unreadable image file under data.root={flowers_copy}")
    assert "\n  flowers-102/jpg/image_00003.jpg: OSError: " in message
    assert "data.skip_bad_images=true" in message


def test_flowers102_reads_like_every_dataset_and_skips_bad_images(flowers_copy: Path, caplog) -> None:
    from mobilevit.data import Flowers102DataModule

    data = Flowers102DataModule(flowers_copy, download=False, image_size=32, batch_size=2, num_workers=0,
                                skip_bad_images=True)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mobilevit.data"):
        data.setup("fit")
    assert "leaving out 1 unreadable image file" in caplog.text and "image_00003.jpg" in caplog.text
    train_set = data.dataset("train")
    assert [path.name for path in train_set.files] == ["image_00001.jpg", "image_00005.jpg"]
    assert data.class_counts().tolist()[:3] == [1, 0, 1]  # the truncated image (class 2) is not counted
    raw = data._make_dataset("train", None)[0][0]  # the EXIF-rotated file, as the dataset reads it
    assert np.array_equal(np.asarray(raw), np.asarray(load_image(train_set.files[0])))
    assert raw.size == (48, 32) and np.asarray(raw)[2, 2, 1] > 150  # upright: the green block is at the top left
