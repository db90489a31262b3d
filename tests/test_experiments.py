"""The experiments (configs/experiment/: flowers102_stratified, flowers102_paper, the CPU and GPU recipes, fine-tuning)
composed and trained on tiny budgets, and renamed options. The EMA callback is tested in test_ema.py."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from helpers import TINY_BUDGET
from lightning.pytorch.callbacks import EMAWeightAveraging
from omegaconf import OmegaConf
from recorders import StateRecorder

import train as train_script
from mobilevit.callbacks.early_stopping import DelayedEarlyStopping
from mobilevit.data.resolution import ResolutionSchedule
from mobilevit.data.transforms import Preprocessing
from mobilevit.models import create_model
from mobilevit.module import balanced_class_weights
from mobilevit.utils import instantiate_callbacks, warn_renamed_options
from mobilevit.checkpoint import load_checkpoint, read_trained

# Flowers-only keys an experiment sets, dropped when a test swaps in the synthetic data.
NOT_SYNTHETIC = ["~data.split_protocol"]


def test_experiments_compose(make_cfg) -> None:
    seed = make_cfg(["experiment=flowers102_stratified"])
    choices = seed.hydra.runtime.choices
    assert (choices.model, choices.augmentation, choices.optimizer, choices.scheduler) == (
        "mobilevit_xs", "crop_flip_jitter", "adamw", "none"
    )  # fmt: skip
    assert seed.data.image_size == 256 and seed.data.batch_size == 64 and seed.data.split_protocol == "stratified"
    assert seed.optimizer.lr == 2e-4 and seed.module.label_smoothing == 0.1 and seed.module.class_weights == "balanced"
    assert seed.trainer.max_epochs == 160 and "ema" not in seed.callbacks
    # The Keras experiment as it was: one size, no clipping, no flip TTA, the best weights on val.
    assert seed.data.resolution_schedule is None and seed.trainer.gradient_clip_val is None
    assert seed.module.hflip_tta is False and seed.test_weights == "best"
    stopper = next(c for c in instantiate_callbacks(seed.callbacks) if isinstance(c, DelayedEarlyStopping))
    assert (stopper.monitor, stopper.patience, stopper.start_epoch) == ("val/loss", 10, 10)
    assert stopper.min_delta == -0.01  # Lightning stores min_delta negated for mode="min"

    paper = make_cfg(["experiment=flowers102_paper"])
    choices = paper.hydra.runtime.choices
    assert (choices.model, choices.augmentation, choices.scheduler) == ("mobilevit_xs", "basic", "cosine")
    assert paper.data.multiscale is True and paper.data.split_protocol == "stratified" and paper.data.image_size == 256
    assert paper.module.label_smoothing == 0.1 and paper.optimizer.weight_decay == 0.01
    assert paper.data.resolution_schedule is None  # the paper trains at full size throughout
    assert paper.scheduler.min_lr == pytest.approx(paper.optimizer.lr / 10) and paper.scheduler.warmup_epochs > 0
    (ema,) = [c for c in instantiate_callbacks(paper.callbacks) if isinstance(c, EMAWeightAveraging)]
    assert paper.callbacks.ema.decay == 0.9995 and "early_stopping" not in paper.callbacks
    assert make_cfg(["experiment=flowers102_paper", "callbacks.ema.decay=0.99"]).callbacks.ema.decay == 0.99


def test_seed_experiment_tiny_run(make_cfg) -> None:
    cfg = make_cfg(
        ["experiment=flowers102_stratified", *NOT_SYNTHETIC, *TINY_SYNTHETIC, *FAST_TRAIN, *TINY_BUDGET, "test=false"]
    )
    metrics, objects = train_script.train(cfg)
    model, trainer = objects["model"], objects["trainer"]
    assert trainer.global_step == 4 and math.isfinite(metrics["val/loss"])
    assert model.hparams.class_weights == pytest.approx(balanced_class_weights(objects["datamodule"].class_counts()))
    assert trainer.lr_scheduler_configs == [] and trainer.optimizers[0].param_groups[0]["lr"] == 2e-4
    (stopper,) = [c for c in trainer.callbacks if isinstance(c, DelayedEarlyStopping)]
    assert stopper.start_epoch == 10 and math.isinf(stopper.best_score)  # 2 epochs: not monitored yet


def test_paper_experiment_tiny_run(make_cfg) -> None:
    cfg = make_cfg(["experiment=flowers102_paper", *NOT_SYNTHETIC, *TINY_SYNTHETIC, *FAST_TRAIN, *TINY_BUDGET])
    metrics, objects = train_script.train(cfg)
    assert objects["trainer"].global_step == 4 and math.isfinite(metrics["test/loss"])
    assert type(objects["datamodule"].train_dataloader().batch_sampler).__name__ == "MultiScaleBatchSampler"
    checkpoint = torch.load(objects["best_ckpt"], map_location="cpu", weights_only=True)
    assert "current_model_state" in checkpoint  # written by the EMA callback


def test_seed_experiment_on_real_flowers(make_cfg, flowers_root: Path) -> None:
    """One batch of the seed experiment on the real data: stratified split and its class-balanced weights."""
    cfg = make_cfg(
        ["experiment=flowers102_stratified", f"data.root={flowers_root}", *FAST_TRAIN, "model=mobilevit_xxs"]
        + ["data.image_size=64", "data.batch_size=8", "data.num_workers=0", "logger=none", "+trainer.fast_dev_run=true"]
    )
    metrics, objects = train_script.train(cfg)
    counts = objects["datamodule"].class_counts()
    assert int(counts.sum()) == 6500 and len(counts) == 102
    weights = objects["model"].hparams.class_weights
    assert weights == pytest.approx(balanced_class_weights(counts)) and min(weights) < 1.0 < max(weights)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/loss"])


@pytest.mark.parametrize(
    ("group", "old", "new"),
    [
        ("experiment", "flowers102_seed", "flowers102_stratified"),
        ("experiment", "flowers102_seed_cpu", "flowers102_stratified_cpu"),
        ("augmentation", "seed", "crop_flip_jitter"),
    ],
)
def test_renamed_options_still_work_with_a_deprecation_line(group: str, old: str, new: str, make_cfg, caplog) -> None:
    def settings(cfg) -> dict:
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)

    old_cfg = settings(make_cfg([f"{group}={old}"], run_name="old"))
    assert old_cfg == settings(make_cfg([f"{group}={new}"], run_name="old"))  # same run dir: paths equal too
    make_cfg([f"{group}={old}"], run_name="old")  # registers the old choice with HydraConfig
    with caplog.at_level(logging.WARNING, logger="mobilevit.utils.run"):
        (line,) = warn_renamed_options()
    assert line.startswith(f"{group}={old} is deprecated: use {group}={new} ")
    assert f"{group}={old} is deprecated" in caplog.text
    make_cfg([f"{group}={new}"], run_name="new")
    assert warn_renamed_options() == []


CPU_RECIPES = {
    # experiment: (split protocol, image size, images per step, epochs, time budget, EMA)
    "flowers102_cpu": ("official", 128, 32, 10000, "00:00:28:00", False),
    "flowers102_stratified_cpu": ("stratified", 128, 64, 10000, "00:01:26:00", False),
}


@pytest.mark.parametrize("experiment", sorted(CPU_RECIPES))
def test_cpu_recipes_compose_and_train_on_a_tiny_budget(experiment: str, make_cfg) -> None:
    protocol, image_size, batch_size, epochs, max_time, ema = CPU_RECIPES[experiment]
    cfg = make_cfg([f"experiment={experiment}"])
    assert cfg.data.get("split_protocol", "official") == protocol and cfg.data.image_size == image_size
    assert cfg.data.batch_size == batch_size and cfg.data.resolution_schedule_batch == "fixed"
    assert cfg.data.root == f"{cfg.paths.data_dir}/flowers102"  # no machine's path in a recipe
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_epochs == epochs and cfg.trainer.max_time == max_time
    assert cfg.hydra.runtime.choices.model == "mobilevit_xxs" and ("ema" in cfg.callbacks) is ema

    not_synthetic = NOT_SYNTHETIC if protocol == "stratified" else []
    tiny = make_cfg([f"experiment={experiment}", *not_synthetic, *TINY_SYNTHETIC, *FAST_TRAIN, *TINY_BUDGET])
    tiny.trainer.check_val_every_n_epoch = 1
    metrics, objects = train_script.train(tiny)
    assert objects["trainer"].global_step == 4 and math.isfinite(metrics["test/loss"])
    checkpoint = torch.load(objects["best_ckpt"], map_location="cpu", weights_only=True)
    assert ("current_model_state" in checkpoint) is ema  # written by the EMA callback


def test_gpu_xs_recipe_composes_and_its_plumbing_trains_on_cpu(make_cfg) -> None:
    cfg = make_cfg(["experiment=flowers102_xs"])
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.augmentation, choices.trainer) == ("mobilevit_xs", "strong", "gpu")
    assert cfg.data.split_protocol == "stratified" and cfg.data.image_size == 256 and cfg.trainer.max_epochs == 300
    schedule = ResolutionSchedule.from_config(cfg.data.resolution_schedule, cfg.data.image_size)
    assert schedule.sizes == [128, 192, 256] and cfg.data.resolution_schedule_batch == "fixed" and cfg.module.hflip_tta
    tiny = make_cfg(
        ["experiment=flowers102_xs", *NOT_SYNTHETIC, *TINY_SYNTHETIC, *FAST_TRAIN, *TINY_BUDGET, "model=mobilevit_xs",
         "data.resolution_schedule=[[0,32],[0.5,64]]"]
    )
    tiny.trainer.check_val_every_n_epoch = 1
    metrics, objects = train_script.train(tiny)
    assert objects["trainer"].global_step == 4 and math.isfinite(metrics["test/loss"])
    assert objects["model"].net.stages[-1][1].transformer[-1].drop_path.p == pytest.approx(0.1)  # the deepest layer


def test_finetune_recipe_loads_pretrained_weights_and_trains_the_head_faster(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = create_model("mobilevit_xxs", num_classes=1000)  # stands in for ImageNet weights
    weights = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), weights)
    cfg = make_cfg(
        ["experiment=flowers102_finetune", *NOT_SYNTHETIC, *TINY_SYNTHETIC, *FAST_TRAIN, *TINY_BUDGET]
        + [f"model.pretrained={weights}", "test=false", "data.eval_image_size=48"]
    )
    assert cfg.module.backbone_lr_scale == 0.1 and cfg.optimizer.lr == 1e-3
    assert cfg.hydra.runtime.choices.scheduler == "cosine" and cfg.data.resolution_schedule is None  # full size only
    recorder = StateRecorder()
    original = train_script.instantiate_callbacks
    monkeypatch.setattr(
        train_script, "instantiate_callbacks", lambda group, **options: [*original(group, **options), recorder]
    )
    _, objects = train_script.train(cfg)
    start = recorder.starts[0]
    assert torch.equal(start["net.stem.conv.weight"], source.stem.conv.weight)  # the backbone came from the file
    assert start["net.classifier.weight"].shape == (3, source.num_features)  # a new 3-class head
    peak_lrs = {group["name"]: group["initial_lr"] for group in objects["trainer"].optimizers[0].param_groups}
    assert peak_lrs["head_decay"] == pytest.approx(1e-3) and peak_lrs["backbone_decay"] == pytest.approx(1e-4)
    # The checkpoint records its evaluation preprocessing; evaluate/predict/export read it back from there.
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    recorded = Preprocessing(image_size=48, crop_pct=0.9, interpolation="bicubic")
    assert load_checkpoint(last)["hyper_parameters"]["preprocessing"] == recorded.to_dict()
    weights = read_trained(last)
    assert (weights.variant, weights.num_classes, weights.preprocessing) == ("mobilevit_xxs", 3, recorded)
    assert weights.eval_transform()(torch.zeros(3, 40, 60, dtype=torch.uint8)).shape == (3, 48, 48)
