"""Reliability, inputs from real-world reports (round 2): a checkpoint meeting data with other class names, a file that
breaks after the scan, names that are not UTF-8, symlinked folders given to predict. The scan that decodes like the
loader and the JPEGs above Pillow's decompression-bomb limit are tested in test_images.py."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, TINY_SYNTHETIC, compose_config, user_error
from helpers import damaged_png
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mobilevit.data import ImageFolderDataModule
from mobilevit.data.images import UnreadableImageError
from mobilevit.predict import find_images, predict
from evaluate import evaluate
from train import train

CLASSES = ("apple", "banana", "cherry")


def _plain_images(folder: Path, colour: tuple[int, int, int], count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (40, 40), tuple(max(0, c - 25 * index) for c in colour)).save(folder / f"{index}.png")


def _fruit_folder(root: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    colours = [(220, 40, 40), (230, 210, 40), (120, 20, 60)]
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for name, colour in zip(classes, colours, strict=True):
            _plain_images(root / split / name, colour, count)
    return root


def _folder_overrides(root: Path) -> list[str]:
    return [
        "data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
        "model=mobilevit_xxs", *FAST_TRAIN, "logger=none", "callbacks.reports=null",
    ]  # fmt: skip


# -- item 2: the class list of a checkpoint against the data it meets ------------------------------------------------


@pytest.fixture(scope="module")
def fruit_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint trained on apple/banana/cherry, a copy of that data with apple/ renamed to zucchini/)."""
    base = tmp_path_factory.mktemp("fruit")
    root = _fruit_folder(base / "fruit")
    cfg = compose_config(
        "train", base, [*_folder_overrides(root), "trainer.max_epochs=1", "test=false"], data_dir=base / "data"
    )
    _, objects = train(cfg)
    renamed = base / "renamed"
    shutil.copytree(root, renamed)
    for split in ("train", "val", "test"):
        (renamed / split / "apple").rename(renamed / split / "zucchini")
    return Path(objects["best_ckpt"]), renamed


def test_other_class_names_with_the_same_count_are_refused_or_get_a_new_head(
    fruit_checkpoint, make_cfg, caplog
) -> None:
    """evaluate.py and a resumed train.py refuse data whose class names differ (same count) in one line listing the
    differences; fine-tuning from the checkpoint re-initialises the classifier instead of reusing apple's row."""
    ckpt, renamed = fruit_checkpoint
    differences = "only in the data: ['zucchini']; only in the weights: ['apple']"
    message = user_error(evaluate, make_cfg([f"ckpt_path={ckpt}", f"data.root={renamed}"], config_name="eval"))
    assert differences in message and "\n" not in message
    resume = make_cfg([*_folder_overrides(renamed), "trainer.max_epochs=2", "test=false", f"ckpt_path={ckpt}"])
    message = user_error(train, resume)
    assert differences in message and "model.pretrained=" in message
    with caplog.at_level(logging.INFO, logger="mobilevit.models.pretrained"):
        _, objects = train(
            make_cfg([*_folder_overrides(renamed), f"model.pretrained={ckpt}", "+trainer.fast_dev_run=1", "test=false"])
        )
    assert "Re-initialised the classifier" in caplog.text and differences in caplog.text
    assert objects["model"].hparams.class_names == ["banana", "cherry", "zucchini"]
    # The same names evaluate as before.
    assert evaluate(make_cfg([f"ckpt_path={ckpt}"], config_name="eval"))["num_classes"] == 3


# -- item 3: what the scan passes, the loader reads; a file breaking later follows data.skip_bad_images -------------


def test_an_image_that_breaks_after_the_scan_follows_skip_bad_images(tmp_path: Path, caplog) -> None:
    root = _fruit_folder(tmp_path / "fruit")
    for skip in (True, False):
        dm = ImageFolderDataModule(root, image_size=32, batch_size=4, num_workers=0, skip_bad_images=skip)
        dm.setup("fit")  # the scan passes every file
        damaged_png(root / "train" / "banana" / "1.png")  # now it breaks
        loader = dm.train_dataloader()
        if skip:
            with caplog.at_level(logging.WARNING, logger="mobilevit.data.loading"):
                seen = sum(len(targets) for _, targets in loader)
            assert seen == 3 * 4 - 1  # the other 11 training images
            assert "skipped" in caplog.text and "1.png" in caplog.text and "1 image skipped so far" in caplog.text
        else:
            with pytest.raises(UnreadableImageError, match="banana/1.png: OSError: broken data stream"):
                list(loader)
        _plain_images(root / "train" / "banana", (230, 210, 40), 4)  # repaired for the next round


