"""The seccomp filter every sandboxed process runs under, compiled to BPF by libseccomp (pyseccomp).

Everything is allowed except, answered with EPERM: new namespaces (``unshare``, ``setns``, and
``clone`` with any ``CLONE_NEW*`` flag), mounting and every call that makes or moves a mount,
``chroot``, ``ptrace`` and cross-process memory access, kernel modules and ``kexec``, plus
``bpf``, ``perf_event_open``, ``userfaultfd``, the kernel keyrings, reboot, swap, process
accounting, quotas, the kernel log, file handles, clock or host-name changes, ``io_uring_*`` (its
operations bypass this filter) and ``pidfd_getfd``. Sockets (``socket``, ``socketpair``) of any
address family but AF_UNIX, AF_INET and AF_INET6 (AF_VSOCK, AF_PACKET, AF_NETLINK, AF_ALG, ...)
answer EAFNOSUPPORT: a sandboxed program has no use for them, and the kernel code behind them is
attack surface. ``clone3``
answers ENOSYS: its flags sit in memory a filter cannot read, and the C library then falls back to
``clone``, whose flags it can. A call made in another architecture's convention (32-bit
``int 0x80`` on x86-64) kills the process, libseccomp's default.
"""

from __future__ import annotations

import errno
import functools
import tempfile

from qwen_cli.sandbox.limits import SandboxError

DENIED = (
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace", "process_vm_readv",
    "process_vm_writev", "kcmp", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "open_by_handle_at",
    "name_to_handle_at", "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "io_uring_setup", "io_uring_enter", "io_uring_register", "pidfd_getfd",
)
SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6: every other family is refused
# CLONE_NEWTIME, CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
# CLONE_NEWNET
CLONE_NEW_FLAGS = (0x80, 0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


@functools.lru_cache(maxsize=1)
def filter_program() -> bytes:
    """The filter as a BPF program (what ``bwrap --seccomp`` and ``PR_SET_SECCOMP`` load)."""
    try:
        import pyseccomp
    except (ImportError, OSError) as exc:  # OSError: libseccomp.so.2 itself is missing
        raise SandboxError(f"the sandbox needs libseccomp (apt-get install libseccomp2): {exc}") from exc
    refuse = pyseccomp.ERRNO(errno.EPERM)
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in DENIED:
        try:
            rules.add_rule(refuse, name)
        except OSError:  # no such call on this architecture
            continue
    for flag in CLONE_NEW_FLAGS:
        rules.add_rule(refuse, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    no_family = pyseccomp.ERRNO(errno.EAFNOSUPPORT)
    for call in ("socket", "socketpair"):
        rules.add_rule(no_family, call, pyseccomp.Arg(0, pyseccomp.GT, max(SOCKET_FAMILIES)))
        for family in sorted(set(range(max(SOCKET_FAMILIES))) - set(SOCKET_FAMILIES)):
            rules.add_rule(no_family, call, pyseccomp.Arg(0, pyseccomp.EQ, family))
    with tempfile.TemporaryFile() as handle:
        rules.export_bpf(handle)
        handle.seek(0)
        return handle.read()
