"""Attacks on the sandbox, as a model-written program would try them through ``run_program``.

Each attack program exits 0 only when the attack worked; a host-side oracle (the listener got no
connection, the planted path is unchanged, the other sandbox passed) checks the effect, and where
it matters the same program is shown to work outside the sandbox, so the test can fail. Planted
files and sockets live in a world-accessible directory outside /tmp (which the sandbox always hid).
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from qwen_cli.sandbox import Limits, Session, run_program
from qwen_cli.sandbox import host as sandbox_host
from qwen_cli.sandbox.host import plan

FAST = Limits(wall_s=5, cpu_s=3)
needs_bwrap = pytest.mark.skipif(plan().bwrap is None, reason="; ".join(plan().weaker) or "no bubblewrap")
per_sandbox_processes = pytest.mark.skipif(
    plan().bwrap is None and not plan().root,
    reason="without namespaces an ordinary user's process cap counts all of that user's processes")


@pytest.fixture
def outside():
    """A world-writable directory on the host outside /tmp."""
    for base in ("/run", "/srv", "/var/lib", str(Path.home())):
        try:
            path = Path(tempfile.mkdtemp(prefix="qwen-sandbox-test-", dir=base))
            break
        except OSError:
            continue
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_on_host(program: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=20)


# ------------------------------------------------------------------ reaching the host
@needs_bwrap
def test_path_unix_socket_of_the_host_is_unreachable(outside):
    path = outside / "s.sock"
    received: list[bytes] = []
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        path.chmod(0o777)
        server.listen(4)
        server.settimeout(0.2)

        def accept() -> None:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and not received:
                try:
                    conn, _ = server.accept()
                except (TimeoutError, OSError):
                    continue
                with conn:
                    received.append(conn.recv(100))
                    conn.sendall(b"answer")

        listener = threading.Thread(target=accept, daemon=True)
        listener.start()
        program = (f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\n"
                   "s.sendall(b'from the sandbox')\nassert s.recv(10) == b'answer'\n")
        outcome = run_program(program, FAST)
        assert not outcome.passed and "No such file or directory" in outcome.detail, outcome
        assert received == []
        assert _run_on_host(program).returncode == 0  # the attack works outside
        listener.join()
    assert received == [b"from the sandbox"]


@needs_bwrap
def test_abstract_unix_socket_and_udp_to_localhost_are_unreachable():
    name = f"\0qwen-sandbox-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        server.bind(name)
        server.listen(1)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.5)
        program = (f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({name!r})\n")
        outcome = run_program(program, FAST)
        assert not outcome.passed and "Connection refused" in outcome.detail, outcome
        port = udp.getsockname()[1]
        run_program(f"import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                    f".sendto(b'x', ('127.0.0.1', {port}))\n", FAST)  # at most onto the sandbox's own loopback
        with pytest.raises(TimeoutError):
            udp.recvfrom(10)


@needs_bwrap
def test_writes_outside_the_work_dir_do_not_reach_the_host(outside, tmp_path):
    targets = [outside / "x.txt", tmp_path / "escaped.txt", Path(__file__).with_name("ESCAPED_BY_SANDBOX")]
    for target in targets:
        program = f"open({str(target)!r}, 'w').write('escaped')\n"
        outcome = run_program(program, FAST)
        assert not outcome.passed and not target.exists(), (target, outcome)
    # /tmp inside is private: what a program leaves there is gone with its sandbox
    marker = f"qwen-sandbox-test-{os.getpid()}"
    assert run_program(f"open('/tmp/{marker}', 'w').write('x')\n", FAST).passed
    assert not Path("/tmp", marker).exists()
    assert _run_on_host(f"open({str(targets[0])!r}, 'w').write('escaped')").returncode == 0
    assert targets[0].read_text() == "escaped"


@needs_bwrap
def test_private_writable_space_is_capped():
    program = ("import errno, os\nwritten = 0\nfor i in range(8):\n    try:\n"
               "        with open(f'f{i}', 'wb') as f:\n            f.write(os.urandom(8 << 20))\n"
               "        written += 8\n    except OSError as exc:\n        assert exc.errno == errno.ENOSPC, exc\n"
               "        break\nprint(written)\nassert written >= 40, written\n")
    outcome = run_program(program, Limits(wall_s=10, disk_bytes=20 << 20))
    assert not outcome.passed and "AssertionError: 16" in outcome.detail, outcome


@needs_bwrap
def test_host_files_are_not_visible(outside):
    planted = outside / "planted.txt"
    planted.write_text("host secret")
    planted.chmod(0o644)
    checkout = Path(__file__).resolve().parents[1] / "pyproject.toml"
    home = [Path.home() / name for name in os.listdir(Path.home())
            if not any(root.startswith(str(Path.home() / name)) for root in sandbox_host.python_roots())][:3]
    for path in (planted, checkout, Path("/etc/passwd"), Path("/sys/class/net"), Path("/run"), Path("/srv"),
                 Path("/var"), *home):
        outcome = run_program(f"import os\nassert os.path.exists({str(path)!r})\n", FAST)
        assert not outcome.passed, (path, outcome)
    assert _run_on_host(f"assert open({str(planted)!r}).read() == 'host secret'").returncode == 0


# ------------------------------------------------------------------ hardening
@needs_bwrap
def test_no_new_privs_seccomp_and_no_new_namespaces():
    program = (
        "import ctypes, os\n"
        "status = open('/proc/self/status').read()\n"
        "assert 'NoNewPrivs:\\t1' in status and 'Seccomp:\\t2' in status, status\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.unshare(0x10000000 | 0x20000) == -1 and ctypes.get_errno() == 1, 'unshare'\n"
        "assert libc.unshare(0x40000000) == -1, 'unshare net'\n"
        "assert libc.mount(b'none', b'/mnt', b'tmpfs', 0, None) == -1, 'mount'\n"
        "assert libc.umount2(b'/proc', 2) == -1, 'umount2'\n"
        "assert libc.ptrace(0, 0, None, None) == -1, 'ptrace'\n"
        "assert libc.init_module(None, 0, b'') == -1 and ctypes.get_errno() == 1, 'init_module'\n"
        "if os.uname().machine == 'x86_64':\n"
        "    pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    assert pid == -1, 'clone(CLONE_NEWUSER)'\n"
    )
    outcome = run_program(program, FAST)
    assert outcome.passed, outcome


KERNEL_SURFACE = """
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
ring = libc.syscall(425, 8, ctypes.create_string_buffer(120))  # io_uring_setup on x86-64
found = {"io_uring": "open" if ring >= 0 else errno.errorcode[ctypes.get_errno()]}
for name, family, kind in (("vsock", 40, socket.SOCK_STREAM), ("packet", 17, socket.SOCK_DGRAM),
                           ("netlink", 16, socket.SOCK_RAW), ("alg", 38, socket.SOCK_SEQPACKET),
                           ("unspec", 0, socket.SOCK_STREAM), ("x25", 9, socket.SOCK_STREAM)):
    try:
        socket.socket(family, kind).close()
        found[name] = "open"
    except OSError as exc:
        found[name] = errno.errorcode[exc.errno]
