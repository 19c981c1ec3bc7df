"""The Python process inside a sandbox: runs cells in one namespace that lives between them.

Started by ``qwen_cli.sandbox.box`` as ``python -I -S -c <this source> REQUEST_FD REPLY_FD CONFIG``:
standard library only, since nothing of qwen_cli is visible inside the sandbox. First it locks
itself down (drops to its own uid when started as root; sets no-new-privs and loads the seccomp
filter itself when there is no bubblewrap to do it; sets the rlimits), then answers one JSON
object per line on REPLY_FD for each one read on REQUEST_FD:

* ``{"op": "run", "code", "timeout"}``: execute a cell. Its file descriptors 1 and 2 point at
  fresh memfds while it runs (so subprocesses are captured too); the reply carries stdout, stderr,
  the exception (type, message, traceback) or the ``SystemExit`` status, the repr of a last
  expression, the files under the work directory that the cell created or changed, and every
  matplotlib figure left open, as PNG (then closed, as a notebook does). ``timeout`` arms a timer
  that raises ``CellTimeout`` in the cell; the host kills the sandbox if even that is ignored.
* ``{"op": "put", "path", "data"}`` / ``{"op": "get", "path"}``: copy a file in / out (base64).
* ``{"op": "list"}``: every regular file under the work directory with its size.

Everything a cell produces is untrusted: the host validates each reply.
"""

import ast
import base64
import builtins
import ctypes
import io
import json
import linecache
import os
import resource
import signal
import stat
import sys
import traceback

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
MAX_FILES = 1000
MAX_FIGURES = 20


class CellTimeout(BaseException):
    """Raised inside a cell that runs past its time limit (a BaseException: ``except Exception``
    in the cell does not swallow it)."""


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _lock_down(seccomp_fd):
    """No new privileges, then the seccomp filter (BPF compiled by libseccomp on the host)."""
    libc = ctypes.CDLL(None, use_errno=True)
    program = b""
    while chunk := os.read(seccomp_fd, 1 << 16):
        program += chunk
    os.close(seccomp_fd)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _Fprog(len(program) // 8, ctypes.addressof(buffer))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
                                                                 ctypes.byref(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), "cannot load the seccomp filter")


def _drop_to(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _read_memfd(fd, limit):
    """The text written to ``fd``; past ``limit`` bytes, its head and tail around a marker."""
    size = os.fstat(fd).st_size
    if size <= limit:
        data = os.pread(fd, size, 0)
    else:
        half = limit // 2
        cut = f"\n[... {size - 2 * half} bytes cut ...]\n".encode()
        data = os.pread(fd, half, 0) + cut + os.pread(fd, half, size - half)
    os.close(fd)
    return data.decode("utf-8", "replace")


class Kernel:
    """The cell namespace and the handlers of the protocol's requests."""

    def __init__(self, workdir, output_bytes):
        self.workdir = workdir
        self.output_bytes = output_bytes
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.cells = 0
        self.pid = os.getpid()
        self.in_cell = False
        signal.signal(signal.SIGALRM, self._alarm)

    def _alarm(self, signum, frame):
        if self.in_cell:
            raise CellTimeout("cell time limit exceeded")

    def _path(self, name):
        path = os.path.normpath(os.path.join(self.workdir, name))
        if not path.startswith(self.workdir + os.sep):
            raise ValueError(f"{name}: not a path inside the work directory")
        return path

    def _snapshot(self):
        found = {}
        for dirpath, _, filenames in os.walk(self.workdir):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found[os.path.relpath(path, self.workdir)] = (info.st_size, info.st_mtime_ns)
                if len(found) >= MAX_FILES:
                    return found
        return found

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
        images = []
        try:
            for number in pyplot.get_fignums()[:MAX_FIGURES]:
                buffer = io.BytesIO()
                pyplot.figure(number).savefig(buffer, format="png")
                images.append(base64.b64encode(buffer.getvalue()).decode())
            pyplot.close("all")
        except Exception:  # a figure the cell broke: report what could be drawn
            pass
        return images

    def run(self, request):
        self.cells += 1
        name = f"<cell {self.cells}>"
        before = self._snapshot()
        captured = [os.memfd_create("stdout"), os.memfd_create("stderr")]
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(captured[0], 1)
        os.dup2(captured[1], 2)
        reply = {"error": None, "exit": None, "value": None}
        try:
            self.in_cell = True
            if request.get("timeout"):
                signal.setitimer(signal.ITIMER_REAL, float(request["timeout"]))
            reply["value"] = self._execute(request["code"], name)
        except SystemExit as exc:
            code = exc.code
            reply["exit"] = code if isinstance(code, int) else (0 if code is None else 1)
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
        except BaseException as exc:  # the cell's failure is the reply, whatever it is
            reply["error"] = _describe(exc)
        finally:
            self.in_cell = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if os.getpid() != self.pid:  # a process the cell forked, back from it: end as a script's would
            os._exit(1 if reply["error"] else reply["exit"] or 0)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        after = self._snapshot()
        reply["stdout"] = _read_memfd(captured[0], self.output_bytes)
        reply["stderr"] = _read_memfd(captured[1], self.output_bytes)
        reply["files"] = sorted(path for path, signature in after.items() if before.get(path) != signature)
        reply["figures"] = self._figures()
        return reply

    def put(self, request):
        path = self._path(request["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(request["data"]))
        return {"ok": True}

    def get(self, request):
        with open(self._path(request["path"]), "rb") as handle:
            data = handle.read(int(request["limit"]) + 1)
        return {"data": base64.b64encode(data).decode()}

    def list(self, request):
        return {"files": {path: size for path, (size, _) in self._snapshot().items()}}


def _describe(exc):
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":  # the kernel's own frames
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        text = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    return {"type": type(exc).__name__, "message": str(exc)[:2000], "traceback": text[-8000:]}


def main():
    request_fd, reply_fd, config = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    if config["uid"] is not None:
        _drop_to(config["uid"])
    if config["seccomp_fd"] is not None:
        _lock_down(config["seccomp_fd"])
    for name, (soft, hard) in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
    sys.path.extend(config["site"])
    sys.argv = [""]
    os.chdir(config["workdir"])
    kernel = Kernel(config["workdir"], config["output_bytes"])
    handlers = {"run": kernel.run, "put": kernel.put, "get": kernel.get, "list": kernel.list}
    replies = os.fdopen(reply_fd, "wb")
    replies.write(b'{"ready": true}\n')
    replies.flush()
    with os.fdopen(request_fd, "rb") as requests:
        for line in requests:
            request = json.loads(line)
            try:
                reply = handlers[request["op"]](request)
            except Exception as exc:  # a bad path or a full disk: the caller gets the reason
                reply = {"failed": f"{type(exc).__name__}: {exc}"}
            replies.write(json.dumps(reply).encode() + b"\n")
            replies.flush()


if __name__ == "__main__":
    main()
