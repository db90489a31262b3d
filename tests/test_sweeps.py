"""Hyper-parameter search with the Optuna sweeper, and the SLURM launcher config (composed, never launched)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import yaml
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC, subprocess_env
from omegaconf import OmegaConf
from recorders import Score, ScriptedValidation, target

SEARCHED = {"optimizer.lr", "optimizer.weight_decay", "module.label_smoothing", "model.drop_rate"}


@pytest.mark.parametrize("experiment", [None, "quickstart", "flowers102_stratified", "flowers102_paper"])
def test_optuna_search_space_fits_the_config(experiment: str | None, make_cfg) -> None:
    cfg = make_cfg(["hparams_search=optuna", *([f"experiment={experiment}"] if experiment else [])])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.n_trials == 20
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.optimized_metric == "val/acc"
    assert set(sweeper.params) == SEARCHED
    for key in sweeper.params:  # every searched key exists, so each trial's override applies
        assert OmegaConf.select(cfg, key, default=None) is not None, key


def test_optuna_sweep_runs_two_trials(tmp_path: Path, shared_data_dir: Path) -> None:
    """Two trials of 2 epochs each, whose val/acc is 1.0 after epoch 1 and 0.0 after epoch 2: the sweep optimises
    each trial's best value (1.0), not its final one."""
    env = {**subprocess_env(), "PYTHONPATH": str(ROOT / "tests")}  # recorders, for the scripted validation
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={shared_data_dir}",
            *TINY_SYNTHETIC,
            *FAST_TRAIN,
            "model=mobilevit_xxs",
            "trainer.max_epochs=2",
            "+trainer.limit_train_batches=2",
            "logger=none",
            "test=false",
            f"+callbacks.scripted._target_={target(ScriptedValidation)}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    trials = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    assert trials == ["0", "1"]
    sampled = []
    for trial in trials:
        overrides = yaml.safe_load((sweep_dir / trial / ".hydra" / "overrides.yaml").read_text())
        params = dict(item.split("=", 1) for item in overrides if item.split("=", 1)[0] in SEARCHED)
        assert set(params) == SEARCHED
        sampled.append(params)
        assert (sweep_dir / trial / "checkpoints" / "last.ckpt").is_file()
    assert sampled[0] != sampled[1]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == SEARCHED
    for trial in trials:
        metrics = json.loads((sweep_dir / trial / "summary.json").read_text())["metrics"]
        assert metrics["val/acc"] == 0.0 and metrics["val/acc_best"] == 1.0
    assert results["best_value"] == 1.0  # the sweep returned each trial's best val/acc, not the final one


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_slurm_launcher_composes(launcher: str, make_cfg) -> None:
    cfg = make_cfg([f"hydra/launcher={launcher}", "experiment=flowers102_paper"])
    node = cfg.hydra.launcher
    launcher_class = hydra.utils.get_class(node._target_)
    assert launcher_class.__name__ == "SlurmLauncher"
    assert node.submitit_folder.startswith(cfg.hydra.sweep.dir)
    if launcher == "slurm":  # the project preset: one task per GPU, a day of wall time
        assert node.gpus_per_node == node.tasks_per_node == 1 and node.timeout_min == 1440 and node.cpus_per_task == 8


# ----------------------------------------------------------------------------- the Optuna 5 sweeper plugin

import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402

import optuna  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from hydra_plugins.mobilevit_optuna_sweeper._results import write_results  # noqa: E402
from hydra_plugins.mobilevit_optuna_sweeper._search_space import grid_values, parse_search_space  # noqa: E402
from hydra_plugins.mobilevit_optuna_sweeper._storage import open_storage  # noqa: E402
from mobilevit.errors import UserInputError  # noqa: E402

