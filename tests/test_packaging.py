"""Our top-level kernels/ folder never shadows the PyPI package `kernels` (a kernel hub transformers
imports when it builds a model), from the checkout root, under pytest, or once installed as a wheel;
and it stays importable as `qwen_cli.kernels` everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Builds a one-layer transformers Qwen2 model (transformers imports the hub `kernels` on the way),
# then imports our kernels, and prints where each came from.
PROBE = """
import kernels, transformers as T
T.Qwen2ForCausalLM(T.Qwen2Config(num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                 num_attention_heads=4, num_key_value_heads=4, vocab_size=1000))
import qwen_cli.kernels.attention as ours
print(kernels.__file__)
print(ours.__file__)
"""


def hub_kernels_installed() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("kernels")
    return spec is not None and spec.origin is not None and not ours(Path(spec.origin))


def ours(path: Path) -> bool:
    """Whether a module file lies in this checkout's kernels/ folder (under either of its names)."""
    return path.resolve().parent == (ROOT / "kernels").resolve()


def run_probe(cwd: Path, env: dict | None = None) -> tuple[Path, Path]:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    hub, ours = result.stdout.split()
    return Path(hub), Path(ours)


def test_checkout_root_does_not_shadow_the_hub_package():
    """`python -c` puts the working directory first on sys.path: the checkout's kernels/ must lose."""
    hub, mine = run_probe(ROOT)
    assert not ours(hub)
    assert ours(mine) and mine.name == "attention.py"


def test_under_pytest_the_hub_package_wins():
    """pytest (run as `python -m pytest` from the root) also has the checkout on sys.path."""
    import importlib

    import transformers as T

    import qwen_cli.kernels.attention as mine

    T.Qwen2ForCausalLM(T.Qwen2Config(num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                     num_attention_heads=4, num_key_value_heads=4, vocab_size=1000))
    hub = importlib.import_module("kernels")  # the bare name, as transformers imports it
    assert hub.__file__ is None or not ours(Path(hub.__file__))
    assert hub_kernels_installed() == (hub.__file__ is not None)
    assert ours(Path(mine.__file__))


def test_kernels_folder_is_never_a_regular_package():
    """An __init__.py in kernels/ is what made the folder win over the installed package."""
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert (ROOT / "qwen_cli" / "kernels").resolve() == (ROOT / "kernels").resolve()


def test_installed_wheel_holds_every_module_and_no_top_level_kernels(tmp_path):
    """The wheel is what users get: every module of the checkout, kernels under qwen_cli/ only."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        pytest.fail(build.stderr[-3000:])
    (wheel,) = tmp_path.glob("qwen_cli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p for p in ROOT.joinpath("qwen_cli").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    expected = {str(p.relative_to(ROOT)) for p in shipped}  # modules and data files (word lists, task data)
    expected |= {f"qwen_cli/kernels/{p.name}" for p in ROOT.joinpath("kernels").glob("*.py")}
    assert expected <= names, sorted(expected - names)
    assert not any(name.startswith("kernels/") for name in names)
    assert "qwen_cli/prepare/wordlists/en.txt" in names

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    hub, mine = run_probe(tmp_path, env)  # outside the checkout: the wheel's copy is the one found
    assert target in mine.parents
    assert not ours(hub)
