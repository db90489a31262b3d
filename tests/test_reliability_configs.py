"""Reliability, bad configs: one clear line that names the key and what is valid, exit status != 0, no traceback,
raised at start-up before any heavy work."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, compose_config, subprocess_env, user_error
from PIL import Image

from evaluate import evaluate
from mobilevit.errors import UserInputError
from mobilevit.utils import exit_on_user_error
from mobilevit.utils.validation import validate_train_config
from train import train

QUICK = [*TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """last.ckpt of a one-step run of mobilevit_xxs on the 3-class tiny synthetic set."""
    overrides = [*QUICK, "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"]
    cfg = compose_config("train", tmp_path_factory.mktemp("configs_ckpt"), overrides, data_dir=shared_data_dir)
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def _run(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, script, *args, f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path}"]
    return subprocess.run(
        command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False
    )


def _image_folder(root: Path, splits: dict[str, list[str]]) -> Path:
    for split, classes in splits.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (40, 40), (200, 30, 30)).save(root / split / name / "0.png")
    return root


# ----------------------------------------------------------------------------- the command line


def test_unknown_config_group_option_lists_the_valid_ones(tmp_path: Path) -> None:
    """Hydra's own error for ``model=nope``: non-zero exit, a short message with the available options."""
    result = _run("train.py", "model=nope", tmp_path=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Could not find 'model/nope'" in output and "Available options in 'model'" in output
    assert "mobilevit_xxs" in output and "mobilevitv2_050" in output
    assert "Traceback" not in output and len(output.splitlines()) < 30


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("train.py", ["optimizer.lr=0"], "Error: optimizer.lr must be a number > 0 (e.g. 1e-3), got 0."),
        ("evaluate.py", ["ckpt_path=missing.ckpt"], "Error: ckpt_path='missing.ckpt' does not exist."),
    ],
    ids=["zero-lr", "missing-ckpt"],
)
def test_bad_value_exits_2_with_one_line(script: str, args: list[str], expected: str, tmp_path: Path) -> None:
    result = _run(script, *args, tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().startswith(expected) and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- start-up validation, in process


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # constructors: the network, the data module, the LightningModule
        ("model.name=nope", r"model.name='nope' is not a MobileViT variant; valid: mobilevit_xxs, mobilevit_xs"),
        ("data.batch_size=0", r"data.batch_size must be an integer >= 1, got 0."),
        ("data.image_size=16", r"data.image_size must be an integer >= 32 \(MobileViT downsamples by 32\), got 16."),
        ("data.eval_image_size=8", r"data.eval_image_size must be an integer >= 32 or null \(= data.image_size\), got 8."),
        ("data.split=train", r"data.split must be one of \['test', 'val'\], got 'train'."),
        ("module.backbone_lr_scale=0", r"module.backbone_lr_scale must be a number > 0, got 0."),
        # the start-up check: third-party objects and rules across groups
        ("optimizer.lr=-0.001", r"optimizer.lr must be a number > 0 \(e.g. 1e-3\), got -0.001."),
        ("optimizer.lr=0", r"optimizer.lr must be a number > 0"),
        ("optimizer.lr=fast", r"optimizer.lr must be a number > 0 \(e.g. 1e-3\), got 'fast'."),
        ("trainer.gradient_clip_val=-1", r"trainer.gradient_clip_val must be null \(no clipping\) or a number >= 0"),
        ("trainer.gradient_clip_algorithm=max", r"trainer.gradient_clip_algorithm must be one of \['norm', 'value'\]"),
        ("trainer.use_distributed_sampler=true", r"trainer.use_distributed_sampler must be false: the data modules shard"),
        ("module.backbone_lr_scale=0.1", r"backbone_lr_scale=0.1 slows the backbone .* model.pretrained is not set"),
    ],
)
def test_bad_value_is_one_line_naming_key_and_range(override: str, expected: str, make_cfg, capsys) -> None:
    cfg = make_cfg([*QUICK, override])
    assert re.search(expected, user_error(train, cfg))
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        train(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and len(err.splitlines()) == 1
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # stopped before training


def test_several_bad_values_give_one_line_each(make_cfg) -> None:
    cfg = make_cfg([*QUICK, "optimizer.lr=0", "trainer.gradient_clip_val=-1"])
    with pytest.raises(UserInputError) as error:
        validate_train_config(cfg)
    assert str(error.value).splitlines() == [
        "optimizer.lr must be a number > 0 (e.g. 1e-3), got 0.",
        "trainer.gradient_clip_val must be null (no clipping) or a number >= 0, got -1.",
    ]


def test_evaluate_data_overrides_are_checked_by_the_data_module(checkpoint: Path, make_cfg) -> None:
    for override, expected in (
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0."),
        ("data.split=train", "data.split must be one of ['test', 'val'], got 'train'."),
    ):
        assert user_error(evaluate, make_cfg([f"ckpt_path={checkpoint}", override], config_name="eval")) == expected


def test_missing_ckpt_path_file(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"ckpt_path='.*nothing.ckpt' does not exist"):
        train(make_cfg([*QUICK, f"ckpt_path={tmp_path / 'nothing.ckpt'}"]))
    with pytest.raises(UserInputError, match=r"ckpt_path='.*nothing.ckpt' does not exist"):
        evaluate(make_cfg([f"ckpt_path={tmp_path / 'nothing.ckpt'}"], config_name="eval"))


def test_num_classes_mismatch_with_a_checkpoint(checkpoint: Path, make_cfg, caplog) -> None:
    """Resuming or evaluating on data with another class count is an error; fine-tuning (model.pretrained)
    re-initialises the classifier and says so."""
    # A resume starts from the run's stored config: another class count is refused as a change of the run.
    with pytest.raises(UserInputError, match=r"cannot change data.num_classes \(3 in the run, 4 now\).*model.pretrained="):
        train(make_cfg([*QUICK, "data.num_classes=4", f"ckpt_path={checkpoint}"]))
    eval_cfg = make_cfg([f"ckpt_path={checkpoint}", "+data.num_classes=4"], config_name="eval")
    with pytest.raises(UserInputError, match=r"trained on other classes .*only in the data: \['cross'\]"):
        evaluate(eval_cfg)
    with caplog.at_level(logging.INFO, logger="mobilevit.models.pretrained"):
        _, objects = train(
            make_cfg([*QUICK, "data.num_classes=4", f"model.pretrained={checkpoint}", "+trainer.fast_dev_run=1"])
        )
    assert "Re-initialised the classifier" in caplog.text and "has 3 classes, the model has 4" in caplog.text
    assert objects["model"].net.num_classes == 4


def test_offline_data_root_missing_or_empty(make_cfg, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    offline = [*FAST_TRAIN, "model=mobilevit_xxs", "data.num_workers=0"]
    for root in (empty, tmp_path / "missing"):
        cfg = make_cfg([*offline, "data=flowers102", "data.download=false", f"data.root={root}"])
        message = user_error(train, cfg)
        assert (
            message.startswith(f"Flowers-102 is not available under data.root='{root}'")
            and "data.download=false" in message
        )
    cases = {
        tmp_path / "missing": r"data.root .*missing is not a folder",
        empty: r"Missing train folder .*empty/train",
    }
    for root, expected in cases.items():
        assert re.search(expected, user_error(train, make_cfg([*offline, "data=imagefolder", f"data.root={root}"])))
    message = user_error(train, make_cfg([*offline, "data=imagefolder"]))
    assert message == "data.root is required: set it on the command line, e.g. data.root=/path/to/dataset."


def test_imagefolder_val_classes_missing_from_train(make_cfg, tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "folder", {"train": ["a", "b"], "val": ["a", "b", "zebra"]})
    message = user_error(train, make_cfg([*FAST_TRAIN, "model=mobilevit_xxs", "data=imagefolder", f"data.root={root}"]))
    assert re.search(r"val has class folders that .*train lacks: \['zebra'\]", message)


def test_split_the_dataset_lacks_fails_at_start_up(make_cfg, tmp_path: Path) -> None:
    """An image folder without test/ and the default test=true: stopped before training, not after it."""
    root = _image_folder(tmp_path / "folder", {"train": ["a", "b"], "val": ["a", "b"]})
    folder = [*FAST_TRAIN, "model=mobilevit_xxs", "data=imagefolder", f"data.root={root}", "data.num_workers=0"]
    cfg = make_cfg(folder)
    with pytest.raises(UserInputError, match=r"data.split=test: the dataset has no test split .*data.split=val"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
