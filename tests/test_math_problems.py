"""The mathematics-dataset draw is the same in every process for one seed (Math-Qwen's data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from train_fixtures import ROOT

DRAW = """
import json, warnings
warnings.filterwarnings("ignore")
from qwen_cli.data.math_problems import generate
problems, failed = generate(["numbers__is_prime", "arithmetic__mul"], 8, seed=1234)
print(json.dumps([[p.module, p.question, p.answer] for p in problems]))
"""


def _draw(hash_seed: str) -> list:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", DRAW], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)


@pytest.mark.timeout(240)
def test_two_processes_draw_the_same_problems():
    """``numbers__is_prime`` draws from sympy's own generator (seeded from the OS at import)."""
    pytest.importorskip("mathematics_dataset")
    first, second = _draw("1"), _draw("2")
    assert len(first) == 16 and {m for m, _, _ in first} == {"numbers__is_prime", "arithmetic__mul"}
    assert first == second
