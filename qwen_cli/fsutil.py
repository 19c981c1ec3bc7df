"""Atomic output: build a directory or file under a temporary name, fsync it, then rename.

A reader never sees a half-written result: either the previous version or the complete new
one. Used for checkpoints, token shards, tokenizer directories and reports.

A write that fails (a full disk, no permission, a directory where a file should go) raises
:class:`WriteError`, a ``UserError`` naming the output (``OUT: cannot write (No space left on
device)``), after the temporary files are removed. Errors raised inside the ``with`` block
count too: an ``OSError``, or an exception from a Rust-backed writer whose message ends in
Rust's ``(os error N)`` (``safetensors`` raises ``SafetensorError`` so). Reads inside the block
should raise their own ``UserError``; an ``OSError`` that names only files outside the output
(a source that could not be read) is shown with that file's name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from qwen_cli.errors import UserError

_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class WriteError(UserError):
    """An output that could not be written: ``PATH: cannot write (REASON)``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: cannot write ({reason})")
        self.path, self.reason = Path(path), reason


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and the directories themselves."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` as ``dst`` (no bytes written), or copy it where the file system cannot link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_shareable(path: Path, mode: int = 0o666) -> None:
    """mkdtemp/mkstemp (and safetensors) create 0700/0600; give results the permissions a plain write would."""
    os.chmod(path, mode & ~_umask())


def _prepare_parent(target: Path) -> Path:
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{parent}: cannot create output directory ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"{parent}: output directory is not writable")
    return parent


def check_writable(target: str | os.PathLike) -> None:
    """Raise ``WriteError`` now if the file ``target`` could not be written later: it is a directory,
    or the nearest existing directory above it is not a writable directory. Creates nothing."""
    target = Path(target)
    if target.is_dir():
        raise WriteError(target, os.strerror(errno.EISDIR))
    above = target.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise WriteError(target, f"{above} is not a directory")
    if not os.access(above, os.W_OK):
        raise WriteError(target, f"{above} is not writable")


def _as_os_error(exc: BaseException) -> OSError | None:
    """``exc`` itself if an ``OSError``; one rebuilt from a Rust ``(os error N)`` message; else None."""
    if isinstance(exc, OSError):
        return exc
    match = None if isinstance(exc, UserError) else _RUST_OS_ERROR.search(str(exc))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code))


def _inside(path: str | os.PathLike, tmp: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(tmp))


def _write_error(exc: BaseException, target: Path, tmp: Path) -> WriteError | None:
    """The ``WriteError`` naming ``target`` for a failure while building it at ``tmp``; None when
    ``exc`` is no write failure (the block's own errors pass through unchanged)."""
    if isinstance(exc, WriteError) and _inside(exc.path, tmp):
        return WriteError(target, exc.reason)  # a file inside the directory being built
    error = _as_os_error(exc)
    if error is None:
        return None
    reason = error.strerror or str(error)
    names = [name for name in (error.filename, error.filename2) if name is not None]
    if names and not any(_inside(name, tmp) for name in names):  # e.g. a source file that could not be read
        reason += f": {names[0]}"
    return WriteError(target, reason)


@contextlib.contextmanager
def _failures_named(target: Path, tmp: Path, remove_tmp: Callable[[], object]) -> Iterator[None]:
    """On any exception call ``remove_tmp``, and re-raise a write failure as a ``WriteError``."""
    try:
        yield
    except BaseException as exc:
        remove_tmp()
        error = _write_error(exc, target, tmp)
        if error is None:
            raise
        raise error from exc


def _swap_in(tmp: Path, target: Path, parent: Path) -> None:
    """Rename ``tmp`` to ``target``. An existing ``target`` is set aside first, put back if the
    rename fails, and removed once the new one is in place."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent)) / target.name
    try:
        os.replace(target, old)
    except OSError:
        old.parent.rmdir()
        raise
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(old, target)
        old.parent.rmdir()
        raise
    shutil.rmtree(old.parent, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` when the block succeeds.

    On an exception the temporary directory is removed and ``target`` is untouched; a write
    failure becomes a ``WriteError`` naming ``target``. An existing ``target`` is replaced (only
    after the new one is complete) when ``overwrite``.
    """
    target = Path(target)
    parent = _prepare_parent(target)
    if target.exists() and not overwrite:
        raise UserError(f"{target}: already exists (choose another output or remove it)")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as exc:
        raise WriteError(target, exc.strerror or str(exc)) from exc
    with _failures_named(target, tmp, lambda: shutil.rmtree(tmp, ignore_errors=True)):
        yield tmp
        make_shareable(tmp, 0o777)
        fsync_tree(tmp)
        _swap_in(tmp, target, parent)
        fsync_dir(parent)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file that replaces ``target`` once the block succeeds.

    On an exception the temporary file is removed and ``target`` is untouched; a write failure
    becomes a ``WriteError`` naming ``target`` (so does a ``target`` that is a directory).
    """
    target = Path(target)
    if target.is_dir():
        raise WriteError(target, os.strerror(errno.EISDIR))
    parent = _prepare_parent(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=parent)
    except OSError as exc:
        raise WriteError(target, exc.strerror or str(exc)) from exc
    with _failures_named(target, Path(tmp), lambda: Path(tmp).unlink(missing_ok=True)):
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        make_shareable(Path(tmp), 0o666)
        os.replace(tmp, target)
        fsync_dir(parent)
