"""Every option of every config group composes with Hydra's compose API and instantiates."""

from __future__ import annotations

import functools
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from conftest import CONFIG_DIR, config_groups
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import OmegaConf
from PIL import Image

from mobilevit.data.resolution import ResolutionSchedule
from mobilevit.module import ImageClassifier, weight_decay_param_groups
from mobilevit.utils import (
    fast_precision,
    instantiate_callbacks,
    instantiate_loggers,
    instantiate_optional,
    resolved_config,
)

GROUPS = config_groups()
OPTIONS = [(group, option) for group, options in GROUPS.items() for option in options]
CUDA = torch.cuda.is_available()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A minimal ``<root>/{train,val}/<class>/`` tree for data options that need a real root."""
    for split in ("train", "val"):
        for name in ("daisy", "tulip"):
            folder = tmp_path / "folder_data" / split / name
            folder.mkdir(parents=True)
            Image.new("RGB", (40, 36), (200, 30, 30)).save(folder / "0.png")
    return tmp_path / "folder_data"


def test_every_group_has_options() -> None:
    expected = {
        "data": {"flowers102", "synthetic", "imagefolder"},
        "augmentation": {"basic", "none"},
        "model": {"mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050"},
        "optimizer": {"adamw", "sgd"},
        "scheduler": {"cosine", "none"},
        "trainer": {"default", "cpu", "gpu", "ddp"},
        "logger": {"tensorboard", "csv", "none"},
        "callbacks": {"default", "none"},
        "paths": {"default"},
        "hydra": {"default"},
        "experiment": {"quickstart", "flowers102_cpu"},
    }
    for group, options in expected.items():
        assert options <= set(GROUPS.get(group, [])), f"configs/{group}/ lacks {options - set(GROUPS.get(group, []))}"


def test_train_defaults(make_cfg) -> None:
    cfg = make_cfg()
    choices = cfg.hydra.runtime.choices
    assert choices.data == "flowers102" and choices.model == "mobilevit_xs"
    assert choices.augmentation == "crop_flip_trivialaugment" and list(cfg.augmentation.scale) == [0.25, 1.0]
    assert cfg.augmentation.mix_prob == 0 and cfg.augmentation.random_erase_prob == 0
    assert choices.optimizer == "adamw" and choices.scheduler == "linear" and choices.trainer == "default"
    assert choices.logger == "tensorboard" and choices.callbacks == "default"
    assert cfg.module.label_smoothing == 0.1 and cfg.module.channels_last is True
    assert cfg.ckpt_path is None and cfg.test is True and cfg.optimized_metric == "val/acc"
    assert cfg.task_name == "train" and cfg.trainer.precision == fast_precision("auto")
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc" and cfg.callbacks.model_checkpoint.mode == "max"
    assert cfg.callbacks.last_checkpoint.filename == "last" and cfg.callbacks.last_checkpoint.monitor is None


def test_train_defaults_are_the_measured_recipe(make_cfg) -> None:
    """`python train.py` trains XS on Flowers-102 with the CPU recipes' measured techniques, scaled to 256 px."""
    cfg = make_cfg()
    assert cfg.data.image_size == 256 and cfg.data.resolution_schedule_batch == "fixed"
    schedule = ResolutionSchedule.from_config(cfg.data.resolution_schedule, cfg.data.image_size)
    assert schedule.milestones == ((0.0, 128), (0.35, 192), (0.7, 256))
    assert cfg.scheduler.decay == "linear" and cfg.scheduler.min_lr == 0.0
    assert cfg.module.hflip_tta is True and cfg.test_weights == "last"
    assert cfg.trainer.max_epochs == 300 and cfg.trainer.gradient_clip_val == 1.0
    # The resized schedule follows data.image_size. It is the recipe's, not the dataset's: every data config trains
    # with it, and no data config sets it.
    small = make_cfg(["data.image_size=128"])
    assert ResolutionSchedule.from_config(small.data.resolution_schedule, 128).sizes == [64, 96, 128]
    for data in config_groups()["data"]:
        assert make_cfg([f"data={data}"]).data.resolution_schedule == cfg.data.resolution_schedule, data
        assert "resolution_schedule" not in (CONFIG_DIR / "data" / f"{data}.yaml").read_text(), data


