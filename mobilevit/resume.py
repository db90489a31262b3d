"""Resume a train.py run from its own stored config: ``ckpt_path=<run directory | .ckpt file | last>``.

Every train.py checkpoint carries the run's resolved config (``hyper_parameters.cfg``). A resume starts from that
config, not from today's defaults, and the overrides given on the resume command apply on top of it (as
ultralytics' ``resume=True`` restores the run's own arguments). So ``python train.py ckpt_path=last`` continues the
run it names: same network, data, augmentation, schedule, budget and precision.

- What a resume may change (``trainer.max_epochs``, ``trainer.max_time``, ``optimizer.lr``, the logger,
  ``data.num_workers``, ...) takes effect and is logged as a diff against the run.
- What it cannot change without becoming another run (:data:`RUN_IDENTITY_KEYS`: the network, the dataset and its
  split) is refused in one line; the class list is compared by name once the data is built
  (:func:`mobilevit.checkpoint.require_trained_classes`).
- The new run directory records where it came from (``resumed_from.json``, and ``resumed_from`` in summary.json).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mobilevit.checkpoint import load_checkpoint
from mobilevit.errors import UserInputError
from mobilevit.utils import resolve_ckpt_path, resolved_config

log = logging.getLogger(__name__)

# Config keys (and everything below them) that define the run: changing one on a resume makes another run.
RUN_IDENTITY_KEYS: tuple[str, ...] = (
    "model",
    "data._target_",
    "data.split_protocol",
    "data.split_seed",
    "data.stratified_sizes",
    "data.num_classes",
)
# Config groups whose option applies to the whole config (``@package _global_``): their keys are not known on their
# own, so on a resume the run's stored values stand and the changed keys have to be given one by one.
GLOBAL_GROUPS: tuple[str, ...] = ("experiment", "hparams_search")
# Callbacks that keep state in checkpoints, with what removing or adding them on a resume means.
STATEFUL_CALLBACKS: dict[str, tuple[str, str]] = {
    "ema": (
        "callbacks.ema is off on this resume: training continues from the averaged (EMA) weights stored in the "
        "checkpoint, and the raw weights kept beside them are dropped.",
        "callbacks.ema is on from this resume: it starts averaging now, from the checkpoint's weights.",
    ),
}
RECORD_FILE = "resumed_from.json"


@dataclass
class ResumeRecord:
    """Where a resumed run came from and what it changed (written to ``resumed_from.json`` and summary.json)."""

    ckpt_path: str
    run_dir: str | None
    epoch: int
    global_step: int
    changed: dict[str, list[Any]] = field(default_factory=dict)  # key -> [value in the run, value now]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of plain nested containers; an empty container is a leaf."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any], ignore: Sequence[str] = ()) -> dict[str, list]:
    """``{key: [before, after]}`` for every leaf that differs between two resolved configs (absent: ``None``),
    leaving out keys at or below ``ignore``."""
    old, new = dict(_leaves(dict(before))), dict(_leaves(dict(after)))
    changes = {}
    for key in sorted(old.keys() | new.keys()):
        if any(key == prefix or key.startswith(prefix + ".") for prefix in ignore):
            continue
        if old.get(key) != new.get(key):
            changes[key] = [old.get(key), new.get(key)]
    return changes


def _set(container: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        container = container.setdefault(part, {})
    container[last] = value


def _delete(container: dict[str, Any], key: str) -> None:
    *parents, last = key.split(".")
    for part in parents:
        container = container.get(part, {})
    container.pop(last, None)


def _relocated(node: Any, old_dir: str | None, raw_now: Any) -> Any:
    """Stored values that pointed into the run's own directory point into the new run's (today's raw value,
    interpolations kept); everything else keeps its stored value."""
    if isinstance(node, dict):
        raw_now = raw_now if isinstance(raw_now, dict) else {}
        return {key: _relocated(value, old_dir, raw_now.get(key)) for key, value in node.items()}
    if old_dir and isinstance(node, str) and (node == old_dir or node.startswith(old_dir.rstrip("/") + "/")):
        return raw_now
    return node


def _raw(cfg: DictConfig, key: str) -> Any:
    """The value at ``key`` of ``cfg`` with its interpolations kept (they resolve in the resumed config)."""
    node = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node


def _apply_overrides(stored: dict[str, Any], cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """Apply the resume command's ``overrides`` to ``stored`` (in place), each taking its value from ``cfg`` (today's
    composed config): a config group's option replaces the group's node, ``key=value`` sets the key, ``~key``
    deletes it. Returns the ignored global-group overrides."""
    ignored = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key.startswith("hydra") or key == "ckpt_path":
            continue
        if key in GLOBAL_GROUPS:
            ignored.append(override.input_line)
            continue
        path = key.replace("/", ".")
        if override.is_delete():
            _delete(stored, path)
        else:
            _set(stored, path, _raw(cfg, path))
    return ignored


def _identity_problems(changes: Mapping[str, list], ckpt_path: str) -> list[str]:
    problems = []
    for key, (before, after) in changes.items():
        if any(key == prefix or key.startswith(prefix + ".") for prefix in RUN_IDENTITY_KEYS):
            problems.append(f"{key} ({before!r} in the run, {after!r} now)")
    if not problems:
        return []
    return [
        f"ckpt_path={ckpt_path}: a resume continues the run and cannot change {', '.join(problems)}. Drop the "
        f"override to continue the run as it was, or start a new run from these weights: "
        f"model.pretrained={ckpt_path} (fine-tuning)."
    ]


def _callback_notes(changes: Mapping[str, list]) -> list[str]:
    notes = []
    for name, (removed, added) in STATEFUL_CALLBACKS.items():
        key = f"callbacks.{name}._target_"
        if key in changes:
            before, after = changes[key]
            notes.append(removed if before and not after else added if after and not before else "")
    return [note for note in notes if note]


def restore_run_config(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, ResumeRecord | None]:
    """The config a ``ckpt_path=...`` run trains with: the checkpoint's stored run config with ``overrides`` (the
    resume command's own, e.g. from ``HydraConfig.get().overrides.task``) applied on top, and a record of the
    resume. Without ``ckpt_path``, ``cfg`` as it is and None.

    ``paths`` (and stored values inside the old run's directory) come from today's config: the resumed run writes
    into its own new directory. ``ckpt_path`` is resolved to a file (``last``: the newest run's last.ckpt).

    Raises:
        UserInputError: ``ckpt_path`` is missing or not a train.py checkpoint, or the overrides change a
            :data:`RUN_IDENTITY_KEYS` key (one line naming the key, the run's and the new value).
    """
    if cfg.get("ckpt_path") is None:
        return cfg, None
    ckpt_path = resolve_ckpt_path(
        cfg.ckpt_path, Path(cfg.paths.log_dir) / cfg.task_name, exclude=cfg.paths.get("output_dir")
    )
    checkpoint = load_checkpoint(ckpt_path)
    stored: dict[str, Any] = json.loads(json.dumps(checkpoint["hyper_parameters"]["cfg"]))  # a deep copy
    old_dir = (stored.get("paths") or {}).get("output_dir")
    raw_now = OmegaConf.to_container(cfg, resolve=False)
    merged = _relocated(stored, old_dir, raw_now)
    merged["paths"] = raw_now["paths"]
    for key, value in raw_now.items():  # top-level keys newer than the run take today's value
        merged.setdefault(key, value)
    ignored = _apply_overrides(merged, cfg, overrides)
    merged["ckpt_path"] = ckpt_path
    if "hydra" in raw_now:
        merged["hydra"] = raw_now["hydra"]

    resumed = OmegaConf.create(merged)
    OmegaConf.set_struct(resumed, True)
    # Values inside either run's own directory are locations, not settings: left out of the comparison.
    before = _relocated(stored, old_dir, {})
    after = _relocated(resolved_config(resumed), cfg.paths.get("output_dir"), {})
    changes = config_changes(before, after, ignore=("paths", "ckpt_path"))
    problems = _identity_problems(changes, ckpt_path)
    if problems:
        raise UserInputError("\n".join(problems))

    record = ResumeRecord(
        ckpt_path=str(Path(ckpt_path).resolve()),
        run_dir=old_dir,
        epoch=int(checkpoint.get("epoch", 0)),
        global_step=int(checkpoint.get("global_step", 0)),
        changed=changes,
    )
    log.info(
        "Resuming the run in %s from %s (epoch %d, step %d) with its own stored config.",
        old_dir, ckpt_path, record.epoch, record.global_step,
    )  # fmt: skip
    if changes:
        log.info("Changed on this resume: %s", "; ".join(f"{k}: {b!r} -> {a!r}" for k, (b, a) in changes.items()))
    else:
        log.info("Changed on this resume: nothing (the run continues as it was configured).")
    for line in ignored:
        log.warning("%s ignored on a resume: the run's stored config stands; give changed keys one by one.", line)
    for note in _callback_notes(changes):
        log.info(note)
    return resumed, record


def write_resume_record(output_dir: str | Path, record: ResumeRecord) -> Path:
    """``<output_dir>/resumed_from.json``: the checkpoint, run directory, epoch, step and changes of a resume."""
    path = Path(output_dir) / RECORD_FILE
    path.write_text(json.dumps(record.to_dict(), indent=2, default=str) + "\n")
    return path