for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):  # what programs use stays
    socket.socket(family).close()
for end in socket.socketpair():
    end.close()
print(found)
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86-64 system call numbers")
def test_io_uring_and_unused_socket_families_are_refused():
    with Session(FAST) as session:
        result = session.run(KERNEL_SURFACE)
    assert result.ok, result
    found = ast.literal_eval(result.stdout)
    assert found.pop("io_uring") == "EPERM"
    assert set(found.values()) == {"EAFNOSUPPORT"}, found


def test_without_bubblewrap_a_dropped_uid_still_imports_the_standard_library(monkeypatch):
    monkeypatch.setattr(sandbox_host, "plan",
                        lambda: sandbox_host.Plan(None, plan().root, plan().cgroups, ("test: no bubblewrap",)))
    program = (f"import os, csv, decimal, fractions, sqlite3, numpy\nassert (os.getuid() != 0) == {plan().root}\n"
               "print(decimal.Decimal(1) / 8, numpy.arange(3).sum())\n")  # modules the kernel had not loaded
    outcome = run_program(program, FAST)
    assert outcome.passed, outcome
    with Session(FAST) as session:
        assert session.run("import statistics\nstatistics.mean([1, 2, 3])").value == "2"


@needs_bwrap
def test_only_the_sandbox_is_in_its_proc():
    outcome = run_program("import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
                          "assert set(pids) <= {1, 2}, pids\n", FAST)
    assert outcome.passed, outcome


