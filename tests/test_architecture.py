"""The package layering holds: import-linter's contracts (pyproject.toml), kernels/ in its layer, no bare `kernels`."""

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
        offenders += [f"{path}:{line}" for line, name in imported_modules(path) if name.split(".")[0] == "kernels"]
    assert not offenders, offenders


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in one file; relative imports are skipped."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module or ""))
    return found


# kernels/ is a namespace folder, outside import-linter's graph: its layer is checked here. It sits
# below the model and beside the sandbox: it may use the standard library, torch, triton, flash-attn
# and qwen_cli.errors, and nothing else of ours.
KERNEL_DEPENDENCIES = {"torch", "triton", "flash_attn", "qwen_cli.errors"}


def test_kernels_import_only_lower_layers():
    offenders = []
    for path in sorted(ROOT.joinpath("kernels").glob("*.py")):
        for line, name in imported_modules(path):
            allowed = (name.split(".")[0] in sys.stdlib_module_names
                       or any(name == dep or name.startswith(dep + ".") for dep in KERNEL_DEPENDENCIES))
            if not allowed:
                offenders.append(f"{path.name}:{line} imports {name}")
    assert not offenders, offenders


def test_lower_layers_and_the_sandbox_never_import_kernels():
    lower = [*ROOT.joinpath("qwen_cli", "sandbox").rglob("*.py"),
             *(ROOT / "qwen_cli" / name for name in ("corpus.py", "fsutil.py", "errors.py"))]
    offenders = [f"{path}:{line}" for path in lower for line, name in imported_modules(path)
                 if name.startswith("qwen_cli.kernels")]
    assert not offenders, offenders
