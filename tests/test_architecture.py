"""The package layering holds: import-linter's contracts (pyproject.toml) and no bare `kernels` imports."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not installed (pip install -e '.[dev]')")
    return exe


def test_import_contracts_are_kept():
    result = subprocess.run([lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_imports_the_bare_kernels_package():
    offenders = []
    for path in [*ROOT.joinpath("qwen_cli").rglob("*.py"), *ROOT.joinpath("kernels").rglob("*.py"),
                 *ROOT.joinpath("bench").rglob("*.py"), *ROOT.joinpath("tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path}:{node.lineno}" for name in names if name.split(".")[0] == "kernels"]
    assert not offenders, offenders


def test_every_package_is_installed():
    """pyproject lists packages by hand (kernels/ is mapped in from outside): none may be missing."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.joinpath("qwen_cli").rglob("__init__.py")}
    found.add("qwen_cli.kernels")
    assert listed == found
