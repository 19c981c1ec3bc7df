"""Chat templates from ``tokenizer_config.json``, rendered as transformers' ``apply_chat_template`` does,
under a time and memory budget.

The template runs in Jinja's ``ImmutableSandboxedEnvironment`` (no attribute access to Python
internals, no mutation of the inputs) with ``trim_blocks``/``lstrip_blocks``, the
``loopcontrols`` extension, the ``{% generation %}`` tag and transformers' helpers: ``raise_exception(msg)``, a ``tojson``
that does not HTML-escape, ``strftime_now(fmt)``. It sees ``messages``, ``add_generation_prompt``,
``tools``/``documents`` (None) and the tokenizer's special-token strings (``bos_token``, ``eos_token``, ...).

Jinja's sandbox blocks attributes, not CPU or memory (``range`` in nested loops, ``'a' * 10**10``,
a self-recursive macro). So templates are rendered in one long-lived worker process (this module
run as ``python -m qwen_cli.tokenizer.chat_jinja`` from the folder holding ``qwen_cli``, started at
the first render): its address space is capped at :data:`MEMORY_BUDGET` bytes, its CPU time per
render at :data:`TIME_BUDGET_S` plus 2 s (an ``RLIMIT_CPU`` backstop), and the host kills it when a
reply takes longer than that wall-clock budget (it is restarted at the next render). A render is one JSON line each way (about 0.1 ms for a chat turn); the worker caches
compiled templates. Every failure is a :class:`~qwen_cli.errors.UserError` naming the tokenizer
directory: a template that does not parse, runs past its budget or renders more than
:data:`MAX_OUTPUT_CHARS`; a template that refuses a conversation (``raise_exception``, a type
error) is the subclass :class:`TemplateRefused`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qwen_cli.errors import UserError

TIME_BUDGET_S = 2.0  # wall-clock seconds one render may take
MEMORY_BUDGET = 1 << 30  # bytes of address space the rendering process may hold
MAX_OUTPUT_CHARS = 8 << 20  # characters one rendered conversation may have
MAX_TEMPLATE_CHARS = 1 << 20  # characters a template source may have
STARTUP_S = 60.0  # seconds the worker may take to start (a loaded machine)
PROBE = [{"role": "user", "content": "Hi"}]
WORKER_MODULE = "qwen_cli.tokenizer.chat_jinja"  # run with ``-m`` (not ``__name__``: the worker is ``__main__``)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the worker's cwd: qwen_cli importable, nothing else shadowing


class TemplateRefused(UserError):
    """The template ran within its budget and refused the conversation (``raise_exception``, a type error)."""


class GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers marks assistant tokens with it): the body as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    @staticmethod
    def _body(caller) -> str:
        return caller()


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """The template compiled in the sandbox (cached: a chat renders the same template every turn)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _render_reply(request: dict) -> dict:
    """The worker's answer to one request: ``{"text": ...}`` or ``{"error": kind, "message": ...}``."""
    try:
        template = compile_template(request["source"])
        text = template.render(messages=request["messages"], tools=None, documents=None,
                               add_generation_prompt=request["add_generation_prompt"], **request["special_tokens"])
    except jinja2.TemplateSyntaxError as exc:
        return {"error": "syntax", "message": f"line {exc.lineno}: {_one_line(exc.message)}"}
    except MemoryError:
        return {"error": "budget", "message": f"needs more than {MEMORY_BUDGET >> 20} MiB of memory"}
    except RecursionError:
        return {"error": "budget", "message": "recurses too deeply"}
    except Exception as exc:  # the worker answers every failure of untrusted code with a line
        return {"error": "refused", "message": _one_line(exc) or type(exc).__name__}
    if len(text) > MAX_OUTPUT_CHARS:
        return {"error": "budget", "message": f"renders more than {MAX_OUTPUT_CHARS:,} characters"}
    return {"text": text}


def serve() -> None:
    """The worker: cap its own memory, then answer one JSON request line with one JSON reply line."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BUDGET, MEMORY_BUDGET))
    sys.setrecursionlimit(1000)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_cap = int(usage.ru_utime + usage.ru_stime + TIME_BUDGET_S) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_cap, resource.RLIM_INFINITY))
        out.write(json.dumps(_render_reply(json.loads(line)), ensure_ascii=False) + "\n")
        out.flush()


class _Worker:
    """The host's end of the rendering process: started on first use (and anew in a forked child, which
    must not share its parent's pipes), killed and restarted after a render that ran past its budget or died."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.owner = os.getpid()
        self.buffer = b""

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], cwd=PACKAGE_ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # replies: os.read
        self.owner, self.buffer = os.getpid(), b""
        if self._read_line(time.monotonic() + STARTUP_S) != b"ready":
            self.stop()
            raise UserError("the chat-template worker did not start")

    def stop(self) -> None:
        if self.proc is not None and self.owner == os.getpid():
            self.proc.kill()
            self.proc.wait()
            with contextlib.suppress(OSError):  # a request still buffered for a worker that is gone
                self.proc.stdin.close()
            self.proc.stdout.close()
            self.proc = None

    def _read_line(self, deadline: float) -> bytes | None:
        """One reply line, or None when the deadline passes, the worker dies or the reply is too long."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or len(self.buffer) > 8 * MAX_OUTPUT_CHARS or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def render(self, request: dict) -> dict | None:
        """The worker's reply to ``request``, or None when it ran past :data:`TIME_BUDGET_S` or died."""
        with self.lock:
            if self.proc is None or self.owner != os.getpid():
                self._start()
            try:
                self.proc.stdin.write(json.dumps(request, ensure_ascii=False, default=str).encode() + b"\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                self.stop()
                return None
            line = self._read_line(time.monotonic() + TIME_BUDGET_S)
            if line is None:
                self.stop()
                return None
            return json.loads(line)


_WORKER = _Worker()
atexit.register(_WORKER.stop)


def render_chat(source: str, messages: Sequence[dict], add_generation_prompt: bool,
                special_tokens: dict[str, str], where: str) -> str:
    """The text of ``messages`` under the template ``source``; ``where`` (the tokenizer directory)
    names the template in errors."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise UserError(f"{where}: chat_template is longer than {MAX_TEMPLATE_CHARS:,} characters")
    reply = _WORKER.render({"source": source, "messages": [dict(m) for m in messages],
                            "add_generation_prompt": add_generation_prompt, "special_tokens": special_tokens})
    if reply is None:
        raise UserError(f"{where}: chat_template ran past its budget ({TIME_BUDGET_S:g} s, "
                        f"{MEMORY_BUDGET >> 20} MiB) and was stopped")
    if "text" in reply:
        return reply["text"]
    if reply["error"] == "syntax":
        raise UserError(f"{where}: chat_template does not parse ({reply['message']})")
    if reply["error"] == "budget":
        raise UserError(f"{where}: chat_template ran past its budget: it {reply['message']}")
    raise TemplateRefused(f"{where}: chat_template refused the conversation: {reply['message']}")


def check_template(source: str, special_tokens: dict[str, str], where: str) -> None:
    """Render ``source`` once on a one-turn conversation: a template that does not parse, fails or runs
    past its budget is a ``UserError`` (``qwen convert`` refuses such a model at import)."""
    render_chat(source, PROBE, True, special_tokens, where)


if __name__ == "__main__":
    serve()
