"""Package layering: mobilevit.utils is plumbing that imports no domain code, and importing modules has no side
effects on global state (config resolvers, matplotlib's backend)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

UTILS = ROOT / "mobilevit" / "utils"
DOMAIN_PACKAGES = ("mobilevit.data", "mobilevit.models", "mobilevit.module")


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports: relative imports resolved (``from ..data import x`` in
    mobilevit/utils/ is mobilevit.data), and ``from package import name`` also counts package.name."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # ("mobilevit", "utils")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parent = package[: len(package) - node.level + 1] if node.level else ()
            base = ".".join([*parent, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(UTILS.glob("*.py")), ids=str)
def test_utils_import_no_domain_code(path: Path) -> None:
    domain = sorted(
        name for name in _imported_modules(path) if any(name == p or name.startswith(p + ".") for p in DOMAIN_PACKAGES)
    )
    assert not domain, f"{path.relative_to(ROOT)} imports {domain}"


def test_imports_leave_global_state_alone() -> None:
    """Importing the package, the report CLI or the run summary registers no config resolver and keeps the user's
    matplotlib backend (MPLBACKEND); the entry points register the resolver explicitly."""
    code = (
        "import matplotlib; from omegaconf import OmegaConf\n"
        "import mobilevit.utils, mobilevit.report, mobilevit.run_summary, mobilevit.metrics, mobilevit.plots\n"
        "print(OmegaConf.has_resolver('fast_precision'), matplotlib.get_backend())\n"
        "mobilevit.utils.register_config_resolvers()\n"
        "print(OmegaConf.has_resolver('fast_precision'))"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "svg", "True"]


def test_no_function_is_defined_twice_in_one_scope() -> None:
    """A second ``def`` of the same name silently replaces the first (how a merge once lost a checkpoint hook)."""
    files = [*(ROOT / "mobilevit").rglob("*.py"), *(ROOT / "tests").glob("*.py"), ROOT / "train.py", ROOT / "evaluate.py"]
    twice = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Module, ast.ClassDef)):
                names = [child.name for child in node.body if isinstance(child, (ast.FunctionDef, ast.ClassDef))]
                twice += [f"{path.relative_to(ROOT)}: {name}" for name in sorted({n for n in names if names.count(n) > 1})]
    assert not twice, twice
