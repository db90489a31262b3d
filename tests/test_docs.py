"""The documentation's commands: every ``python train.py`` / ``evaluate.py`` / ``mobilevit.predict`` command in the
README and docs/ composes with today's configs (a key the configs lack would stop the user at once)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from string import Template

import pytest
from conftest import ROOT, compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The entry point of each documented command and the config it composes.
ENTRY_POINTS = {"train.py": "train", "evaluate.py": "eval", "mobilevit.predict": "predict"}
COMMAND = re.compile(r"(?:^|\s|`)(?:\.venv/bin/)?python3? (?:-m )?(train\.py|evaluate\.py|mobilevit\.predict)\b([^`#\n]*)")

PLACEHOLDER = re.compile(r"<[^<>\s]+>")  # <time>, <ckpt>: what the user fills in
SHELL_VARIABLE = re.compile(r"^(\w+)=\"([^\"]*)\"$", re.MULTILINE)  # common="..." in a code block, used as $common


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, config name, overrides) of every documented command, continuation lines joined."""
    found = []
    for path in DOCS:
        text = path.read_text().replace("\\\n", " ")
        variables = dict(SHELL_VARIABLE.findall(text))
        for number, line in enumerate(text.splitlines(), 1):
            for match in COMMAND.finditer(Template(line).safe_substitute(variables)):
                words = shlex.split(PLACEHOLDER.sub("x", match.group(2).split("&&")[0]))
                overrides = [word for word in words if "=" in word and not word.startswith("-")]
                found.append((f"{path.name}:{number}", ENTRY_POINTS[match.group(1)], overrides))
    return found


def _single_run(overrides: list[str]) -> list[str]:
    """A multirun's first job: each sweep (``a,b``, ``range``, ``interval``) left to the sweeper, first choice kept."""
    single = []
    for override, text in zip(OverridesParser.create().parse_overrides(overrides), overrides):
        if not override.is_sweep_override():
            single.append(text)
        elif override.is_choice_sweep():
            single.append(f"{override.get_key_element()}={list(override.sweep_string_iterator())[0]}")
    return single


COMMANDS = documented_commands()


def test_the_docs_have_commands_of_every_kind() -> None:
    kinds = {config for _, config, _ in COMMANDS}
    assert kinds == set(ENTRY_POINTS.values()) and len(COMMANDS) > 30
    assert any("trainer.max_time=" in " ".join(overrides) for _, _, overrides in COMMANDS)


@pytest.mark.parametrize(("where", "config_name", "overrides"), COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_documented_command_composes(tmp_path: Path, where: str, config_name: str, overrides: list[str]) -> None:
    cfg = compose_config(config_name, tmp_path, _single_run(overrides))
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=True)


LINK = re.compile(r"\]\(([^()\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def test_documented_links_reach_a_file_and_a_heading() -> None:
    """Every relative link of the README and docs/ names a file that exists, and a heading of it after ``#``."""
    broken = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if "://" in target or target.startswith("mailto:"):
                    continue
                file, _, anchor = target.partition("#")
                linked = (path.parent / file).resolve() if file else path
                if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                    broken.append(f"{path.name}:{number}: {target}")
    assert not broken


# Each generated table in docs/ and the command (in benchmarks/README.md) that makes it from its run record.
GENERATED_TABLES = [
    ("deployment", "docs/runs/deployment.json", [], "docs/deployment.md"),
    ("deployment", "docs/runs/deployment_avx2.json", [], "docs/deployment_avx2.md"),
    ("operator_profile", "docs/runs/operator_profile.json", ["--top", "10"], "docs/operator_profile.md"),
    ("shipped_accuracy", "docs/runs/shipped_accuracy.json", [], "docs/shipped_accuracy.md"),
    ("int8_sensitivity", "docs/runs/int8_sensitivity.json", [], "docs/int8_sensitivity.md"),
]


@pytest.mark.parametrize(("script", "record", "options", "table"), GENERATED_TABLES)
def test_generated_tables_are_what_their_records_make(
    script: str, record: str, options: list[str], table: str, tmp_path: Path
) -> None:
    """The committed table equals what its script makes from the record today: never edited by hand, never stale."""
    import importlib

    module = importlib.import_module(f"benchmarks.{script}")
    assert module.main(["--table", str(ROOT / record), *options, "--markdown", str(tmp_path / "table.md")]) == 0
    assert (ROOT / table).read_text() == (tmp_path / "table.md").read_text()