def test_paths_and_run_dirs(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg()
    assert Path(cfg.paths.log_dir) == tmp_path / "logs"
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parent == tmp_path / "logs" / "train" / "runs"
    sweep_dir = Path(cfg.hydra.sweep.dir)
    assert sweep_dir.parent == tmp_path / "logs" / "train" / "multiruns"
    assert cfg.hydra.sweep.subdir == "0"  # ${hydra.job.num}
    # Untouched defaults point into the repository.
    plain = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml"))
    assert plain["data_dir"] == "${oc.env:MOBILEVIT_DATA_DIR,${paths.root_dir}/data}"
    assert plain["log_dir"] == "${paths.root_dir}/logs"


def test_data_dir_follows_mobilevit_data_dir(monkeypatch) -> None:
    """One setting points every dataset at local copies: data.root = $MOBILEVIT_DATA_DIR/<dataset>."""
    cfg = OmegaConf.create({"paths": OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml"),
                            "data": OmegaConf.load(CONFIG_DIR / "data" / "flowers102.yaml")})  # fmt: skip
    cfg.paths.root_dir = "/repo"
    monkeypatch.setenv("MOBILEVIT_DATA_DIR", "/datasets")
    assert cfg.data.root == "/datasets/flowers102"
    monkeypatch.delenv("MOBILEVIT_DATA_DIR")
    assert cfg.data.root == "/repo/data/flowers102"


def test_eval_config(make_cfg) -> None:
    cfg = make_cfg(["ckpt_path=some.ckpt", "data.split=val", "data.root=/elsewhere"], config_name="eval")
    assert cfg.task_name == "eval" and cfg.data.split == "val" and cfg.data.root == "/elsewhere"
    assert "logs/eval/runs" in cfg.hydra.run.dir


def _check_data(datamodule: L.LightningDataModule) -> None:
    assert isinstance(datamodule, L.LightningDataModule)
    assert datamodule.num_classes >= 2 and len(datamodule.class_names) == datamodule.num_classes


def _check_group(group: str, cfg, image_folder: Path) -> None:
    node = cfg.get(group)
    if group == "data":
        overrides = {"root": str(image_folder)} if OmegaConf.is_missing(cfg.data, "root") else {}
        _check_data(hydra.utils.instantiate(node, **overrides))  # no prepare_data: nothing is downloaded
    elif group == "augmentation":
        preset = hydra.utils.instantiate(node)  # size-free: the data module builds it per size
        size = cfg.data.image_size
        out = preset(size)(Image.new("RGB", (50, 40), (10, 200, 30)))
        assert out.shape == (3, size, size) and out.dtype == torch.float32 and 0 <= out.min() <= out.max() <= 1
    elif group == "model":
        net = hydra.utils.instantiate(node, num_classes=5).eval()
        assert net.num_classes == 5
        with torch.no_grad():
            assert net(torch.rand(1, 3, 32, 32)).shape == (1, 5)
    elif group == "optimizer":
        factory = hydra.utils.instantiate(node)
        optimizer = factory(params=weight_decay_param_groups(torch.nn.Linear(4, 3)))
        assert isinstance(optimizer, torch.optim.Optimizer) and optimizer.param_groups[1]["weight_decay"] == 0
    elif group == "scheduler":
        factory = instantiate_optional(node)
        if factory is not None:
            optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
            scheduler = factory(optimizer=optimizer, total_steps=20, steps_per_epoch=5)
            assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    elif group == "trainer":
        if node.accelerator == "gpu" and not CUDA:
            # Only a CUDA machine can build a GPU Trainer: build every other setting on the CPU instead, and go on
            # with the experiment's logger and callbacks.
            cpu = {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
            assert isinstance(hydra.utils.instantiate(node, logger=False, **cpu), L.Trainer)
            return
        assert isinstance(hydra.utils.instantiate(node, logger=False), L.Trainer)
    elif group == "logger":
        assert all(isinstance(logger, Logger) for logger in instantiate_loggers(node))
    elif group == "callbacks":
        assert all(isinstance(callback, Callback) for callback in instantiate_callbacks(node))
    elif group == "paths":
        assert Path(node.output_dir).is_dir() and node.data_dir and node.log_dir
    elif group == "hydra":
        assert cfg.hydra.run.dir and cfg.hydra.sweep.dir
    elif group == "hparams_search":  # a sweeper with a search space (tests/test_sweeps.py runs one)
        assert hydra.utils.get_class(cfg.hydra.sweeper._target_) and cfg.hydra.sweeper.params and cfg.optimized_metric
    elif group == "experiment":
        for sub_group in ("data", "augmentation", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks"):
            _check_group(sub_group, cfg, image_folder)
    else:
        raise AssertionError(f"No instantiation check for config group '{group}': add one to tests/test_configs.py")


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group: str, option: str, make_cfg, image_folder: Path) -> None:
    cfg = make_cfg([f"{group}={option}"])
    resolved_config(cfg)  # every interpolation resolves
    _check_group(group, cfg, image_folder)


def test_default_callbacks_and_logger(make_cfg) -> None:
    cfg = make_cfg()
    callbacks = instantiate_callbacks(cfg.callbacks)
    kinds = {type(callback).__name__ for callback in callbacks}
    assert {"BestCheckpoint", "LearningRateMonitor", "RichProgressBar", "NetworkSummary", "TimeToAccuracy"} <= kinds
    checkpoint, last = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    assert checkpoint.monitor == "val/acc" and checkpoint.mode == "max"
    assert last.monitor is None and last.filename == "last" and last.save_top_k == 1  # last.ckpt every epoch
    assert any(isinstance(c, LearningRateMonitor) for c in callbacks)
    (logger,) = instantiate_loggers(cfg.logger)
    assert isinstance(logger, TensorBoardLogger)
    assert instantiate_loggers(make_cfg(["logger=none"]).logger) == []
    assert instantiate_callbacks(make_cfg(["callbacks=none"]).callbacks) == []
    assert instantiate_optional(make_cfg(["scheduler=none"]).scheduler) is None


def test_module_hparams_are_plain(make_cfg) -> None:
    cfg = make_cfg(["model=mobilevit_xxs"])
    net = hydra.utils.instantiate(cfg.model, num_classes=4)
    module = ImageClassifier(
        net,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=instantiate_optional(cfg.scheduler),
        cfg=resolved_config(cfg),
        class_names=["a", "b", "c", "d"],
    )
    assert set(module.hparams) == {
        "label_smoothing", "class_weights", "channels_last", "backbone_lr_scale", "hflip_tta", "cfg", "class_names",
        "num_classes", "preprocessing",
    }  # fmt: skip
    assert isinstance(module.hparams.cfg, dict) and "hydra" not in module.hparams.cfg
    assert module.hparams.cfg["model"]["name"] == "mobilevit_xxs"
    assert isinstance(module.optimizer_factory, functools.partial)
