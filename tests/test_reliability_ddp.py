"""Reliability, multi-process: trainer=ddp with 2 CPU processes (gloo) trains and validates, its ranks hold identical
weights after every step, equal to one process with the same per-rank BatchNorm split; a DDP run, and every job of a
DDP multirun, writes exactly one output directory."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from conftest import ROOT, TINY_SYNTHETIC, subprocess_env
from recorders import RecordEnd, RecordRank, target
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from evaluate import evaluate

from mobilevit.models import create_model
from mobilevit.module import soft_target_cross_entropy, weight_decay_param_groups

# The whole training set (3 classes x 8 images) is one global batch of 2 processes x 12 images; augmentation and
# dropout are off and the learning rate is constant (plain SGD), so each step is reproducible from its batches.
SAME_STEPS = [
    *[override for override in TINY_SYNTHETIC if not override.startswith("data.batch_size")],
    "model=mobilevit_xxs", "model.drop_rate=0", "augmentation=none", "optimizer=sgd", "optimizer.lr=0.1",
    "optimizer.momentum=0", "optimizer.nesterov=false", "scheduler=none", "trainer.max_epochs=3",
    "trainer.precision=32-true", "logger=csv", "test=false", "callbacks.reports=null",
    "callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "trainer.gradient_clip_val=null",
]  # fmt: skip
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# What DDP must guarantee, checked to float32 rounding: after every step both ranks hold the same weights, and those
# are the weights of one process that takes the same optimizer step on the mean of the two ranks' losses, each rank's
# 12 images normalised by BatchNorm on their own (the per-rank BatchNorm split; SyncBatchNorm is GPU-only).
WEIGHT_TOLERANCE = 1e-5  # max |DDP weight - one-process weight| after one SGD step at lr 0.1


def _train_ddp(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env["PYTHONPATH"] = str(ROOT / "tests")
    command = [
        sys.executable, "train.py", *args, f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _one_process_step(cfg, weights: torch.Tensor, per_rank: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The reference for one step: one process, one network at ``weights``; the ranks' batches go through BatchNorm
    separately (train mode), and one optimizer step is taken on the mean of their losses."""
    net = create_model(cfg.model.name, num_classes=3).to(memory_format=torch.channels_last).train()
    torch.nn.utils.vector_to_parameters(weights, net.parameters())
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=weight_decay_param_groups(net))  # plain SGD: stateless
    losses = [
        soft_target_cross_entropy(net(images.contiguous(memory_format=torch.channels_last)), targets, None, 0.1)
        for images, targets in per_rank
    ]
    (sum(losses) / len(losses)).backward()
    optimizer.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_ddp_ranks_agree_and_equal_one_process_with_the_same_batchnorm_split(
    make_cfg, tmp_path: Path, shared_data_dir: Path
) -> None:
    """2 processes x 12 images, 3 steps: both ranks train and validate (6 + 6 validation images), one run directory
    is written, the ranks hold identical weights after every step, and those equal the one-process reference."""
    records = tmp_path / "ranks"
    record = [f"+callbacks.ranks._target_={target(RecordRank)}", f"+callbacks.ranks.folder={records}"]
    _train_ddp(tmp_path, shared_data_dir, *SAME_STEPS, *DDP, "data.batch_size=12", *record)
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()  # one run directory for both processes
    assert not (tmp_path / "logs" / "train" / "multiruns").exists()
    ranks = [torch.load(records / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert all(r["world_size"] == 2 and r["global_step"] == 3 and r["val_batches"] == 3 for r in ranks)
    assert all(len(r["batches"]) == 3 and len(r["batches"][0][1]) == 12 for r in ranks)
    assert not torch.equal(ranks[0]["batches"][0][0], ranks[1]["batches"][0][0])  # each rank its own shard

    for step, (w0, w1) in enumerate(zip(ranks[0]["weights"], ranks[1]["weights"], strict=True)):
        assert torch.equal(w0, w1), f"ranks differ after step {step}"  # gradients averaged: identical updates
    assert not torch.equal(ranks[0]["weights"][0], ranks[0]["weights"][-1])  # and they did train

    cfg = make_cfg([*SAME_STEPS, "trainer=cpu"], run_name="reference")
    weights, gaps = ranks[0]["weights"], []
    for step in range(3):  # each step from DDP's weights before it (the loss surface amplifies earlier rounding)
        reference = _one_process_step(cfg, weights[step], [r["batches"][step] for r in ranks])
        gaps.append(float((weights[step + 1] - reference).abs().max()))
    print(f"max |DDP - one process| weight gap per step: {gaps}")
    assert max(gaps) <= WEIGHT_TOLERANCE
    # Without gradient averaging (a rank stepping on its own loss) the weights would differ far beyond that.
    alone = _one_process_step(cfg, weights[0], [ranks[0]["batches"][0]])
    print(f"without averaging: {float((alone - weights[1]).abs().max()):.2e}")
    assert float((alone - weights[1]).abs().max()) > 100 * WEIGHT_TOLERANCE


def test_ddp_multirun_jobs_each_write_one_directory(tmp_path: Path, shared_data_dir: Path) -> None:
    """``-m`` with 2 jobs under DDP: one sweep folder holding 0/ and 1/ and nothing else. Without the guard in
    train.py (mobilevit.utils.ddp_children_share_dirs) the rank-1 process makes a second timestamped sweep folder."""
    quick = [override for override in SAME_STEPS if not override.startswith("trainer.max_epochs")]
    _train_ddp(
        tmp_path, shared_data_dir, "-m", "seed=1,2", *quick, *DDP, "data.batch_size=12", "trainer.max_epochs=1",
    )  # fmt: skip
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert sorted(path.name for path in sweep.iterdir() if path.is_dir()) == ["0", "1"]
    assert not (tmp_path / "logs" / "train" / "runs").exists()
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file() and (sweep / job / "summary.json").is_file()
        assert f"seed={int(job) + 1}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()


def test_ddp_reports_every_metric_over_each_image_once(make_cfg, tmp_path: Path, shared_data_dir: Path) -> None:
    """2 processes, val and test splits of 15 images (5 per class: not divisible by 2): every val/test number of
    summary.json, of the CSV log and the confusion-matrix report equals one process's evaluation of the same weights
    (Lightning's DistributedSampler would pad each rank to 8 images and count one image twice)."""
    data = [
        *[o for o in SAME_STEPS if not o.startswith(("data.", "logger=", "callbacks.reports", "test="))],
        "data=synthetic", "data.num_classes=3", "data.train_per_class=4", "data.val_per_class=5",
        "data.test_per_class=5", "data.source_size=32", "data.image_size=32", "data.num_workers=0",
        "data.batch_size=4",
    ]  # fmt: skip
    reports = ["logger=[csv,tensorboard]", "callbacks.reports.every_n_epochs=1", "callbacks.reports.max_images=0"]
    _train_ddp(tmp_path, shared_data_dir, *data, *DDP, "trainer.max_epochs=1", "test=true", *reports)
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    ckpt = run_dir / "checkpoints" / "last.ckpt"  # one epoch: the tested (best) weights are the last ones
    logged = {}
    for row in csv.DictReader(next(run_dir.rglob("metrics.csv")).open()):
        logged.update({key: float(value) for key, value in row.items() if value and key.startswith(("val/", "test/"))})
    for split in ("val", "test"):
        one = evaluate(make_cfg(
            [f"ckpt_path={ckpt}", f"data.split={split}", "trainer=cpu", "trainer.precision=32-true", "fuse_bn=false",
             "trainer.enable_progress_bar=false"],
            config_name="eval", run_name=f"eval_{split}",
        ))  # fmt: skip
        assert one["num_images"] == 15
        expected = {"acc": one["top1"], "acc_top5": one["top5"], "f1": one["macro_f1"], "loss": one["loss"]}
        for name, value in expected.items():
            assert metrics[f"{split}/{name}"] == pytest.approx(value, abs=1e-5), (split, name)
            assert logged[f"{split}/{name}"] == pytest.approx(value, abs=1e-5), (split, name)
    events = EventAccumulator(str(next(run_dir.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    reports = events.Tensors("val/most_confused/text_summary")
    assert reports and all("(validation, 15 images)" in r.tensor_proto.string_val[0].decode() for r in reports)


def test_max_time_under_ddp_stops_both_ranks_together_with_the_lr_annealed(tmp_path: Path, shared_data_dir: Path) -> None:
    """2 processes, `trainer.max_time` 8 s and 10000 epochs allowed: both ranks stop at the same step (rank 0's clock
    decides), the run records max_time as the reason, and the linear decay reached about 0 by then."""
    records = tmp_path / "ranks"
    quick = [o for o in SAME_STEPS if not o.startswith(("trainer.max_epochs", "scheduler=", "optimizer.lr"))]
    _train_ddp(
        tmp_path, shared_data_dir, *quick, *DDP, "data.batch_size=4", "trainer.max_epochs=10000",
        "+trainer.max_time=00:00:00:08", "scheduler=linear", "scheduler.warmup_epochs=0", "optimizer.lr=0.01",
        "trainer.check_val_every_n_epoch=1000", f"+callbacks.end._target_={target(RecordEnd)}",
        f"+callbacks.end.folder={records}",
    )  # fmt: skip
    ranks = [json.loads((records / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1] and 0 < ranks[0]["epoch"] < 10000
    assert ranks[0]["lr"] <= 0.01 * 0.25  # the last step started in the last quarter of the time budget
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["stopped"]["reason"] == "max_time"
