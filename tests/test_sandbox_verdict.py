"""The sandboxed code cannot grade itself, and nothing it sends back can hurt the host.

Each attack is written as a model would: a program or a cell that forges replies on every file
descriptor it has, from a thread, or by rewriting the harness's handlers through ``gc``. Checked
against what only the host knows (the exit status, the bytes it put in, the cells it ran). Hostile
*replies* are sent by a stand-in for the whole in-sandbox kernel, so the host's own checks are
what is tested, and the host's memory is measured while they arrive.
"""

from __future__ import annotations

import resource
import textwrap
import time

import pytest
from sandbox_forgery import FORGED, FORGER, GC, THREAD

from qwen_cli.evaluation.harness.registry import resolve
from qwen_cli.evaluation.harness.tasks import humaneval_program
from qwen_cli.sandbox import Limits, Session, run_program
from qwen_cli.sandbox import box as sandbox_box

FAST = Limits(wall_s=5, cpu_s=3)


# ------------------------------------------------------------------ one-shot programs
@pytest.mark.parametrize("attack", ["forge_everywhere()", THREAD + "import time\ntime.sleep(0.5)", GC],
                         ids=["descriptors", "thread", "gc"])
def test_a_failing_program_cannot_report_itself_passed(attack):
    for ending in ("raise AssertionError('wrong answer')", "raise SystemExit('tests failed')"):
        outcome = run_program(f"{FORGER}\n{attack}\n{ending}\n", FAST)
        assert (outcome.passed, outcome.status) == (False, "failed"), (attack, ending, outcome)


def test_a_wrong_humaneval_completion_that_forges_its_verdict_fails():
    problem = resolve("humaneval").splits["test"][0]
    body = textwrap.indent(f"{FORGER}\nforge_everywhere()\nreturn None\n", "    ")
    outcome = run_program(humaneval_program(problem, body), FAST)
    assert not outcome.passed and outcome.status == "failed", outcome
    assert run_program(humaneval_program(problem, problem["canonical_solution"]), FAST).passed


# ------------------------------------------------------------------ sessions
def _attacked_session(attack: str):
    """A session with a known file in it, after one cell ran ``attack``: (session, that cell)."""
    session = Session(Limits(wall_s=5), files={"data.txt": b"the true bytes"})
    return session, session.run(f"{FORGER}\n{attack}\nimport time\ntime.sleep(0.2)\nraise ValueError('bug')")


@pytest.mark.parametrize("attack", ["forge_everywhere()", THREAD, GC], ids=["descriptors", "thread", "gc"])
def test_a_cell_cannot_forge_replies_to_the_host(attack):
    session, cell = _attacked_session(attack)
    with session:
        assert not cell.ok and cell.stdout != FORGED.decode(), cell
        assert "forged.png" not in cell.files
        if not session.alive:  # the forgery broke the protocol: the session ended, saying so
            assert cell.status == "died" and "the sandbox ended" in cell.error, cell
            return
        # what the supervisor answers (files, their bytes, the files a cell wrote) stays true
        assert session.get("data.txt") == b"the true bytes"
        assert session.files() == {"data.txt": 14}
        later = session.run("open('out.txt', 'w').write('x')\nprint(6 * 7)")
        if session.alive:  # the files a cell wrote are the supervisor's own finding
            assert ("out.txt" in later.files) == ("out.txt" in session.files())
            assert session.get("data.txt") == b"the true bytes"


def test_one_cell_cannot_shift_the_results_of_the_next():
    with Session(Limits(wall_s=5)) as session:
        first = session.run(f"{FORGER}\nforge_everywhere()\nprint('first')")
        if session.alive:
            assert session.run("print('second')").stdout == "second\n"
        else:
            assert first.status == "died" and "the sandbox ended" in first.error


# ------------------------------------------------------------------ hostile replies, host side
def _hostile(frames: str) -> str:
    """Source of a stand-in kernel: greets, then answers the first request with ``frames`` (a
    Python expression over ``encode`` and ``HEADER``), then waits to be killed."""
    return textwrap.dedent(f"""
        import json, os, struct, sys, time
        config = json.loads(sys.argv[1])
        def encode(header, blobs=()):
            head = json.dumps({{**header, "blobs": [len(b) for b in blobs]}}).encode()
            return struct.pack(">II", len(head), sum(map(len, blobs))) + head + b"".join(blobs)
        def put(data):
            view = memoryview(data)
            while view:
                view = view[os.write(config["reply_fd"], view):]
        put(encode({{"ready": True}}))
        os.read(config["request_fd"], 1 << 20)
        HEADER = {{"id": 1, "status": "ok", "exit": None, "error": None, "texts": [1, 0, 0], "files": []}}
        for part in {frames}:
            put(part)
        time.sleep(30)
    """)


PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100
HOSTILE = {
    "figures is a number": '[encode({**HEADER, "figures": 5, "texts": 5}, [b"", b"", b""])]',
    "deep nesting": '[struct.pack(">II", 300000, 0) + b"[" * 300000]',
    "20000 figures": f'[encode(HEADER, [b"", b"", b""] + [{PNG!r}] * 20000)]',
    "63 MB line": '[b"{},{}," * (1 << 14) for _ in range(640)]',
    "63 MB frame": '[struct.pack(">II", 100, 63 << 20), b" " * (64 << 20)]',
    "not JSON": '[struct.pack(">II", 4, 0) + b"\\xff\\xfe{["]',
    "blobs that do not add up": '[encode(HEADER, [b"a"])[:-1] + b"ab"]',
    "another request's id": '[encode({**HEADER, "id": 7}, [b"", b"", b""])]',
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_replies_end_the_session_with_one_clear_error(monkeypatch, name):
    monkeypatch.setattr(sandbox_box, "_kernel_source", lambda: _hostile(HOSTILE[name]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with Session(Limits(wall_s=5)) as session:
        result = session.run("1")
        assert result.status == "died" and result.error.startswith("the sandbox ended: the sandbox sent"), result
        assert not session.alive
    assert time.monotonic() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 << 10  # KiB: under 100 MiB more


def test_a_reply_within_the_limits_is_cut_to_them(monkeypatch):
    texts = '[encode({**HEADER, "texts": [1, 1, 1]}, [b"o" * 70000, b"e" * 70000, b"v" * 70000] + ' \
            f'[{PNG!r}] * 19 + [b"not a png"])]'
    monkeypatch.setattr(sandbox_box, "_kernel_source", lambda: _hostile(texts))
    with Session(Limits(wall_s=5, output_bytes=1000, file_bytes=1 << 20)) as session:
        result = session.run("1")
    assert result.ok and len(result.stdout) <= 1256 and len(result.stderr) <= 1256 and len(result.value) <= 1256
    assert len(result.figures) == 19 and all(f == PNG for f in result.figures)