def _processes_naming(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                found.append(proc.name)
        except OSError:
            continue
    return found


ESCAPEES = """
import os, subprocess, sys, time
sleeper = [sys.executable, "-c", "import time; time.sleep(30)", MARKER]
subprocess.Popen(sleeper, start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sleeper[0], sleeper)
    os._exit(0)
time.sleep(1.0)
alive = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        alive += [pid] if MARKER.encode() in open(f"/proc/{pid}/cmdline", "rb").read() else []
    except OSError:
        pass
assert len(alive) == 2, alive
"""


@needs_bwrap
def test_children_that_escape_by_setsid_and_double_fork_die_with_the_sandbox():
    marker = f"qwen-sandbox-escapee-{os.getpid()}"
    program = f"MARKER = 'qwen-sandbox-escapee-' + {str(os.getpid())!r}\n{ESCAPEES}"  # not itself a match
    outcome = run_program(program, FAST)
    assert outcome.passed, outcome  # both escapees were running when the program ended
    time.sleep(0.5)
    assert _processes_naming(marker) == []
    # the same program on the host leaves both behind (so the check above can fail)
    assert subprocess.run([sys.executable, "-c", program], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=20).returncode == 0
    left = _processes_naming(marker)
    for pid in left:
        os.kill(int(pid), 9)
    assert len(left) == 2


@needs_bwrap
def test_kill_minus_one_and_killing_the_parent_reach_nothing_outside():
    victim = subprocess.Popen(["sleep", "30"])
    try:
        outcome = run_program("import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(os.getppid(), signal.SIGKILL)\n",
                              FAST)
        assert victim.poll() is None and not outcome.passed
        assert run_program("print('next')\n", FAST).passed
    finally:
        victim.kill()
        victim.wait()


# ------------------------------------------------------------------ caps that hold across processes
@needs_bwrap
def test_memory_cap_holds_for_the_whole_sandbox():
    outcome = run_program(FORKED_HOG, Limits(wall_s=20, memory_bytes=384 << 20))
    assert not outcome.passed, outcome
    assert _run_on_host(FORKED_HOG).returncode == 0  # 4 x 150 MiB is fine without the cap


FORKED_HOG = """
import os, time
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (150 << 20)
        time.sleep(1)
        os._exit(0)
    children.append(pid)
block = b"x" * (150 << 20)
time.sleep(1)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
assert statuses == [0, 0, 0], statuses
"""


@needs_bwrap
def test_memory_cap_without_a_cgroup_is_enforced_by_polling(monkeypatch):
    monkeypatch.setattr(sandbox_host, "plan", lambda: sandbox_host.Plan(plan().bwrap, plan().root, None, ()))
    outcome = run_program(FORKED_HOG, Limits(wall_s=20, memory_bytes=384 << 20))
    assert (outcome.passed, outcome.status) == (False, "killed:memory"), outcome


@per_sandbox_processes
def test_a_fork_hog_does_not_starve_another_sandbox():
    hog = ("import os, time\nwhile True:\n    try:\n        if os.fork() == 0:\n            time.sleep(3)\n"
           "            os._exit(0)\n    except OSError:\n        break\ntime.sleep(3)\n")
    limits = Limits(wall_s=8, processes=16)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(run_program(hog, limits)))
    thread.start()
    time.sleep(1.0)
    outcome = run_program("import subprocess\nfor _ in range(4):\n    subprocess.run(['true'], check=True)\n", limits)
    thread.join()
    assert outcome.passed, outcome
    assert done and done[0].passed  # the hog met its own cap, and only its own


def test_without_bubblewrap_the_weaker_mode_still_locks_the_process_down(monkeypatch):
    monkeypatch.setattr(sandbox_host, "plan",
                        lambda: sandbox_host.Plan(None, plan().root, plan().cgroups, ("test: no bubblewrap",)))
    outcome = run_program(
        "import ctypes\nstatus = open('/proc/self/status').read()\n"
        "assert 'NoNewPrivs:\\t1' in status and 'Seccomp:\\t2' in status, status\n"
        "assert ctypes.CDLL(None).unshare(0x10000000) == -1\n", FAST)
    assert outcome.passed, outcome
