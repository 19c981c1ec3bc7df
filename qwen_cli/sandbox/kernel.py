"""What runs inside a sandbox, and the frames it talks in (standard library only).

``qwen_cli.sandbox.box`` starts ``python -S -s -c <this source> CONFIG``; nothing of qwen_cli is
visible inside the sandbox. ``main`` first locks the process down (drops to the sandbox's uid when
started as root; sets no-new-privs and loads the seccomp filter itself when there is no bubblewrap
to do it; sets the rlimits), then runs one of two modes:

* ``program`` (pass@k): the program read from a file descriptor runs as this process's
  ``__main__``. Nothing follows it: the verdict is the process's exit status, signal and time,
  which only the host observes.
* ``session``: this process becomes the *supervisor*. It forks the *worker*, which drops every
  descriptor it inherited but its own socket to the supervisor and then runs cells in one
  namespace that lives between them. The supervisor never runs model code and is not reachable
  from it (the worker cannot read its requests, write its replies, or touch its memory: the
  supervisor is non-dumpable, and ``ptrace``, ``process_vm_*`` and ``pidfd_getfd`` are refused).
  It answers the host's ``get``/``put``/``list`` itself, works out the files a cell changed
  itself, passes each cell's code to the worker with a fresh random id, takes back exactly one
  report carrying that id, and checks it. A worker that dies ends the supervisor the same way
  (exit status or signal), so the host sees how it ended.

Frames (both channels): two big-endian u32 (header length, body length), a JSON object header
naming the lengths of the binary blobs that make up the body, then the body. A frame over the
limits, a header that is not a flat JSON object, or blob lengths that do not add up is malformed;
the side that reads it ends the session. ``read_run_report`` checks a cell's report; the
supervisor applies it to the worker's report, the host again to the supervisor's reply.
"""

import ast
import builtins
import ctypes
import io
import json
import linecache
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import traceback
import types

PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 4, 38, 22, 2
PREFIX = struct.Struct(">II")
HEADER_BYTES = 1 << 20  # the JSON part of any frame
MAX_DEPTH = 3  # {"error": {"type": ...}} or {"files": [...]}: nothing nests deeper
MAX_FILES = 1000  # files reported or listed
MAX_ENTRIES = 20000  # directory entries looked at per walk of the work directory
MAX_NAME = 512  # longer paths are not reported: 1000 of them fit one frame header
MAX_FIGURES = 20
TEXT_FIELDS = ("stdout", "stderr", "value")
STATUSES = ("ok", "error", "exit")
PNG = b"\x89PNG\r\n\x1a\n"


class FrameError(Exception):
    """A frame that breaks the protocol (over a limit, not JSON, blobs that do not add up)."""


def body_limit(file_bytes, output_bytes):
    """The largest frame body: one file or the figures, plus a cell's three texts (each at most
    ``output_bytes`` characters, up to four bytes each in UTF-8, and a cut marker)."""
    return file_bytes + 16 * output_bytes + (1 << 16)


def encode(header, blobs=()):
    """One frame: ``header`` (a flat JSON object) and ``blobs`` (bytes) after it."""
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    return PREFIX.pack(len(head), sum(map(len, blobs))) + head + b"".join(blobs)


def _depth(value):
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest


class FrameReader:
    """Cuts frames out of a byte stream, never holding more than one frame's limits."""

    def __init__(self, limit):
        self.limit = limit
        self.buffer = bytearray()

    def want(self):
        """How many more bytes the next frame needs (at least one)."""
        if len(self.buffer) < PREFIX.size:
            return PREFIX.size - len(self.buffer)
        head, body = PREFIX.unpack_from(self.buffer)
        return max(1, PREFIX.size + head + body - len(self.buffer))

    def feed(self, data):
        self.buffer += data

    def next(self):
        """(header, blobs) of the next whole frame, None if it has not all arrived."""
        if len(self.buffer) < PREFIX.size:
            return None
        head, body = PREFIX.unpack_from(self.buffer)
        if head > HEADER_BYTES or body > self.limit:
            raise FrameError(f"a frame of {head} + {body} bytes (limits {HEADER_BYTES} + {self.limit})")
        end = PREFIX.size + head + body
        if len(self.buffer) < end:
            return None
        frame = bytes(self.buffer[:end])
        del self.buffer[:end]
        try:
            header = json.loads(frame[PREFIX.size:PREFIX.size + head])
        except (ValueError, RecursionError) as exc:
            raise FrameError(f"a frame header that is not JSON ({type(exc).__name__})") from None
        if not isinstance(header, dict) or _depth(header) > MAX_DEPTH:
            raise FrameError(f"a frame header that is not an object nested at most {MAX_DEPTH} deep")
        sizes = header.pop("blobs", None)
        if not isinstance(sizes, list) or not all(type(n) is int and n >= 0 for n in sizes) or sum(sizes) != body:
            raise FrameError("a frame whose blob lengths do not add up to its body")
        blobs, at = [], PREFIX.size + head
        for size in sizes:
            blobs.append(frame[at:at + size])
            at += size
        return header, blobs


