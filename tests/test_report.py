"""Results table and plot (python -m mobilevit.report) from the summary.json that train.py writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, ROOT, TINY_SYNTHETIC
from PIL import Image

from mobilevit.errors import UserInputError
from mobilevit.report import (
    COLUMNS,
    README_BEGIN,
    README_END,
    find_summaries,
    main,
    markdown_table,
    replace_readme_table,
)
from mobilevit.utils.machine import machine_label
from train import train


def test_training_writes_a_summary_that_the_report_tabulates_and_plots(make_cfg, tmp_path: Path, capsys) -> None:
    runs, run_dirs = [], []
    for name, model, eval_size in (("a", "mobilevit_xxs", 32), ("b", "mobilevitv2_050", 64)):
        overrides = [f"model={model}", "trainer.max_epochs=2", "logger=none", f"data.eval_image_size={eval_size}"]
        cfg = make_cfg([*TINY_SYNTHETIC, *FAST_TRAIN, *overrides], run_name=name)
        metrics, objects = train(cfg)
        summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
        assert summary["model"] == model and summary["image_size"] == 32 and summary["epochs"] == 2
        assert summary["eval_image_size"] == eval_size
        datamodule = objects["datamodule"]
        assert next(iter(datamodule.train_dataloader()))[0].shape[-2:] == (32, 32)
        assert next(iter(datamodule.val_dataloader()))[0].shape[-2:] == (eval_size, eval_size)
        assert summary["params"] == sum(p.numel() for p in objects["model"].net.parameters())
        assert summary["metrics"]["test/acc"] == pytest.approx(metrics["test/acc"])
        assert summary["latency_ms"] > 0 and summary["wall_time_s"] > 0 and summary["protocol"] == "SyntheticDataModule"
        # Nothing that names the machine or its folders: summaries get committed and shared.
        assert "run_dir" not in summary and "hostname" not in summary["machine"]
        assert summary["precision"] == summary["latency_precision"] == "32-true"  # FAST_TRAIN's precision
        assert str(tmp_path) not in json.dumps(summary)
        runs.append(summary)
        run_dirs.append(Path(cfg.paths.output_dir))

    table_file, plot_file = tmp_path / "out" / "results.md", tmp_path / "out" / "results.png"
    capsys.readouterr()
    experiments_file = tmp_path / "out" / "experiments.md"
    assert main([str(tmp_path), "--output", str(table_file), "--plot", str(plot_file),
                 "--experiments", str(experiments_file)]) == 0  # fmt: skip
    lines = table_file.read_text().splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |" and len(lines) == 2 + len(runs)
    for line, summary in zip(lines[2:], runs, strict=True):  # oldest first
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        resolution = "32 px (test flip TTA)" if summary["eval_image_size"] == 32 else "32 px (test 64, flip TTA)"
        assert cells[1] == summary["model"] and cells[4] == resolution and cells[5] == "2"
        assert cells[7] == machine_label(summary["machine"]) and cells[8] == "last"  # train.py's defaults
        assert cells[10] == f"{100 * summary['metrics']['test/acc']:.1f} %"
        assert cells[11] == f"{summary['metrics']['test/f1']:.3f}"
    tries = experiments_file.read_text().splitlines()[2:]
    for line, summary in zip(tries, runs, strict=True):  # each try with the overrides that made it
        assert summary["overrides"] and all(f"`{override}`" in line for override in summary["overrides"])
    assert capsys.readouterr().out.startswith(lines[0])
    with Image.open(plot_file) as image:
        assert image.format == "PNG" and image.size[0] > 800
    assert markdown_table(find_summaries([run_dirs[0]])).count("\n") == 3


def test_readme_table_is_rewritten_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n{README_BEGIN}\n| old | table |\n{README_END}\nafter\n")
    replace_readme_table(readme, "| new |\n")
    assert readme.read_text() == f"# intro\n{README_BEGIN}\n| new |\n{README_END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(UserInputError, match="README.md needs the lines"):
        replace_readme_table(readme, "| new |\n")


def test_committed_readme_table_is_the_one_generated_from_docs_runs() -> None:
    """The README's results table equals `python -m mobilevit.report docs/runs --readme README.md` output: no cell
    is typed by hand or left stale after a run is added."""
    text = (ROOT / "README.md").read_text()
    committed = text[text.index(README_BEGIN) + len(README_BEGIN) + 1 : text.index(README_END)]
    assert committed == markdown_table(find_summaries([ROOT / "docs" / "runs"]))
    assert committed == (ROOT / "docs" / "results.md").read_text()


def test_report_without_runs_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    assert "No summary.json found" in capsys.readouterr().err
    assert main([str(tmp_path / "nope")]) == 2
    assert "is neither a run directory" in capsys.readouterr().err
