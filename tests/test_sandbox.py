"""One-shot sandboxed programs (pass@k): HumanEval canonical solutions pass, wrong ones fail, runaway
programs are stopped by the limits and reported as failures while the evaluator carries on; the
pass@k estimator. The attacks are in test_sandbox_attacks.py, sessions in test_sandbox_session.py."""

from __future__ import annotations

import math
import os
import socket
import time

import pytest

from qwen_cli.evaluation.harness.passk import pass_at_k
from qwen_cli.evaluation.harness.registry import resolve
from qwen_cli.evaluation.harness.tasks import humaneval_program
from qwen_cli.sandbox import Limits, isolation, run_program, run_programs
from qwen_cli.sandbox.host import plan

FAST = Limits(wall_s=5, cpu_s=3)
needs_bwrap = pytest.mark.skipif(plan().bwrap is None, reason="; ".join(plan().weaker) or "no bubblewrap")


def _humaneval():
    return resolve("humaneval").splits["test"]


def test_canonical_solutions_pass_and_wrong_ones_fail():
    problems = _humaneval()[:12]
    good = [humaneval_program(p, p["canonical_solution"]) for p in problems]
    wrong = [humaneval_program(p, "    return None\n") for p in problems]
    outcomes = run_programs(good + wrong, FAST, workers=2)
    assert [o.passed for o in outcomes[:12]] == [True] * 12, [o.detail for o in outcomes[:12]]
    assert not any(o.passed for o in outcomes[12:])
    assert {o.status for o in outcomes[12:]} == {"failed"}


@pytest.mark.slow
def test_all_164_canonical_solutions_pass():
    problems = _humaneval()
    outcomes = run_programs([humaneval_program(p, p["canonical_solution"]) for p in problems], FAST, workers=2)
    failed = [(p["task_id"], o.detail) for p, o in zip(problems, outcomes, strict=True) if not o.passed]
    assert len(problems) == 164 and not failed


def test_exit_statuses_decide_like_a_script():
    assert run_program("import sys\nsys.exit(0)\n", FAST).passed
    outcome = run_program("import sys\nsys.exit(3)\n", FAST)
    assert (outcome.passed, outcome.status, outcome.detail) == (False, "failed", "exit status 3")
    outcome = run_program("raise SystemExit('tests failed')\n", FAST)
    assert (outcome.passed, outcome.status, outcome.detail) == (False, "failed", "exit status 1: tests failed")
    outcome = run_program("def f():\n    return 1 / 0\nf()\n", FAST)
    assert (outcome.passed, outcome.detail) == (False, "exit status 1: ZeroDivisionError: division by zero")
    # the exit status is the verdict: a program that exits 0, however, passes (documented)
    assert run_program("import os\nos._exit(0)\n", FAST).passed


def test_infinite_loop_is_stopped_by_cpu_limit():
    start = time.monotonic()
    outcome = run_program("while True:\n    pass\n", Limits(wall_s=10, cpu_s=1))
    assert not outcome.passed and outcome.status.startswith("killed"), outcome
    assert time.monotonic() - start < 6


def test_sleeping_program_is_stopped_by_wall_clock():
    outcome = run_program("import time\ntime.sleep(60)\n", Limits(wall_s=1, cpu_s=5))
    assert (outcome.passed, outcome.status) == (False, "timeout")
    assert outcome.wall_s < 5


def test_fork_bomb_is_contained_and_evaluator_carries_on():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    outcome = run_program(bomb, Limits(wall_s=3, cpu_s=3, processes=16))
    assert not outcome.passed
    # the evaluator can still start processes, and a normal program still runs and passes
    assert run_program("print('still fine')\n", FAST).passed


def test_huge_allocation_fails_with_memory_error():
    outcome = run_program("x = bytearray(10 * 1024 ** 3)\nprint(len(x))\n", FAST)
    assert not outcome.passed and "MemoryError" in outcome.detail


def test_file_size_limit():
    outcome = run_program("open('big', 'wb').write(b'x' * (64 << 20))\n", Limits(wall_s=5, file_bytes=1 << 20))
    assert not outcome.passed and "File too large" in outcome.detail


def test_writing_inside_the_work_dir_is_allowed():
    assert run_program("open('mine.txt', 'w').write('ok')\nassert open('mine.txt').read() == 'ok'\n", FAST).passed


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("QWEN_TEST_FAKE_SECRET", "s3cr3t-value-1234")
    program = (
        "import glob, os\n"
        "found = any('s3cr3t-value-1234' in v for v in os.environ.values())\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        found = found or b's3cr3t-value-1234' in open(path, 'rb').read()\n"
        "    except OSError:\n"
        "        pass\n"
        "assert found, 'secret not visible'\n"
    )
    outcome = run_program(program, FAST)
    assert not outcome.passed and "secret not visible" in outcome.detail


@needs_bwrap
def test_network_is_unreachable_even_to_the_evaluators_localhost():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
        outcome = run_program(program, FAST)
        # the sandbox's 127.0.0.1 is its own loopback, where nothing listens
        assert not outcome.passed and "Connection refused" in outcome.detail, outcome
    outcome = run_program("import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2).close()\n", FAST)
    assert not outcome.passed and "Network is unreachable" in outcome.detail, outcome
    # the same program reaches the port when run directly (so the test can fail)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(("127.0.0.1", server.getsockname()[1]), timeout=2).close()


def test_environment_is_rebuilt():
    outcome = run_program("import os\nassert set(os.environ) <= {'PATH','LANG','LC_ALL','HOME','TMPDIR',"
                          "'PYTHONHASHSEED','PYTHONDONTWRITEBYTECODE','PYTHONIOENCODING','LC_CTYPE','MPLBACKEND',"
                          "'MPLCONFIGDIR','XDG_CACHE_HOME','OMP_NUM_THREADS','OPENBLAS_NUM_THREADS',"
                          "'MKL_NUM_THREADS','PWD'}, sorted(os.environ)\n", FAST)
    assert outcome.passed, outcome.detail


def test_isolation_line_names_what_is_in_force():
    line = isolation()
    assert "seccomp" in line and "rlimits" in line
    assert ("WEAKER" in line) == bool(plan().weaker)


def test_ci_runs_with_full_isolation():
    """CI runs as root with bubblewrap installed by `make test`: nothing there may be weaker."""
    if not (os.environ.get("CI") and os.geteuid() == 0):
        pytest.skip("only CI (root) must have every piece of the isolation")
    assert plan().weaker == (), plan().weaker


@pytest.mark.parametrize(("n", "c", "k"), [(10, 3, 1), (10, 3, 5), (20, 0, 3), (5, 5, 2), (200, 17, 10)])
def test_pass_at_k_matches_the_combinatorial_formula(n, c, k):
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)
