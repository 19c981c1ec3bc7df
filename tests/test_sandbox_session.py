"""The stateful sandbox session: variables live between cells; each cell reports stdout, stderr, the
exception, the value of its last expression, the files it wrote and the matplotlib figures it left
open; files go in and out; per-cell and whole-session time limits; a dead kernel ends the session."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from qwen_cli.sandbox import Limits, SandboxError, Session

PNG = b"\x89PNG\r\n\x1a\n"


def test_cells_share_state_and_report_output_errors_and_values():
    with Session(Limits(wall_s=5)) as session:
        first = session.run("import sys\nx = 41\nprint('out')\nprint('err', file=sys.stderr)\nx + 1")
        assert (first.status, first.stdout, first.stderr, first.value) == ("ok", "out\n", "err\n", "42")
        assert session.run("x").value == "41"
        failed = session.run("def f():\n    return 1 / 0\nf()")
        assert failed.status == "error" and failed.error == "ZeroDivisionError: division by zero"
        assert "<cell 3>" in failed.traceback and "return 1 / 0" in failed.traceback
        assert session.run("x = x + 1\nx").value == "42"  # an error does not lose the state
        syntax = session.run("def (:")
        assert syntax.status == "error" and syntax.error.startswith("SyntaxError")
        exited = session.run("import sys\nsys.exit(4)")
        assert (exited.status, exited.error) == ("exit", "exit status 4") and session.alive
        # a subprocess's output is captured too
        assert session.run("import subprocess\nsubprocess.run(['echo', 'child'])\nNone").stdout == "child\n"


def test_input_files_in_written_files_and_figures_out(tmp_path):
    rows = "city,sales\nOslo,3\nLima,5\nPune,4\n"
    source = tmp_path / "sales.csv"
    source.write_text(rows)
    with Session(Limits(wall_s=60), files={"sales.csv": source, "notes/readme.txt": b"hello"}) as session:
        result = session.run(
            "import csv\nrows = list(csv.DictReader(open('sales.csv')))\n"
            "total = sum(int(r['sales']) for r in rows)\n"
            "open('total.txt', 'w').write(str(total))\n"
            "import os\nos.makedirs('out', exist_ok=True)\n"
            "with open('out/top.csv', 'w') as f:\n    f.write(max(rows, key=lambda r: int(r['sales']))['city'])\n"
            "open('notes/readme.txt').read()")
        assert result.ok and result.value == "'hello'", result
        assert result.files == ("out/top.csv", "total.txt")
        plot = session.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.savefig('line.png')\n"
                           "plt.figure()\nplt.bar(['a', 'b'], [1, 2])\nNone")
        assert plot.ok, plot
        assert plot.files == ("line.png",)
        assert len(plot.figures) == 2 and all(f.startswith(PNG) for f in plot.figures)
        assert session.run("plt.get_fignums()").value == "[]"  # shown figures are closed, as in a notebook
        assert session.get("total.txt") == b"12"
        assert session.files() == {"sales.csv": len(rows), "notes/readme.txt": 5, "total.txt": 2,
                                   "out/top.csv": 4, "line.png": session.files()["line.png"]}
        written = session.copy_out(tmp_path / "outputs", ["total.txt", "out/top.csv", "line.png"])
    assert [p.relative_to(tmp_path / "outputs").as_posix() for p in written] == ["total.txt", "out/top.csv", "line.png"]
    assert (tmp_path / "outputs/out/top.csv").read_text() == "Lima"
    assert (tmp_path / "outputs/line.png").read_bytes().startswith(PNG)
    assert list(csv.reader(io.StringIO(rows)))[2] == ["Lima", "5"]


def test_paths_must_stay_inside_the_work_dir(tmp_path):
    with Session(Limits(wall_s=5)) as session:
        for name in ("../escape.txt", "/etc/x", "a/../../b", ""):
            with pytest.raises(SandboxError, match="not a relative path"):
                session.put(name, b"x")
        with pytest.raises(SandboxError, match="missing.txt"):
            session.get("missing.txt")
        session.run("import os\nos.symlink('/etc/ld.so.cache', 'link')")
        assert "link" not in session.files()  # only regular files are offered for copying out


def test_a_cell_past_its_limit_is_interrupted_and_the_session_lives_on():
    with Session(Limits(wall_s=5)) as session:
        session.run("x = 7")
        start = time.monotonic()
        slow = session.run("import time\nwhile True:\n    time.sleep(0.05)", timeout_s=0.5)
        assert (slow.status, slow.error) == ("timeout", "cell time limit 0.5s exceeded")
        assert time.monotonic() - start < 2
        assert session.run("x").value == "7"


def test_a_cell_that_ignores_the_interrupt_ends_the_session():
    with Session(Limits(wall_s=5)) as session:
        stubborn = session.run("while True:\n    try:\n        while True:\n            pass\n"
                               "    except BaseException:\n        pass", timeout_s=0.3)
        assert stubborn.status == "timeout" and not session.alive
        with pytest.raises(SandboxError, match="session is over"):
            session.run("1")


def test_the_whole_session_has_a_time_limit():
    with Session(Limits(wall_s=5, session_s=1.0)) as session:
        assert session.run("import time\ntime.sleep(0.4)").ok
        late = session.run("time.sleep(5)")
        assert late.status == "timeout" and late.error.startswith("cell time limit 0.")
        assert late.wall_s < 1.5
        time.sleep(0.7)
        over = session.run("1")
        assert over.status == "timeout" and over.error.startswith("session time limit") and not session.alive


def test_a_dying_kernel_ends_the_session_with_the_reason():
    with Session(Limits(wall_s=5)) as session:
        died = session.run("import os\nos._exit(3)")
        assert (died.status, died.error) == ("died", "the Python process exited with status 3")
        with pytest.raises(SandboxError):
            session.get("anything")
    with Session(Limits(wall_s=10, cpu_s=1)) as session:
        spun = session.run("while True:\n    pass")
        assert spun.status.startswith("killed:") and "CPU time limit" in spun.error, spun


def test_output_is_capped_head_and_tail():
    with Session(Limits(wall_s=5, output_bytes=1000)) as session:
        result = session.run("print('A' * 5000 + 'END')")
    assert len(result.stdout) < 1100 and result.stdout.startswith("AAA") and result.stdout.endswith("END\n")
    assert "bytes cut" in result.stdout


def test_input_file_from_a_path(tmp_path):
    image = Path(tmp_path / "pic.png")
    image.write_bytes(PNG + b"rest")
    with Session(Limits(wall_s=5), files={"pic.png": image}) as session:
        assert session.run("open('pic.png', 'rb').read()[:4]").value == repr(PNG[:4])


def test_a_cell_longer_than_the_file_limit_is_refused_before_it_runs():
    with Session(Limits(wall_s=5, file_bytes=1000)) as session:
        long = session.run("x = 1\n" + "#" * 2000)
        assert (long.status, long.error) == ("error", "the cell is longer than the 1000-byte limit")
        assert session.alive and session.run("'x' in dir()").value == "False"