# The search-space syntax of hydra.sweeper.params, with the semantics of Hydra's own Optuna plugin (range: end included).
SYNTAX_TABLE = [
    ("choice(0.0, 0.05, 0.1)", CategoricalDistribution([0.0, 0.05, 0.1])),
    ("choice(adamw, sgd)", CategoricalDistribution(["adamw", "sgd"])),
    ("choice(true, false)", CategoricalDistribution([True, False])),
    ("range(1, 5)", IntDistribution(1, 5)),  # 5 included (Hydra's basic sweeper would stop at 4)
    ("range(8, 64, 8)", IntDistribution(8, 64, step=8)),
    ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.5, step=0.1)),
    ("interval(0.0, 0.3)", FloatDistribution(0.0, 0.3)),
    ("interval(1, 4)", FloatDistribution(1.0, 4.0)),  # Hydra's interval() is a float interval, even from ints
    ("int(interval(1.0, 4.0))", IntDistribution(1, 4)),
    ("tag(log, interval(1e-4, 5e-3))", FloatDistribution(1e-4, 5e-3, log=True)),
    ("tag(log, int(interval(16, 256)))", IntDistribution(16, 256, log=True)),
]
FIXED_TABLE = [("0.1", "0.1"), ("adamw", "adamw"), ("[1,2]", "[1,2]"), ("null", "null")]


@pytest.mark.parametrize(("expression", "expected"), SYNTAX_TABLE, ids=[row[0] for row in SYNTAX_TABLE])
def test_search_space_syntax(expression: str, expected: optuna.distributions.BaseDistribution) -> None:
    space = parse_search_space({"optimizer.lr": expression})
    assert space.distributions == {"optimizer.lr": expected} and space.fixed == {}


@pytest.mark.parametrize(("expression", "expected"), FIXED_TABLE)
def test_search_space_fixed_values(expression: str, expected: str) -> None:
    space = parse_search_space({"optimizer.lr": expression})
    assert space.distributions == {} and space.fixed == {"optimizer.lr": expected}


def test_search_space_command_line_wins_and_trial_overrides() -> None:
    """Command-line overrides follow hydra.sweeper.params: a fixed value there takes a key out of the search."""
    space = parse_search_space(
        {"optimizer.lr": "interval(1e-4, 1e-2)", "optimizer": "choice(adamw, sgd)"},
        ["optimizer.lr=0.001", "+trainer.limit_train_batches=2", "model.drop_rate=range(0.0, 0.2, 0.1)"],
    )
    assert list(space.distributions) == ["optimizer", "model.drop_rate"]
    assert space.fixed == {"optimizer.lr": "0.001", "+trainer.limit_train_batches": "2"}
    assert space.overrides({"optimizer": "sgd", "model.drop_rate": 0.1}) == [
        "optimizer=sgd", "model.drop_rate=0.1", "optimizer.lr=0.001", "+trainer.limit_train_batches=2"
    ]  # fmt: skip


def test_grid_covers_what_the_other_samplers_draw() -> None:
    assert grid_values("k", IntDistribution(1, 5)) == [1, 2, 3, 4, 5]
    assert grid_values("k", IntDistribution(8, 32, step=8)) == [8, 16, 24, 32]
    assert grid_values("k", FloatDistribution(0.0, 0.2, step=0.1)) == pytest.approx([0.0, 0.1, 0.2])
    assert grid_values("k", CategoricalDistribution(["a", "b"])) == ["a", "b"]
    with pytest.raises(UserInputError, match=r"hydra.sweeper.params.k: the grid sampler needs a discrete"):
        grid_values("k", FloatDistribution(0.0, 1.0))


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("interval(1e-4)", "interval"),
        ("tag(log, interval(0, 1))", "low > 0"),
        ("interval(5, 1)", "low <= high"),
        ("range(1, 5, 0)", "step > 0"),
        ("glob(*)", "not supported"),
    ],
)
def test_malformed_search_space_names_the_key(expression: str, reason: str) -> None:
    with pytest.raises(UserInputError) as info:
        parse_search_space({"optimizer.lr": expression})
    message = str(info.value)
    assert message.startswith(f"hydra.sweeper.params.optimizer.lr: cannot use {expression!r}") and reason in message
    assert "choice(a, b, ...), range(start, stop[, step]), interval(low, high)" in message and "\n" not in message


