"""Sandboxed code execution: HumanEval canonical solutions pass, wrong ones fail, hostile programs
are contained and reported as failures while the evaluator carries on; the pass@k estimator."""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import pytest

from qwen_cli.evaluation.passk import pass_at_k
from qwen_cli.evaluation.registry import resolve
from qwen_cli.evaluation.sandbox import (
    Limits,
    namespace_prefix,
    program_interpreter,
    run_program,
    run_programs,
)
from qwen_cli.evaluation.tasks import humaneval_program

FAST = Limits(wall_s=5, cpu_s=3)


def _humaneval():
    return resolve("humaneval").splits["test"]


def test_canonical_solutions_pass_and_wrong_ones_fail():
    problems = _humaneval()[:12]
    good = [humaneval_program(p, p["canonical_solution"]) for p in problems]
    wrong = [humaneval_program(p, "    return None\n") for p in problems]
    outcomes = run_programs(good + wrong, FAST, workers=2)
    assert [o.passed for o in outcomes[:12]] == [True] * 12, [o.detail for o in outcomes[:12]]
    assert not any(o.passed for o in outcomes[12:])


@pytest.mark.slow
def test_all_164_canonical_solutions_pass():
    problems = _humaneval()
    outcomes = run_programs([humaneval_program(p, p["canonical_solution"]) for p in problems], FAST)
    failed = [(p["task_id"], o.detail) for p, o in zip(problems, outcomes, strict=True) if not o.passed]
    assert len(problems) == 164 and not failed


def test_infinite_loop_is_stopped_by_cpu_limit():
    start = time.monotonic()
    outcome = run_program("while True:\n    pass\n", Limits(wall_s=10, cpu_s=1))
    assert not outcome.passed and outcome.status.startswith("killed")
    assert time.monotonic() - start < 6


def test_sleeping_program_is_stopped_by_wall_clock():
    outcome = run_program("import time\ntime.sleep(60)\n", Limits(wall_s=1, cpu_s=5))
    assert (outcome.passed, outcome.status) == (False, "timeout")
    assert outcome.wall_s < 5


def _nobody_processes() -> int:
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = next(line for line in status.read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        count += uid_line.split()[1] == "65534"
    return count


def test_fork_bomb_is_contained_and_evaluator_carries_on():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    outcome = run_program(bomb, Limits(wall_s=3, cpu_s=3, processes=16))
    assert not outcome.passed
    # the evaluator can still start processes, and a normal program still runs and passes
    assert run_program("print('still fine')\n", FAST).passed
    if program_interpreter()[1] >= 0:  # ran as nobody: nothing of the bomb may survive
        deadline = time.monotonic() + 5
        while _nobody_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _nobody_processes() == 0


def test_huge_allocation_fails_with_memory_error():
    outcome = run_program("x = bytearray(10 * 1024 ** 3)\nprint(len(x))\n", FAST)
    assert not outcome.passed and "MemoryError" in outcome.detail


def test_writes_outside_the_work_dir_are_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    repo_target = Path(__file__).resolve().parent / "ESCAPED_BY_SANDBOX"
    program = f"open({str(target)!r}, 'w').write('x')\n"
    outcome = run_program(program, FAST)
    outcome_repo = run_program(f"open({str(repo_target)!r}, 'w').write('x')\n", FAST)
    assert not outcome.passed and not outcome_repo.passed
    assert not target.exists() and not repo_target.exists()
    # writing inside its own working directory is allowed
    assert run_program("open('mine.txt', 'w').write('ok')\nassert open('mine.txt').read() == 'ok'\n", FAST).passed


def test_file_size_limit():
    outcome = run_program("open('big', 'wb').write(b'x' * (64 << 20))\n", Limits(wall_s=5, file_bytes=1 << 20))
    assert not outcome.passed and ("File too large" in outcome.detail or outcome.status == "killed:SIGXFSZ")


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


@pytest.mark.skipif(not namespace_prefix(), reason="this user may not create a network namespace")
def test_network_is_unreachable_even_to_the_evaluators_localhost():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
        outcome = run_program(program, FAST)
    assert not outcome.passed and "Network is unreachable" in outcome.detail
    # the same program reaches the port when run directly (so the test can fail)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(("127.0.0.1", server.getsockname()[1]), timeout=2).close()


def test_environment_is_rebuilt():
    outcome = run_program("import os\nassert set(os.environ) <= {'PATH','LANG','LC_ALL','HOME','TMPDIR',"
                          "'PYTHONHASHSEED','PYTHONDONTWRITEBYTECODE','PYTHONIOENCODING','LC_CTYPE'}, "
                          "sorted(os.environ)\n", FAST)
    assert outcome.passed, outcome.detail


@pytest.mark.parametrize(("n", "c", "k"), [(10, 3, 1), (10, 3, 5), (20, 0, 3), (5, 5, 2), (200, 17, 10)])
def test_pass_at_k_matches_the_combinatorial_formula(n, c, k):
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)
