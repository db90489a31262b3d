"""The ``summary.json`` that every train.py run writes: what was trained, on what, for how long, and how well.

``python -m mobilevit.report`` collects these files into the results table and plot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilevit.data.resolution import ResolutionSchedule
from mobilevit.data.transforms import Preprocessing
from mobilevit.utils.machine import machine_info
from mobilevit.utils.validation import DEFAULT_TEST_WEIGHTS
from mobilevit.utils.precision import AUTOCAST_DTYPES
from mobilevit.inference import measure_latency_ms

SUMMARY_FILE = "summary.json"


def _protocol(data_cfg: dict[str, Any]) -> str:
    protocol = str(data_cfg.get("split_protocol") or data_cfg.get("_target_", "").rsplit(".", 1)[-1])
    return {"official_trainval": "official, trained on train+val"}.get(protocol, protocol)


def _schedule_in_pixels(value: Any, image_size: int) -> list[list[float | int]] | None:
    """``data.resolution_schedule`` with its sizes in pixels (fractions of ``image_size`` resolved)."""
    schedule = ResolutionSchedule.from_config(value, image_size)
    return None if schedule is None else [[fraction, size] for fraction, size in schedule.milestones]


def shareable_overrides(overrides: Sequence[str]) -> list[str]:
    """The command-line overrides that describe a run's recipe, without the ones that name this machine's folders
    (``paths.*``, ``hydra.*``, or a value that is an absolute or home-relative path): summaries get shared."""
    kept = []
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key.startswith(("paths.", "hydra.")) or value.strip("'\"").startswith(("/", "~")):
            continue
        kept.append(override)
    return kept


def write_run_summary(
    output_dir: str | Path,
    run_cfg: dict[str, Any],
    metrics: dict[str, float],
    net: nn.Module,
    epochs: int,
    wall_time_s: float,
    device: torch.device,
    experiment: str | None,
    overrides: Sequence[str] = (),
    time_to_accuracy: Sequence[dict[str, float]] = (),
    stopped: dict[str, Any] | None = None,
    resumed_from: dict[str, Any] | None = None,
) -> Path:
    """Write ``<output_dir>/summary.json``: what was trained, on what, for how long, how well, and why and when
    training stopped (``stopped``: reason, epoch, global_step, time).

    ``overrides`` are the run's command-line overrides (the record of what a try changed; see
    :func:`shareable_overrides`), ``time_to_accuracy`` the
    validation points of :class:`mobilevit.callbacks.TimeToAccuracy`, ``resumed_from`` the
    :class:`mobilevit.resume.ResumeRecord` of a resumed run.
    """
    image_size = int(run_cfg["data"]["image_size"])
    eval_image_size = Preprocessing.from_data_config(run_cfg["data"]).image_size  # what train.py checkpoints record
    precision = str(run_cfg["trainer"].get("precision"))
    # Latency in the run's precision; one that autocast has no equivalent of (e.g. 64-true) is timed in float32.
    latency_precision = precision if precision in AUTOCAST_DTYPES else "32-true"
    summary = {
        "experiment": experiment or "-",
        "model": run_cfg["model"].get("name"),
        "params": sum(p.numel() for p in net.parameters()),
        "protocol": _protocol(run_cfg["data"]),
        "image_size": image_size,
        "eval_image_size": eval_image_size,
        "epochs": epochs,
        "wall_time_s": wall_time_s,
        "latency_ms": measure_latency_ms(net, eval_image_size, device, latency_precision),
        "latency_precision": latency_precision,
        "precision": precision,
        "metrics": metrics,
        "overrides": shareable_overrides(overrides),
        "resolution_schedule": _schedule_in_pixels(run_cfg["data"].get("resolution_schedule"), image_size),
        "hflip_tta": bool(run_cfg.get("module", {}).get("hflip_tta", False)),
        "test_weights": run_cfg.get("test_weights", DEFAULT_TEST_WEIGHTS),
        "time_to_accuracy": list(time_to_accuracy),
        "machine": machine_info(device),
        "stopped": stopped,
        "resumed_from": resumed_from,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(output_dir) / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
