"""What this machine lets the sandbox do, found once per process, and the bubblewrap command line.

Full isolation needs bubblewrap (``bwrap``; ``make test`` installs it as root) and either root or
a kernel that lets ordinary users create user namespaces. As root, bubblewrap runs privileged
(no user namespace) and keeps only CAP_SETUID/CAP_SETGID, which the kernel process spends on
dropping to a uid of its own (one per live sandbox, claimed by binding an abstract socket
name, so parallel sandboxes never share a process count); as an ordinary user, each sandbox gets
its own user namespace, where the process count is kept per namespace. Anything weaker than that
is listed in ``Plan.weaker`` and said once on stderr when the first sandbox starts.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qwen_cli.sandbox.cgroups import Hierarchy, hierarchy
from qwen_cli.sandbox.limits import SandboxError

WORKDIR = "/mnt/data"  # where notebook-style code expects to read and write its files
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "fonts")
PRIVATE_TMPFS = (WORKDIR, "/tmp", "/dev/shm")
UID_BASE, UID_SLOTS = 0x6A000000, 4096  # a range no account or container mapping uses
NAMESPACES = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
              "--hostname", "sandbox", "--die-with-parent", "--new-session"]
AS_ROOT = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]


@dataclass(frozen=True)
class Plan:
    """How sandboxes are made here."""

    bwrap: str | None  # the bubblewrap binary, None when it is missing or refused
    root: bool  # programs drop to a uid of their own
    cgroups: Hierarchy | None  # where the memory and process caps live, None: polled / rlimits only
    weaker: tuple[str, ...]  # what falls short of docs/sandbox.md's promise here, one clause each


def python_roots() -> list[str]:
    """The directories of this interpreter (installation, virtualenv) not already under /usr."""
    roots: list[str] = []
    for path in sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                      sys.base_exec_prefix)}):
        if not any(path == top or path.startswith(top + "/") for top in (*roots, *SYSTEM_DIRS)):
            roots.append(path)
    return roots


def site_dirs() -> list[str]:
    """site-packages directories to put on the kernel's ``sys.path`` (it runs with ``-S``)."""
    return [path for path in site.getsitepackages() if os.path.isdir(path)]


def mount_flags(disk_bytes: int) -> list[str]:
    """bubblewrap arguments for the sandbox's file system: the system and Python read-only, a few
    files of /etc, fresh /proc and /dev, and size-capped private tmpfs mounts; nothing else."""
    flags: list[str] = []
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            flags += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            flags += ["--ro-bind", top, top]
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            flags += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    flags += ["--proc", "/proc", "--dev", "/dev"]
    for target in PRIVATE_TMPFS:
        flags += ["--perms", "1777", "--size", str(disk_bytes), "--tmpfs", target]
    made: set[str] = set()
    for root in python_roots():  # after the tmpfs mounts: a virtualenv under /tmp stays visible
        for parent in reversed(Path(root).parents[:-1]):  # readable parents, whatever the host's modes
            if str(parent) not in made:
                made.add(str(parent))
                flags += ["--perms", "0755", "--dir", str(parent)]
        flags += ["--ro-bind", root, root]
    return flags


def bwrap_prefix(bwrap: str, root: bool, disk_bytes: int, *options: str) -> list[str]:
    """The command line that runs a program in a new sandbox (the program follows it); ``options``
    are more bubblewrap options (file descriptors to talk to it)."""
    return [bwrap, *NAMESPACES, *(AS_ROOT if root else ["--unshare-user"]), *mount_flags(disk_bytes),
            *options, "--chdir", WORKDIR, "--"]


def _usable_bwrap(root: bool) -> tuple[str | None, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not installed; as root `make test` installs it"
    probe = [*bwrap_prefix(bwrap, root, 1 << 20), sys.executable, "-I", "-S", "-c", ""]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bwrap cannot run ({exc})"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return None, f"bwrap refused ({lines[-1] if lines else f'exit status {done.returncode}'})"
    return bwrap, ""


@functools.lru_cache(maxsize=1)
def plan() -> Plan:
    """What this machine allows (probed once: runs bubblewrap, makes and removes a cgroup)."""
    root = os.geteuid() == 0
    bwrap, why_not = _usable_bwrap(root)
    where, why_no_cgroup = hierarchy()
    weaker = []
    if bwrap is None:
        weaker.append(f"no namespaces: {why_not}; programs see the host's files, network and processes")
    if where is None:
        weaker.append(f"{why_no_cgroup}: the memory cap is " + (
            "enforced by polling every 50 ms" if bwrap else "per process only"))
    if bwrap is None and not root:
        weaker.append("the process cap counts every process of this user")
    return Plan(bwrap, root, where, tuple(weaker))


def isolation() -> str:
    """One line naming the isolation actually in force (for reports and eval JSON)."""
    p = plan()
    parts = []
    if p.bwrap:
        parts.append(f"bubblewrap ({'' if p.root else 'user, '}mount, pid, net, ipc, uts namespaces; host read-only, "
                     "Python only; private size-capped tmpfs work dir, /tmp, /dev/shm)")
    parts.append("verdict from the exit status or a supervisor out of the code's reach")
    parts.append("no-new-privs + seccomp")
    if p.cgroups:
        parts.append(f"cgroup v{p.cgroups.version} memory + process cap")
    elif p.bwrap:
        parts.append("polled memory cap")
    if p.root:
        parts.append("own uid per sandbox")
    parts.append("rlimits (cpu, address space, file size, processes), clean environment")
    if p.weaker:
        parts.append("WEAKER: " + "; ".join(p.weaker))
    return ", ".join(parts)


def claim_uid() -> tuple[int, socket.socket]:
    """A uid no other live sandbox on this machine uses, held while the returned socket is open."""
    for slot in range(UID_SLOTS):
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0qwen-sandbox-uid-{slot}")
        except OSError:
            lock.close()
            continue
        return UID_BASE + slot, lock
    raise SandboxError(f"all {UID_SLOTS} sandbox uids are in use")
