"""python -m mobilevit.predict: input discovery, image modes and EXIF, top-k output, CSV, skips and exit codes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, compose_config, subprocess_env, upright_image
from PIL import Image
from rich.console import Console

from mobilevit.data.synthetic import render_shape_image
from mobilevit.data.transforms import eval_transform
from mobilevit.errors import UserInputError
from mobilevit.predict import CSV_COLUMNS, Classifier, find_images, load_image, predict
from mobilevit.utils import cpu_supports_bf16
from mobilevit.checkpoint import classifier_from_weights, read_trained
from train import train

CLASSES = ["circle", "square", "triangle"]
UNREADABLE = ("corrupt.jpg", "truncated.png")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A train.py checkpoint of mobilevit_xxs on the tiny 3-class synthetic set (32 px), trained a few steps."""
    overrides = [
        *TINY_SYNTHETIC,
        *FAST_TRAIN,
        "model=mobilevit_xxs",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "logger=none",
        "test=false",
        "callbacks.reports=null",
    ]
    cfg = compose_config("train", tmp_path_factory.mktemp("predict_train"), overrides, data_dir=shared_data_dir)
    _, objects = train(cfg)
    return Path(objects["best_ckpt"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image per mode/format Pillow commonly yields, in nested folders, plus unreadable and non-image files."""
    root = tmp_path_factory.mktemp("images")
    (root / "nested" / "deeper").mkdir(parents=True)
    shape = render_shape_image("circle", 48, np.random.default_rng(0))
    shape.save(root / "rgb.jpg", quality=95)
    shape.convert("L").save(root / "gray.png")
    rgba = shape.convert("RGBA")
    alpha = np.full((48, 48), 255, dtype=np.uint8)
    alpha[:, :8] = 0  # a transparent stripe on the left
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(root / "rgba.png")
    shape.convert("CMYK").save(root / "nested" / "cmyk.jpg", quality=95)
    palette = shape.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(root / "nested" / "palette.png", transparency=0)
    shape.save(root / "nested" / "deeper" / "image.webp", quality=90)
    gradient = (np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) * 28).astype(np.uint16)  # 0..64484
    Image.fromarray(gradient).save(root / "gray16.png")
    upright = upright_image()
    upright.save(root / "upright.jpg", quality=95)
    # Stored rotated 90 degrees counter-clockwise; EXIF orientation 6 says "rotate 90 clockwise to display".
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(root / "exif_rotated.jpg", quality=95, exif=exif)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
    png = (root / "gray.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "notes.txt").write_text("not an image")
    return root


READABLE = {
    "rgb.jpg",
    "gray.png",
    "rgba.png",
    "cmyk.jpg",
    "palette.png",
    "image.webp",
    "gray16.png",
    "upright.jpg",
    "exif_rotated.jpg",
}


def test_find_images(images: Path) -> None:
    everything = find_images(str(images))
    assert {p.name for p in everything} == READABLE | set(UNREADABLE)  # recursive; notes.txt left out
    assert len(everything) == len(set(everything))
    assert find_images(str(images / "notes.txt")) == [images / "notes.txt"]  # a named file is always tried
    assert find_images(str(images / "**" / "*.png")) == sorted(images.rglob("*.png"))  # a recursive glob
    both = find_images([str(images / "rgb.jpg"), str(images / "nested"), str(images / "rgb.jpg")])
    # Input order kept, duplicates dropped; nested/deeper/image.webp sorts before nested/palette.png.
    assert [p.name for p in both] == ["rgb.jpg", "cmyk.jpg", "image.webp", "palette.png"]
    with pytest.raises(UserInputError, match="inputs: .*missing.jpg"):
        find_images(str(images / "missing.jpg"))
    with pytest.raises(UserInputError, match="no image files"):
        find_images(str(images / "*.gif"))


def test_load_image_modes_and_exif(images: Path) -> None:
    for name in READABLE:
        path = next(images.rglob(name))
        image = load_image(path)
        assert image.mode == "RGB", name
    # Transparent pixels become white.
    rgba = np.asarray(load_image(images / "rgba.png"))
    assert (rgba[:, :8] == 255).all() and rgba[:, 8:].mean() < 200
    # 16-bit values are scaled to 8 bits, not clipped to white.
    gray16 = np.asarray(load_image(images / "gray16.png"))[..., 0].astype(int)
    expected = np.rint(np.arange(48 * 48).reshape(48, 48) * 28 * 255 / 65535)
    assert np.abs(gray16 - expected).max() <= 1
    # EXIF orientation is applied: the rotated file decodes like the upright one.
    upright = np.asarray(load_image(images / "upright.jpg")).astype(int)
    rotated = np.asarray(load_image(images / "exif_rotated.jpg")).astype(int)
    assert rotated.shape == upright.shape == (32, 48, 3)
    assert np.abs(rotated - upright).mean() < 6
    assert tuple(rotated[2, 2]) == pytest.approx((30, 220, 30), abs=25)  # the green block is top left
    with pytest.raises(OSError):
        load_image(images / "corrupt.jpg")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def _by_file(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(Path(row["file"]).name, []).append(row)
    return grouped


def test_predict_prints_table_writes_csv_and_skips_unreadable(make_cfg, checkpoint: Path, images: Path) -> None:
    output = images.parent / "out" / "preds.csv"
    cfg = make_cfg(
        [f"ckpt_path={checkpoint}", f"inputs={images}", f"output={output}", "topk=10", "device=cpu", "batch_size=4"],
        config_name="predict",
    )
    console = Console(record=True, width=200, color_system=None)
    run = predict(cfg, console=console)
    printed = console.export_text()

    assert {p.file.name for p in run.predictions} == READABLE
    assert sorted(path.name for path, _ in run.skipped) == sorted(UNREADABLE)
    for name in UNREADABLE:
        assert f"{name}: cannot read it as an image" in printed
    assert "Predicted 9 image(s); skipped 2 unreadable file(s) and 1 without an image extension." in printed
    assert "Top-3 predictions" in printed and "exif_rotated.jpg" in printed
    assert all(name in printed for name in CLASSES)

    # topk=10 is clamped to the 3 classes, so each file's probabilities cover every class and sum to 1.
    grouped = _by_file(_read_csv(output))
    assert set(grouped) == READABLE
    for rows in grouped.values():
        assert [int(row["rank"]) for row in rows] == [1, 2, 3]
        probabilities = [float(row["probability"]) for row in rows]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert sorted(row["class_name"] for row in rows) == CLASSES
        assert all(CLASSES[int(row["class_index"])] == row["class_name"] for row in rows)



def test_predict_uses_the_checkpoints_eval_transform_and_fused_model(images: Path, checkpoint: Path) -> None:
    classifier = Classifier(checkpoint, device="cpu", precision="32-true")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in classifier.net.modules())
    assert classifier.class_names == CLASSES
    image = load_image(images / "upright.jpg")
    batch = eval_transform(32, 0.9)(image)[None]  # TINY_SYNTHETIC: image_size 32, crop_pct 0.9
    assert torch.equal(classifier.transform(image)[None], batch)
    # The EXIF-rotated copy reaches the network upright; ignoring the tag would feed a rotated picture.
    rotated = classifier.transform(load_image(images / "exif_rotated.jpg"))[None]
    with Image.open(images / "exif_rotated.jpg") as raw:
        ignored_tag = classifier.transform(raw.convert("RGB"))[None]
    assert (rotated - batch).abs().mean() < 0.03 < (ignored_tag - batch).abs().mean()
    reference = classifier_from_weights(read_trained(checkpoint), channels_last=False)
    with torch.no_grad():
        expected = reference(batch).softmax(dim=1)
    assert torch.allclose(classifier.probabilities(batch), expected, atol=1e-5)
    # The default fast path (bf16 autocast where the CPU has native bf16) stays within bf16 rounding.
    fast = Classifier(checkpoint, device="cpu")
    assert fast.autocast_dtype == (torch.bfloat16 if cpu_supports_bf16() else None)
    assert torch.allclose(fast.probabilities(batch), expected, atol=0.02)
    valid = r"\['auto', '32-true', '32', '16-mixed', 'bf16-mixed'\]"
    with pytest.raises(UserInputError, match=rf"precision must be one of {valid} .*got 'fp8'"):
        Classifier(checkpoint, device="cpu", precision="fp8")


def test_predict_uses_the_preprocessing_recorded_in_the_checkpoint(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    """train.py records the evaluation preprocessing; a checkpoint written before it did falls back to its run
    config (eval_image_size, else image_size, and crop_pct) by the same rule."""
    image = load_image(images / "upright.jpg")
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    stored["hyper_parameters"]["preprocessing"].update(image_size=64, crop_pct=0.8)
    torch.save(stored, tmp_path / "eval64.ckpt")
    classifier = Classifier(tmp_path / "eval64.ckpt", device="cpu", precision="32-true")
    assert torch.equal(classifier.transform(image), eval_transform(64, 0.8)(image))

    del stored["hyper_parameters"]["preprocessing"]
    stored["hyper_parameters"]["cfg"]["data"]["eval_image_size"] = 48
    torch.save(stored, tmp_path / "old.ckpt")
    classifier = Classifier(tmp_path / "old.ckpt", device="cpu", precision="32-true")
    assert torch.equal(classifier.transform(image), eval_transform(48, 0.9)(image))


def test_predict_rejects_bad_settings(make_cfg, checkpoint: Path, images: Path) -> None:
    base = [f"ckpt_path={checkpoint}", f"inputs={images / 'rgb.jpg'}"]
    with pytest.raises(UserInputError, match="topk"):
        predict(make_cfg([*base, "topk=0"], config_name="predict"))
    with pytest.raises(UserInputError, match="device"):
        predict(make_cfg([*base, "device=tpu"], config_name="predict"))
    with pytest.raises(UserInputError, match="inputs"):
        predict(make_cfg([f"ckpt_path={checkpoint}"], config_name="predict"))
    cfg = make_cfg(base, config_name="predict")
    assert cfg.topk == 5 and cfg.device == "auto" and cfg.batch_size == 32
    assert Path(cfg.output) == Path(cfg.paths.output_dir) / "predictions.csv"
    run = predict(cfg, console=Console(record=True))
    assert len(run.predictions) == 1 and len(run.predictions[0].class_indices) == 3
    assert run.output == Path(cfg.paths.output_dir) / "predictions.csv" and run.output.is_file()


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mobilevit.predict", f"paths.log_dir={tmp_path / 'logs'}", *args]
    return subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)


def test_cli_exit_codes(tmp_path: Path, checkpoint: Path, images: Path) -> None:
    output = tmp_path / "cli.csv"
    # A glob and a list, given the way a shell passes them: one unreadable file is named and skipped.
    done = _cli(
        tmp_path, f"ckpt_path={checkpoint}", f"inputs=[{images / 'rgb.jpg'},'{images / '*.png'}']",
        f"output={output}", "topk=2", "device=cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "truncated.png: cannot read it as an image" in done.stdout
    assert "Predicted 4 image(s); skipped 1 unreadable file(s)." in done.stdout
    grouped = _by_file(_read_csv(output))
    assert set(grouped) == {"rgb.jpg", "gray.png", "rgba.png", "gray16.png"}
    assert all(len(rows) == 2 for rows in grouped.values())

    # Nothing readable: exit code 1, no CSV.
    done = _cli(tmp_path, f"ckpt_path={checkpoint}", f"inputs={images / 'corrupt.jpg'}", f"output={tmp_path / 'x.csv'}")
    assert done.returncode == 1
    assert "corrupt.jpg: cannot read it as an image" in done.stdout and "skipped 1 unreadable" in done.stdout
    assert not (tmp_path / "x.csv").exists()

    # A usage error: exit code 2 with one line naming the problem.
    done = _cli(tmp_path, f"ckpt_path={tmp_path / 'missing.ckpt'}", f"inputs={images}")
    assert done.returncode == 2 and "missing.ckpt' does not exist" in done.stderr