# The random sampler with this seed draws score 1.0 for trial 0, then 0.0 for trial 1.
SCORED = [
    "hydra.sweeper.params=null", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=10",
    "hydra.sweeper.pruner.n_startup_trials=1", "optimized_metric=val/score", f"+callbacks.score._target_={target(Score)}",
    "+callbacks.score.value=choice(1.0, 0.0)",
]  # fmt: skip
# One optimizer step and one validation batch per epoch, no reports: a trial is a few seconds.
QUICK_TRIAL = [
    *TINY_SYNTHETIC, *FAST_TRAIN, "model=mobilevit_xxs", "logger=none", "test=false", "callbacks.reports=null",
    "callbacks.time_to_accuracy=null", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
    "+trainer.num_sanity_val_steps=0",
]  # fmt: skip


def _sweep_command(sweep_dir: Path, shared_data_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "train.py", "-m", "hparams_search=optuna", f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={sweep_dir.parent / 'logs'}", f"paths.data_dir={shared_data_dir}", *QUICK_TRIAL, *overrides,
    ]  # fmt: skip


def _sweep(sweep_dir: Path, shared_data_dir: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env["PYTHONPATH"] = str(ROOT / "tests")  # recorders.Score
    return subprocess.run(
        _sweep_command(sweep_dir, shared_data_dir, *overrides),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="mobilevit", storage=open_storage(str(sweep_dir / "optuna.journal")))


def _trial_dirs(sweep_dir: Path) -> list[str]:
    return sorted((p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=int)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_sweep_resumes_to_its_total_budget(tmp_path: Path, shared_data_dir: Path) -> None:
    """n_trials=2, then the same sweep directory with n_trials=4: 4 trials in directories 0-3, the first two left
    untouched; the result files and plots exist, and the study loads from its journal in a fresh process."""
    sweep_dir = tmp_path / "sweep"
    first = _sweep(sweep_dir, shared_data_dir, "hydra.sweeper.n_trials=2", "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert _trial_dirs(sweep_dir) == ["0", "1"]
    before = {trial: _snapshot(sweep_dir / trial) for trial in ("0", "1")}
    assert before["0"] and all("checkpoints/last.ckpt" in files for files in before.values())

    second = _sweep(sweep_dir, shared_data_dir, "hydra.sweeper.n_trials=4", "trainer.max_epochs=1")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 trials so far, budget 4" in second.stdout + second.stderr
    assert _trial_dirs(sweep_dir) == ["0", "1", "2", "3"]
    assert {trial: _snapshot(sweep_dir / trial) for trial in ("0", "1")} == before  # same files, same mtimes

    for name in ("optimization_results.yaml", "trials.csv", "optimization_history.png", "param_importances.png",
                 "parallel_coordinate.png"):  # fmt: skip
        assert (sweep_dir / name).stat().st_size > 0, name
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["trials"] == {"COMPLETE": 4} and set(results["best_params"]) == SEARCHED
    rows = (sweep_dir / "trials.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["number", "state", "value"] and len(rows) == 5
    assert [row.split(",")[:2] for row in rows[1:]] == [[str(n), "COMPLETE"] for n in range(4)]
    header = rows[0].split(",")
    assert all(row.split(",")[header.index("epochs")] == "1" for row in rows[1:])
    assert all(float(row.split(",")[header.index("wall_time_s")]) > 0 for row in rows[1:])

    code = (
        "import optuna, sys\n"
        "from optuna.storages.journal import JournalFileBackend\n"
        "storage = optuna.storages.JournalStorage(JournalFileBackend(sys.argv[1]))\n"
        "study = optuna.load_study(study_name='mobilevit', storage=storage)\n"
        "print(len(study.trials), study.best_trial.number, study.best_value)"
    )
    fresh = subprocess.run([sys.executable, "-c", code, str(sweep_dir / "optuna.journal")], capture_output=True,
                           text=True, check=True)  # fmt: skip
    count, best, value = fresh.stdout.split()
    assert int(count) == 4 and int(best) == results["best_trial"] and float(value) == pytest.approx(results["best_value"])


def test_pruning_stops_clearly_worse_trials(tmp_path: Path, shared_data_dir: Path) -> None:
    """A median pruner with one start-up trial, and a search space whose 0.0 trials score clearly worse: trial 1
    (0.0, after trial 0 completed with 1.0) is pruned at its first epoch. It ends cleanly (last.ckpt, summary.json
    says pruned, no traceback) and the study records it as PRUNED."""
    sweep_dir = tmp_path / "sweep"
    result = _sweep(sweep_dir, shared_data_dir, "hydra.sweeper.n_trials=2", "trainer.max_epochs=3", *SCORED)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    trials = _study(sweep_dir).trials
    pruned = [trial for trial in trials if trial.state == TrialState.PRUNED]
    assert [trial.number for trial in pruned] == [1], [(t.number, t.state.name, t.params) for t in trials]
    for trial in trials:
        summary = json.loads((sweep_dir / str(trial.number) / "summary.json").read_text())
        if trial.state == TrialState.PRUNED:
            assert trial.params == {"+callbacks.score.value": 0.0} and trial.user_attrs["pruned_epoch"] == 0
            assert summary["stopped"]["reason"] == "pruned" and summary["stopped"]["epoch"] == 1 < 3
            assert (sweep_dir / str(trial.number) / "checkpoints" / "last.ckpt").is_file()
        else:
            assert trial.state == TrialState.COMPLETE and summary["stopped"]["reason"] == "max_epochs"
    rows = {row.split(",")[0]: row.split(",")[1] for row in (sweep_dir / "trials.csv").read_text().splitlines()[1:]}
    assert rows[str(pruned[0].number)] == "PRUNED"


def test_pruning_under_ddp(tmp_path: Path, shared_data_dir: Path) -> None:
    """trainer=ddp with 2 CPU processes: the rank-1 process (started by Lightning re-running the command) runs the
    same trial in the same directory without adding trials, and rank 0's pruning decision stops both ranks."""
    sweep_dir, record = tmp_path / "sweep", tmp_path / "ranks"
    quick = [override for override in QUICK_TRIAL if override not in ("trainer=cpu", "data.batch_size=8")]
    command = _sweep_command(sweep_dir, shared_data_dir, "hydra.sweeper.n_trials=2", "trainer.max_epochs=3", *SCORED)
    command = [arg for arg in command if arg not in QUICK_TRIAL or arg in quick] + [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=4",
        f"+callbacks.score.record={record}/${{optuna_trial.number}}",
    ]  # fmt: skip
    env = subprocess_env()
    env["PYTHONPATH"] = str(ROOT / "tests")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(sweep_dir).trials
    assert [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert _trial_dirs(sweep_dir) == ["0", "1"]
    assert {rank.name: rank.read_text() for rank in (record / "1").iterdir()} == {"rank0": "1", "rank1": "1"}
    assert {rank.name: rank.read_text() for rank in (record / "0").iterdir()} == {"rank0": "3", "rank1": "3"}


def test_sigterm_mid_trial_then_resume(tmp_path: Path, shared_data_dir: Path) -> None:
    """SIGTERM while trial 0 trains: the sweep stops and trial 0 is failed; the same sweep again replaces it, and
    the budget (2) holds: trials 1 and 2 complete."""
    sweep_dir = tmp_path / "sweep"
    env = subprocess_env()
    command = _sweep_command(sweep_dir, shared_data_dir, "hydra.sweeper.n_trials=2", "trainer.max_epochs=1000")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = sweep_dir / "0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.is_file(), (process.kill(), process.communicate()[0][-3000:])
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 128 + signal.SIGTERM
    assert [t.state for t in _study(sweep_dir).trials] == [TrialState.FAIL], output[-3000:]
    assert json.loads((sweep_dir / "0" / "summary.json").read_text())["stopped"]["reason"] == "sigterm"

    resumed = _sweep(sweep_dir, shared_data_dir, "hydra.sweeper.n_trials=2", "trainer.max_epochs=1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    states = [trial.state for trial in _study(sweep_dir).trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert _trial_dirs(sweep_dir) == ["0", "1", "2"]


def test_a_killed_sweepers_running_trials_are_failed(tmp_path: Path) -> None:
    """Trials left RUNNING by a sweeper process of this machine that is gone (SIGKILL, crash) are failed on resume;
    those of live processes or other machines are left running."""
    from hydra_plugins.mobilevit_optuna_sweeper._sweeper import OptunaSweeperImpl

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study = optuna.create_study(storage=open_storage(str(tmp_path / "optuna.journal")), study_name="s")
    sweeper = OptunaSweeperImpl(None, None, "minimize", None, "s", 3, 1, 0.0, None)
    owners = [
        {"host": sweeper.owner["host"], "pid": gone.pid},
        {"host": sweeper.owner["host"], "pid": os.getpid()},
        {"host": "another-machine", "pid": gone.pid},
    ]
    for owner in owners:
        study.ask().set_user_attr("sweeper", owner)
    sweeper._fail_interrupted_trials(study)
    assert [trial.state for trial in study.trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]


def test_a_sampler_is_not_a_pruner() -> None:
    from hydra_plugins.mobilevit_optuna_sweeper._sweeper import PRUNERS, OptunaSweeperImpl

    cfg = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler"})
    with pytest.raises(UserInputError, match=r"hydra.sweeper.pruner._target_='optuna.samplers.RandomSampler' is not"):
        OptunaSweeperImpl._build(cfg, "pruner", optuna.pruners.BasePruner, PRUNERS)


def test_parallel_trials_overlap_with_the_joblib_launcher(tmp_path: Path, shared_data_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = _sweep(
        sweep_dir, shared_data_dir, "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = _study(sweep_dir).trials
    assert first.state == second.state == TrialState.COMPLETE
    assert first.datetime_start < second.datetime_complete and second.datetime_start < first.datetime_complete
    assert _trial_dirs(sweep_dir) == ["0", "1"]
    for trial in (first, second):  # each job ran in a worker process, in its trial's directory
        summary = json.loads((sweep_dir / str(trial.number) / "summary.json").read_text())
        assert f"++optuna_trial.number={trial.number}" in summary["overrides"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("hydra.sweeper.sampler._target_=optuna.samplers.NoSuchSampler", "hydra.sweeper.sampler: cannot build"),
        ("hydra.sweeper.pruner._target_=optuna.pruners.NoSuchPruner", "hydra.sweeper.pruner: cannot build"),
        ("optimizer.lr=tag(log, interval(0, 1))", "optimizer.lr: cannot use 'tag(log, interval(0, 1))' (`low > 0`"),
        ("hydra.sweeper.storage=sqlite:////no/such/folder/study.db", "hydra.sweeper.storage="),
        ("optimized_metric=val/nope", "callbacks.optuna_pruning.monitor='val/nope'"),
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2(
    override: str, expected: str, tmp_path: Path, shared_data_dir: Path
) -> None:
    result = _sweep(tmp_path / "sweep", shared_data_dir, "hydra.sweeper.n_trials=1", "trainer.max_epochs=1", override)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    choices = {"sampler": "tpe | random | grid", "pruner": "median | hyperband | none", "cannot use": "choice(a, b, ...)",
               "storage": "sqlite:///", "monitor": "val/acc"}  # fmt: skip
    assert any(key in errors[0] and valid in errors[0] for key, valid in choices.items())
    assert "Traceback" not in result.stderr


def test_result_files_plots_and_tensorboard(tmp_path: Path) -> None:
    """optimization_results.yaml (best of the completed trials), trials.csv (every trial, with epochs), the three
    PNG plots, and the plots in TensorBoard when asked."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study = optuna.create_study(direction="maximize", study_name="s")
    space = {"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True), "model.drop_rate": CategoricalDistribution([0.0, 0.1])}
    rows = [(1e-3, 0.0, 0.5, TrialState.COMPLETE), (3e-3, 0.1, 0.8, TrialState.COMPLETE),
            (2e-4, 0.1, 0.6, TrialState.COMPLETE), (1e-4, 0.0, None, TrialState.PRUNED), (5e-3, 0.0, None, TrialState.FAIL)]  # fmt: skip
    for lr, drop, value, state in rows:
        study.add_trial(optuna.trial.create_trial(
            params={"optimizer.lr": lr, "model.drop_rate": drop}, distributions=space, value=value, state=state,
            user_attrs={"epochs": 3 if value else 1, **({"pruned_epoch": 0} if state == TrialState.PRUNED else {})},
            intermediate_values={0: value if value is not None else 0.1},
        ))  # fmt: skip
    written = write_results(study, tmp_path, "in memory", tensorboard=True)
    names = {path.name for path in written}
    assert names == {"optimization_results.yaml", "trials.csv", "optimization_history.png", "param_importances.png",
                     "parallel_coordinate.png"}  # fmt: skip
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["best_value"] == 0.8 and results["best_trial"] == 1
    assert results["best_params"] == {"optimizer.lr": 3e-3, "model.drop_rate": 0.1}
    assert results["trials"] == {"COMPLETE": 3, "FAIL": 1, "PRUNED": 1}
    lines = (tmp_path / "trials.csv").read_text().splitlines()
    assert lines[0] == ("number,state,value,optimizer.lr,model.drop_rate,epochs,pruned_epoch,wall_time_s,"
                        "datetime_start")  # fmt: skip
    assert lines[4].split(",")[:8] == ["3", "PRUNED", "", "0.0001", "0.0", "1", "0", lines[4].split(",")[7]]
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    tags = EventAccumulator(str(events), size_guidance={"images": 0}).Reload().Tags()["images"]
    assert set(tags) == {"optuna/optimization_history", "optuna/param_importances", "optuna/parallel_coordinate"}


def test_too_few_trials_skip_the_plots_they_cannot_draw(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="s")
    written = write_results(study, tmp_path, "in memory")
    assert {path.name for path in written} >= {"optimization_results.yaml", "trials.csv"}
    assert yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["best_value"] is None


def test_hydra_finds_the_sweeper_by_its_scan_and_entry_point() -> None:
    from importlib.metadata import entry_points

    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    from hydra_plugins.mobilevit_optuna_sweeper.optuna_sweeper import OptunaSweeper

    # hydra-core 1.3's scan of hydra_plugins (it loads modules outside sys.modules: compare class paths)
    scanned = [f"{plugin.__module__}.{plugin.__name__}" for plugin in Plugins.instance().discover(Sweeper)]
    assert "hydra_plugins.mobilevit_optuna_sweeper.optuna_sweeper.OptunaSweeper" in scanned
    (point,) = entry_points(group="hydra.plugins")  # read by Hydra 1.4
    assert point.value == "hydra_plugins.mobilevit_optuna_sweeper.optuna_sweeper:OptunaSweeper"
    assert issubclass(point.load(), Sweeper) and point.load().__qualname__ == OptunaSweeper.__qualname__


@pytest.mark.slow
def test_a_regular_install_ships_the_plugin(tmp_path: Path) -> None:
    """The wheel (what `pip install .` installs) holds the plugin under the hydra_plugins namespace package (no
    __init__.py, which would hide other plugins) and the hydra.plugins entry point."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    (wheel,) = tmp_path.glob("mobilevit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points_file,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points_text = archive.read(entry_points_file).decode()
    plugin = "hydra_plugins/mobilevit_optuna_sweeper/"
    assert {plugin + name for name in ("__init__.py", "config.py", "optuna_sweeper.py", "_sweeper.py")} <= names
    assert "hydra_plugins/__init__.py" not in names
    assert "[hydra.plugins]" in entry_points_text and "optuna_sweeper:OptunaSweeper" in entry_points_text