# -- item 4: names that are not valid UTF-8 are refused before any work ----------------------------------------------


def test_names_that_are_not_utf8_are_refused_in_one_line(tmp_path: Path, make_cfg) -> None:
    root = _fruit_folder(tmp_path / "fruit")
    for split in ("train", "val"):
        os.rename(os.fsencode(root / split / "apple"), os.path.join(os.fsencode(root / split), b"caf\xe9"))
    message = user_error(train, make_cfg([*_folder_overrides(root), "trainer.max_epochs=1", "test=false"]))
    assert "not valid UTF-8" in message and r"train/caf\xe9" in message and "\n" not in message
    # A file name inside a class folder: refused by the scan (train, evaluate) and by predict.
    for split in ("train", "val"):
        os.rename(os.path.join(os.fsencode(root / split), b"caf\xe9"), os.fsencode(root / split / "apple"))
    bad_file = os.path.join(os.fsencode(root / "val" / "apple"), b"\xff.png")
    shutil.copyfile(os.fsencode(root / "val" / "apple" / "0.png"), bad_file)
    dm = ImageFolderDataModule(root, image_size=32, num_workers=0)
    message = user_error(dm.setup, "fit")
    assert r"val/apple/\xff.png" in message
    assert r"\xff.png" in user_error(find_images, str(root / "val"))


# -- item 5: predict walks folders as the datasets do, and counts what it leaves out --------------------------------


def test_predict_follows_symlinked_folders_like_the_datasets(tmp_path: Path) -> None:
    photos, album = tmp_path / "photos" / "cls", tmp_path / "album"
    _plain_images(photos, (200, 30, 30), 1)
    _plain_images(album, (30, 30, 200), 2)
    (album / "notes.txt").write_text("no image")
    (photos / "linked").symlink_to(album, target_is_directory=True)
    (album / "loop").symlink_to(photos, target_is_directory=True)  # a cycle: walked once
    left_out: list[Path] = []
    found = find_images(str(tmp_path / "photos"), left_out)
    assert [path.relative_to(tmp_path / "photos").as_posix() for path in found] == [
        "cls/0.png", "cls/linked/0.png", "cls/linked/1.png"
    ]  # fmt: skip
    assert [path.name for path in left_out] == ["notes.txt"]
    (tmp_path / "photos" / "val").mkdir()
    shutil.copytree(photos, tmp_path / "photos" / "val" / "cls", symlinks=True)
    (tmp_path / "photos" / "train").mkdir()
    (photos).rename(tmp_path / "photos" / "train" / "cls")
    dm = ImageFolderDataModule(tmp_path / "photos", image_size=32, num_workers=0)
    assert dm.image_files("train") == find_images(str(tmp_path / "photos" / "train"))


def test_predict_counts_skipped_files_by_reason(tmp_path: Path, fruit_checkpoint, make_cfg, capsys) -> None:
    ckpt, _ = fruit_checkpoint
    _plain_images(tmp_path / "album", (30, 30, 200), 2)
    (tmp_path / "album" / "notes.txt").write_text("no image")
    damaged_png(tmp_path / "album" / "damaged.png")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "linked").symlink_to(tmp_path / "album", target_is_directory=True)
    cfg = make_cfg([f"ckpt_path={ckpt}", f"inputs={tmp_path / 'photos'}", "output=null", "device=cpu"], "predict")
    run = predict(cfg)
    assert len(run.predictions) == 2 and [path.name for path, _ in run.skipped] == ["damaged.png"]
    assert "Predicted 2 image(s); skipped 1 unreadable file(s) and 1 without an image extension." in (
        capsys.readouterr().out.replace("\n", " ")
    )


# -- item 7: TensorBoard's hparams view holds only metrics the run computes -----------------------------------------


def test_tensorboard_hparams_leave_out_metrics_never_computed(make_cfg) -> None:
    cfg = make_cfg(
        [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
         "logger=tensorboard", "callbacks.reports=null", "test=false"]
    )  # fmt: skip
    _, objects = train(cfg)
    events = EventAccumulator(objects["trainer"].logger.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"hp/val_acc", "hp/val_acc_best", "hp/val_loss"} <= tags
    assert not {tag for tag in tags if tag.startswith("hp/test_")}
    assert all(value.value != -1.0 for value in events.Scalars("hp/val_acc")[1:])  # the placeholder, then results
