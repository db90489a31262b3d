"""mobilevit/utils/run.py: run directories of their own, the checkpoint path of a resume."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import yaml
from conftest import CONFIG_DIR

from mobilevit.utils.run import claim_run_dir


def _claim(path: str, barrier, results) -> None:
    barrier.wait()  # every process claims at the same moment
    results.put(claim_run_dir(path))


def test_runs_claiming_the_same_directory_at_once_get_one_each(tmp_path: Path) -> None:
    base = str(tmp_path / "runs" / "2026-12-03_12-00-00")
    context = multiprocessing.get_context("fork")  # the processes only call os.mkdir
    barrier, results = context.Barrier(6), context.Queue()
    processes = [context.Process(target=_claim, args=(base, barrier, results)) for _ in range(6)]
    for process in processes:
        process.start()
    claimed = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert claimed == sorted([base, *(f"{base}_{n}" for n in range(2, 7))])
    assert all(Path(path).is_dir() for path in claimed)


def test_one_process_gets_the_same_directory_each_time_it_asks(tmp_path: Path) -> None:
    base = str(tmp_path / "run")
    (tmp_path / "run").mkdir()  # taken by another run
    assert claim_run_dir(base) == claim_run_dir(base) == f"{base}_2"


def test_run_and_sweep_directories_are_claimed() -> None:
    hydra = yaml.safe_load((CONFIG_DIR / "hydra" / "default.yaml").read_text())
    assert hydra["run"]["dir"].startswith("${claim_run_dir:") and hydra["sweep"]["dir"].startswith("${claim_run_dir:")