def send(fd, header, blobs=()):
    """Write one frame to a blocking descriptor."""
    view = memoryview(encode(header, blobs))
    while view:
        view = view[os.write(fd, view):]


def receive(fd, reader, wait_for=None):
    """The next frame from a blocking descriptor; None at end of stream or when ``wait_for`` (a
    pidfd) becomes readable first."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if wait_for is not None:
        poller.register(wait_for, select.POLLIN)
    while (frame := reader.next()) is None:
        events = dict(poller.poll())
        if fd not in events:
            return None
        chunk = os.read(fd, min(reader.want(), 1 << 20))
        if not chunk:
            return None
        reader.feed(chunk)
    return frame


def _text(value, limit):
    return value[:limit] if isinstance(value, str) else ""


def read_run_report(header, blobs, output_bytes, figure_bytes):
    """A cell's report as plain data, every field checked and cut to its limit: status (ok,
    error, exit), exit code, error (type, message, traceback), stdout, stderr, value (None when
    the cell had none), figures (PNG bytes). A FrameError when it does not have that shape."""
    status, counts = header.get("status"), header.get("texts")
    if status not in STATUSES or not isinstance(counts, list) or len(counts) != len(TEXT_FIELDS) \
            or len(blobs) < len(TEXT_FIELDS) or len(blobs) - len(TEXT_FIELDS) > MAX_FIGURES:
        raise FrameError("a cell report of the wrong shape")
    texts = {}
    for name, present, blob in zip(TEXT_FIELDS, counts, blobs, strict=False):
        keep = output_bytes + 256  # characters: the text and a cut marker
        texts[name] = blob[:4 * keep].decode("utf-8", "replace")[:keep] if present else None
    figures, total = [], 0
    for blob in blobs[len(TEXT_FIELDS):]:
        total += len(blob)
        if blob.startswith(PNG) and total <= figure_bytes:
            figures.append(blob)
    error = header.get("error")
    code = header.get("exit")
    return {"status": status, "exit": code if type(code) is int else (1 if status == "exit" else None),
            "error": {"type": _text(error.get("type"), 200), "message": _text(error.get("message"), 2000),
                      "traceback": _text(error.get("traceback"), 8000)} if isinstance(error, dict) else None,
            "stdout": texts["stdout"] or "", "stderr": texts["stderr"] or "", "value": texts["value"],
            "figures": figures}


def encode_run_report(report, extra=None):
    """The frame parts (header, blobs) of a checked report (``extra``: more header fields)."""
    texts = [report[name] for name in TEXT_FIELDS]
    header = {"status": report["status"], "exit": report["exit"], "error": report["error"],
              "texts": [t is not None for t in texts], **(extra or {})}
    return header, [(t or "").encode() for t in texts] + list(report["figures"])


# ------------------------------------------------------------------------------- lock-down
class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _prctl(*args):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(*args, *[0] * (5 - len(args))):
        raise OSError(ctypes.get_errno(), f"prctl{args[:1]} failed")


def _load_seccomp(seccomp_fd):
    """No new privileges, then the seccomp filter (BPF compiled by libseccomp on the host)."""
    program = b""
    while chunk := os.read(seccomp_fd, 1 << 16):
        program += chunk
    os.close(seccomp_fd)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _Fprog(len(program) // 8, ctypes.addressof(buffer))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog))


def _reachable(path, roots):
    """``path`` through the descriptor of the Python root it lies under (see ``main``)."""
    for root, fd in roots.items():
        if path == root or path.startswith(root + "/"):
            return f"/proc/self/fd/{fd}{path[len(root):]}"
    return path


def _lock_down(config):
    if config["uid"] is not None:
        uid = config["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if config["seccomp_fd"] is not None:
        _load_seccomp(config["seccomp_fd"])
    for name, (soft, hard) in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
    # Without bubblewrap a dropped uid may not search the directories above the Python install
    # (/root is 0700): the host passes each root open as a descriptor, and imports go through it.
    roots = config["roots"]
    sys.path[:] = [_reachable(p, roots) for p in sys.path] + [_reachable(p, roots) for p in config["site"]]
    os.chdir(config["workdir"])


# ------------------------------------------------------------------------------- programs
def run_program(fd):
    """Run the program in descriptor ``fd`` as ``__main__``; its exit status is the verdict."""
    with os.fdopen(fd, "rb") as handle:
        source = handle.read()
    module = types.ModuleType("__main__")
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = ["program.py"]
    linecache.cache["program.py"] = (len(source), None, source.decode("utf-8", "replace").splitlines(True),
                                     "program.py")
    exec(compile(source, "program.py", "exec"), module.__dict__)


# ------------------------------------------------------------------------------- the worker
class CellTimeout(BaseException):
    """Raised inside a cell that runs past its time limit (a BaseException: ``except Exception``
    in the cell does not swallow it)."""


def _read_memfd(fd, limit):
    """The bytes written to ``fd``; past ``limit``, its head and tail around a marker."""
    size = os.fstat(fd).st_size
    if size <= limit:
        data = os.pread(fd, size, 0)
    else:
        half = limit // 2
        cut = f"\n[... {size - 2 * half} bytes cut ...]\n".encode()
        data = os.pread(fd, half, 0) + cut + os.pread(fd, half, size - half)
    os.close(fd)
    return data.decode("utf-8", "replace")


def _describe(exc):
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":  # the worker's own frames
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        text = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {"type": type(exc).__name__, "message": str(exc)[:2000], "traceback": text[-8000:]}


class Worker:
    """The cell namespace: runs one cell per request and reports what it did."""

    def __init__(self, output_bytes, figure_bytes):
        self.output_bytes = output_bytes
        self.figure_bytes = figure_bytes
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.cells = 0
        self.pid = os.getpid()
        self.in_cell = False
        signal.signal(signal.SIGALRM, self._alarm)

    def _alarm(self, signum, frame):
        if self.in_cell:
            raise CellTimeout("cell time limit exceeded")

    def _execute(self, code, name):
        """Run ``code``; the repr of its last line when that is an expression with a value."""
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        tree = ast.parse(code, name)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, name, "exec"), self.namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), name, "eval"), self.namespace)
            if value is not None:
                return repr(value)[: self.output_bytes]
        return None

    def _figures(self):
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return []
        images, total = [], 0
        try:
            for number in pyplot.get_fignums()[:MAX_FIGURES]:
                buffer = io.BytesIO()
                pyplot.figure(number).savefig(buffer, format="png")
                total += buffer.tell()
                if total > self.figure_bytes:
                    break
                images.append(buffer.getvalue())
            pyplot.close("all")
        except Exception:  # a figure the cell broke: report what could be drawn
            pass
        return images

    def run(self, code, timeout):
        self.cells += 1
        captured = [os.memfd_create("stdout"), os.memfd_create("stderr")]
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(captured[0], 1)
        os.dup2(captured[1], 2)
        report = {"status": "ok", "exit": None, "error": None, "value": None}
        try:
            self.in_cell = True
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, float(timeout))
            report["value"] = self._execute(code, f"<cell {self.cells}>")
        except SystemExit as exc:
            code = exc.code
            report["exit"] = code if isinstance(code, int) else (0 if code is None else 1)
            report["status"] = "exit" if report["exit"] else "ok"
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
        except BaseException as exc:  # the cell's failure is the report, whatever it is
            report["status"], report["error"] = "error", _describe(exc)
        finally:
            self.in_cell = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if os.getpid() != self.pid:  # a process the cell forked, back from it: end as a script's would
            os._exit(1 if report["error"] else report["exit"] or 0)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        report["stdout"] = _read_memfd(captured[0], self.output_bytes)
        report["stderr"] = _read_memfd(captured[1], self.output_bytes)
        report["figures"] = self._figures()
        return report


def worker_main(channel, config):
    """The worker's loop (in the forked child; ``channel``: its only descriptor to anyone but the
    standard streams and the Python roots of ``_lock_down``)."""
    keep = {0, 1, 2, channel, *config["roots"].values()}
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    _prctl(PR_SET_DUMPABLE, 1)  # its own /proc as usual; the supervisor stays non-dumpable
    worker = Worker(config["output_bytes"], config["file_bytes"])
    reader = FrameReader(body_limit(config["file_bytes"], config["output_bytes"]))
    while (frame := receive(channel, reader)) is not None:
        header, blobs = frame
        report = worker.run(blobs[0].decode("utf-8", "surrogatepass"), header.get("timeout"))
        send(channel, *encode_run_report(report, {"id": header["id"]}))
    os._exit(0)


# ------------------------------------------------------------------------------- the supervisor
def _open_in(workdir_fd, name, flags, create=False):
    """Open ``name`` under the work directory without following a symbolic link anywhere, or a
    FIFO or device at the end; a regular file only."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{name!r}: not a relative path inside the work directory")
    fd = os.dup(workdir_fd)
    try:
        for part in parts[:-1]:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        opened = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(opened).st_mode):
        os.close(opened)
        raise ValueError(f"{name}: not a regular file")
    return opened


