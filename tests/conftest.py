"""Shared fixtures: compose the Hydra configs with run outputs and data redirected into pytest's tmp dirs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from mobilevit.utils import register_config_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
# The real Flowers-102 copy, found the way users point the configs at local copies: $MOBILEVIT_DATA_DIR/flowers102.
FLOWERS_ROOT = Path(os.environ.get("MOBILEVIT_DATA_DIR", ROOT / "data")).expanduser().resolve() / "flowers102"

# train.py and evaluate.py live at the repository root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
# pytest-xdist (-n auto, pyproject.toml) runs a worker per core: each worker, and the processes it starts, gets its
# share of the cores, so that the workers' thread pools do not oversubscribe the machine.
if (XDIST_WORKERS := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))) > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // XDIST_WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
register_config_resolvers()  # as train.py and evaluate.py do: the configs use ${fast_precision:...}

# A tiny synthetic dataset: 3 classes, 32 px, a few images per split (generated once per session).
TINY_SYNTHETIC = [
    "data=synthetic",
    "data.num_classes=3",
    "data.train_per_class=8",
    "data.val_per_class=4",
    "data.test_per_class=4",
    "data.source_size=32",
    "data.image_size=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.resolution_schedule=null",  # one size throughout (train.yaml's recipe resizes progressively)
]
# Fast, quiet training settings for tests; float32 so that tests can compare numbers exactly
# (the default bf16 fast path is trained in tests/test_precision.py).
FAST_TRAIN = [
    "trainer=cpu",
    "trainer.precision=32-true",
    "callbacks.rich_model_summary=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def config_groups() -> dict[str, list[str]]:
    """Every config group (folder of configs/) with the option names found in it."""
    groups = {}
    for folder in sorted(path for path in CONFIG_DIR.iterdir() if path.is_dir()):
        groups[folder.name] = sorted(path.stem for path in folder.glob("*.yaml"))
    return groups


def compose_config(
    config_name: str,
    tmp_path: Path,
    overrides: Sequence[str] = (),
    data_dir: Path | None = None,
    run_name: str = "run",
) -> DictConfig:
    """Compose ``config_name`` like ``@hydra.main`` would, with logs under ``tmp_path/logs``.

    The run's output directory is ``tmp_path/logs/<task_name>/runs/<run_name>``. The hydra node is kept and
    registered (``HydraConfig``) so ``${hydra:...}`` interpolations resolve.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            config_name=config_name,
            return_hydra_config=True,
            overrides=[
                f"paths.log_dir={tmp_path / 'logs'}",
                f"paths.data_dir={data_dir or tmp_path / 'data'}",
                *overrides,
            ],
        )
    output_dir = tmp_path / "logs" / cfg.task_name / "runs" / run_name
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    output_dir.mkdir(parents=True, exist_ok=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``paths.data_dir`` shared by the tests of a session, so the tiny synthetic dataset is generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(tmp_path: Path, shared_data_dir: Path) -> Callable[..., DictConfig]:
    """``make_cfg(overrides, config_name="train", run_name="run")`` -> composed config (logs under tmp_path)."""

    def make(overrides: Sequence[str] = (), config_name: str = "train", run_name: str = "run") -> DictConfig:
        return compose_config(config_name, tmp_path, overrides, data_dir=shared_data_dir, run_name=run_name)

    return make


@pytest.fixture
def flowers_root() -> Path:
    """The real Flowers-102 copy beside the repository; skips the test when it is absent."""
    if not (FLOWERS_ROOT / "flowers-102" / "imagelabels.mat").is_file():
        pytest.skip(f"Flowers-102 copy not found at {FLOWERS_ROOT} (set MOBILEVIT_DATA_DIR to the folder holding it)")
    return FLOWERS_ROOT


def subprocess_env() -> dict[str, str]:
    """Environment for running train.py/evaluate.py in a subprocess: offline, no colour codes."""
    env = dict(os.environ)
    env.update(
        {
            "PROJECT_ROOT": str(ROOT),
            "HTTP_PROXY": "http://127.0.0.1:9",  # nothing listens there: any download fails at once
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return env


def train_two_ddp_processes(tmp_path: Path, overrides: Sequence[str], recorder: str, records: Path) -> None:
    """Run ``train.py`` with 2 CPU processes (gloo) on a tiny synthetic set (3 classes x 12 training images, 2 epochs,
    no logger, no callbacks but ``recorder``, a callback class path that gets ``folder=records``); ``overrides``
    add to or replace the data settings. Fails the test with the end of stderr when the run fails."""
    import subprocess

    env = subprocess_env()
    env["PYTHONPATH"] = str(ROOT / "tests")  # the test modules, for the recording callback
    result = subprocess.run(
        [
            sys.executable, "train.py", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "data=synthetic", "data.num_classes=3", "data.train_per_class=12", "data.val_per_class=2",
            "data.test_per_class=2", "data.source_size=48", "data.num_workers=0", "data.resolution_schedule=null",
            *overrides,
            "model=mobilevit_xxs", "logger=none", "callbacks=none", "test=false", "trainer.max_epochs=2",
            "+trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            f"+callbacks.record._target_={recorder}", f"+callbacks.record.folder={records}",
            f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def user_error(call: Callable[..., object], *args: object) -> str:
    """The message of the UserInputError that ``call(*args)`` raises (Hydra's instantiate may wrap it)."""
    from mobilevit.utils import find_user_error

    with pytest.raises(Exception) as info:
        call(*args)
    error = find_user_error(info.value)
    assert error is not None, f"not a UserInputError: {info.value!r}"
    return str(error)


def upright_image() -> Image.Image:
    """An asymmetric 48x32 image whose orientation is visible: red top half with a green block at the top left,
    blue bottom half (for EXIF-rotation checks)."""
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels[:16] = (220, 30, 30)
    pixels[16:] = (30, 30, 220)
    pixels[:8, :12] = (30, 220, 30)
    return Image.fromarray(pixels)


# One of each family: the export and quantization-aware training tests run both.
TINY_CHECKPOINT_MODELS = ("mobilevit_xxs", "mobilevitv2_050")


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> dict[str, Path]:
    """A train.py checkpoint of each of TINY_CHECKPOINT_MODELS (tiny synthetic data, 32 px, two steps)."""
    from train import train

    found = {}
    for name in TINY_CHECKPOINT_MODELS:
        tmp = tmp_path_factory.mktemp(name)
        overrides = [*TINY_SYNTHETIC, *FAST_TRAIN, f"model={name}", "trainer.max_epochs=1", "logger=none"]
        cfg = compose_config("train", tmp, [*overrides, "+trainer.limit_train_batches=2"], data_dir=shared_data_dir)
        _, objects = train(cfg)
        found[name] = Path(objects["best_ckpt"])
    return found
