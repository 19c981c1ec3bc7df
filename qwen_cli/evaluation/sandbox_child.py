"""Sandbox child: runs inside the new namespaces, locks itself down, then execs the program.

Invoked by ``qwen_cli.evaluation.sandbox`` as
``python -I sandbox_child.py PROG WORKDIR PRIVATE_TMP CPU_S AS_BYTES FSIZE_BYTES NPROC DROP_UID PYTHON``
(DROP_UID -1: keep the current uid).
Steps: read the program; with a private mount namespace, hide /tmp, /var/tmp and /dev/shm under
fresh size-capped tmpfs mounts and work in /tmp/work; drop root to DROP_UID (``nobody``); set the rlimits;
exec PYTHON (an interpreter nobody may run) on the program. Standard library only (runs with ``-I``).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

MS_NOSUID, MS_NODEV = 2, 4
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def _mount_tmpfs(target: str, size_bytes: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"size={size_bytes},mode=1777".encode()
    if libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def main(argv: list[str]) -> None:
    prog, workdir, private_tmp, cpu_s, as_bytes, fsize, nproc, drop_uid, python = argv
    with open(prog, encoding="utf-8") as handle:
        source = handle.read()
    fsize_bytes = int(fsize)
    if private_tmp == "1":
        for target in PRIVATE_DIRS:
            if os.path.isdir(target):
                _mount_tmpfs(target, 4 * fsize_bytes)
        workdir = "/tmp/work"
        os.mkdir(workdir)
        os.environ.update(HOME=workdir, TMPDIR=workdir)
    path = os.path.join(workdir, "main.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(source)
    uid = int(drop_uid)
    if os.geteuid() == 0 and uid >= 0:
        os.chown(workdir, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(workdir)
    limits = {
        resource.RLIMIT_CPU: int(cpu_s),
        resource.RLIMIT_AS: int(as_bytes),
        resource.RLIMIT_FSIZE: fsize_bytes,
        resource.RLIMIT_NPROC: int(nproc),
        resource.RLIMIT_CORE: 0,
    }
    for which, value in limits.items():
        resource.setrlimit(which, (value, value))
    os.execve(python, [python, "-I", path], dict(os.environ))


if __name__ == "__main__":
    main(sys.argv[1:])