def snapshot(workdir):
    """{relative path: (size, mtime, inode)} of the regular files under ``workdir`` (at most
    ``MAX_FILES``, looking at ``MAX_ENTRIES`` entries), symbolic links never followed."""
    found, seen, stack = {}, 0, [""]
    while stack and seen < MAX_ENTRIES and len(found) < MAX_FILES:
        prefix = stack.pop()
        try:
            entries = os.scandir(os.path.join(workdir, prefix) if prefix else workdir)
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                if seen > MAX_ENTRIES or len(found) >= MAX_FILES:
                    break
                name = f"{prefix}/{entry.name}" if prefix else entry.name
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(name)
                elif stat.S_ISREG(info.st_mode) and len(json.dumps(name)) <= MAX_NAME:
                    found[name] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return found


class Supervisor:
    """Owns the host's pipes and the worker; see the module docstring."""

    def __init__(self, config, workdir_fd):
        self.config = config
        self.workdir = config["workdir"]
        self.workdir_fd = workdir_fd
        self.limit = body_limit(config["file_bytes"], config["output_bytes"])
        mine, theirs = socket.socketpair()
        self.worker = os.fork()
        if self.worker == 0:
            mine.close()
            worker_main(theirs.detach(), config)
        theirs.close()
        self.channel = mine.detach()
        self.worker_exit = os.pidfd_open(self.worker)
        self.reports = FrameReader(self.limit)

    def run(self, header, blobs):
        before = snapshot(self.workdir)
        nonce = os.urandom(16).hex()
        send(self.channel, {"id": nonce, "timeout": header.get("timeout")}, blobs[:1])
        frame = receive(self.channel, self.reports, self.worker_exit)
        if frame is None:
            self.end_like_the_worker()
        report_header, report_blobs = frame
        if report_header.get("id") != nonce:
            raise FrameError("a cell report that answers no request")
        report = read_run_report(report_header, report_blobs, self.config["output_bytes"], self.config["file_bytes"])
        after = snapshot(self.workdir)
        files = sorted(path for path, signature in after.items() if before.get(path) != signature)
        return encode_run_report(report, {"files": files})

    def put(self, header, blobs):
        fd = _open_in(self.workdir_fd, str(header.get("path")), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create=True)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blobs[0])
        return {"ok": True}, []

    def get(self, header, blobs):
        fd = _open_in(self.workdir_fd, str(header.get("path")), os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(self.config["file_bytes"] + 1)
        if len(data) > self.config["file_bytes"]:
            raise ValueError(f"larger than the {self.config['file_bytes']}-byte file limit")
        return {"ok": True}, [data]

    def list(self, header, blobs):
        return {"files": {path: size for path, (size, _, _) in snapshot(self.workdir).items()}}, []

    def end_like_the_worker(self):
        """The worker is gone (or closed its socket): end with its exit status or signal."""
        os.kill(self.worker, signal.SIGKILL)
        _, status = os.waitpid(self.worker, 0)
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            os._exit(128 + number)
        os._exit(os.waitstatus_to_exitcode(status))

    def serve(self, requests, replies):
        handlers = {"run": self.run, "put": self.put, "get": self.get, "list": self.list}
        reader = FrameReader(self.limit)
        send(replies, {"ready": True})
        while (frame := receive(requests, reader)) is not None:
            header, blobs = frame
            handler = handlers.get(header.get("op"))
            try:
                if handler is None or (header.get("op") in ("run", "put") and len(blobs) != 1):
                    raise ValueError(f"an unknown request {header.get('op')!r}")
                answer, out = handler(header, blobs)
            except FrameError as exc:  # the worker broke the protocol: the session ends
                send(replies, {"id": header.get("id"), "broken": f"the worker sent {exc}"})
                os.kill(self.worker, signal.SIGKILL)
                os._exit(70)
            except (OSError, ValueError) as exc:  # a bad path or a full disk: the caller gets the reason
                answer, out = {"failed": f"{type(exc).__name__}: {exc}"}, []
            send(replies, {**answer, "id": header.get("id")}, out)
        os.kill(self.worker, signal.SIGKILL)


def main():
    config = json.loads(sys.argv[1])
    _lock_down(config)
    sys.argv = [""]
    if config["mode"] == "program":
        run_program(config["program_fd"])
        return
    _prctl(PR_SET_DUMPABLE, 0)  # after the uid change, which may have reset it
    workdir_fd = os.open(config["workdir"], os.O_RDONLY | os.O_DIRECTORY)
    Supervisor(config, workdir_fd).serve(config["request_fd"], config["reply_fd"])


if __name__ == "__main__":
    main()
