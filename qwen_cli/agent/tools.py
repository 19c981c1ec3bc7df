"""Tools a ReAct agent can call: a small plugin interface, and the shipped ``python`` and ``calculator``.

A tool is a :class:`Tool` subclass: ``spec`` (a :class:`~qwen_cli.data.react.ToolSpec`: name,
description, JSON-schema parameters, as the prompt shows them) and ``call(arguments) ->
Observation``, where ``arguments`` is the model's ``Action Input`` text exactly as written. A call
never raises for anything the model did: bad input, an exception or a timeout in its code comes
back as an :class:`Observation` with ``error=True`` and the episode goes on. ``close()`` frees what
the tool holds. Register a new tool in :data:`TOOLS`.

``python`` runs the code in one persistent :class:`~qwen_cli.sandbox.Session` (started on the
first call, with the user's files copied in): variables, imports and files survive between
steps. A cell past its time limit is interrupted and reported; a cell that kills the sandbox
(memory, CPU time, a broken protocol) is reported and the next call starts a fresh session. Images
the cell writes and matplotlib figures it leaves open are copied out to ``out_dir`` and reported by
path: at most ``MAX_IMAGES`` per call and ``limits.disk_bytes`` in all; an image that cannot be
had (unreadable, not a regular file, over a limit) or written is a note in the observation.
"""

from __future__ import annotations

import ast
import json
import operator
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from qwen_cli.data.react import TOOL_SPECS, ToolSpec
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_file
from qwen_cli.sandbox import CellResult, Limits, SandboxError, Session
from qwen_cli.sandbox.session import check_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".bmp")
MAX_IMAGES = 20  # image files and figures copied out per call
OBSERVATION_CHARS = 4000  # longer tool output is cut in the middle before the model reads it
FENCE = re.compile(r"```[ \t]*(?:py|python|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


@dataclass
class Observation:
    """What a tool call gave back: the text the model reads, image files on the host, error or not."""

    text: str
    images: list[str] = field(default_factory=list)
    error: bool = False
    cell: CellResult | None = None  # the sandbox's result, for code

    def to_json(self) -> dict:
        record = {"text": self.text, "images": self.images, "error": self.error}
        if self.cell is not None:
            record["status"] = self.cell.status
        return record


class Tool:
    """A tool plugin: a ``spec`` describing it to the model and ``call`` running it."""

    spec: ToolSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def parameters(self) -> dict:
        return self.spec.parameters

    @property
    def human_name(self) -> str:
        return self.spec.human_name

    @property
    def args_format(self) -> str:
        return self.spec.args_format

    def call(self, arguments: str) -> Observation:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the tool holds (nothing by default)."""


def clip(text: str, limit: int = OBSERVATION_CHARS) -> str:
    """``text``, cut in the middle when longer than ``limit`` characters."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... ({len(text) - 2 * half} characters left out) ...\n{text[-half:]}"


def json_argument(arguments: str, key: str) -> str | None:
    """``arguments[key]`` when ``arguments`` is a JSON object holding that string, else None."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    return value.get(key) if isinstance(value, dict) and isinstance(value.get(key), str) else None


def code_of(arguments: str) -> str:
    """The code in an Action Input: a fenced block (```py ... ```), a JSON ``{"code": ...}`` or raw code."""
    text = arguments.strip()
    from_json = json_argument(text, "code")
    if from_json is not None:
        return from_json
    fenced = FENCE.search(text)
    return fenced.group(1) if fenced else text


class PythonTool(Tool):
    """Python in a persistent sandboxed session (see the module docstring)."""

    spec = TOOL_SPECS["python"]

    def __init__(self, files: Sequence[Path] = (), out_dir: Path | None = None, limits: Limits = Limits()) -> None:
        self.files = {}
        for path in map(Path, files):
            if not path.is_file():
                raise UserError(f"{path}: no such file to copy into the Python session")
            if path.name in self.files:
                raise UserError(f"{path}: a file named {path.name!r} is already copied in ({self.files[path.name]})")
            self.files[check_name(path.name)] = path
        self.limits, self._out_dir = limits, out_dir
        self.session: Session | None = None
        self.figures = 0
        self.image_bytes = 0  # copied out so far

    @property
    def out_dir(self) -> Path:
        """Where images are copied out (a new temporary directory unless one was given)."""
        if self._out_dir is None:
            self._out_dir = Path(tempfile.mkdtemp(prefix="qwen-agent-"))
        self._out_dir.mkdir(parents=True, exist_ok=True)
        return self._out_dir

    def call(self, arguments: str) -> Observation:
        code = code_of(arguments)
        if not code.strip():
            return Observation("Error: no code given (put the code in the Action Input)", error=True)
        restarted = self.session is not None and not self.session.alive
        try:
            if self.session is None or restarted:
                self.session = Session(self.limits, self.files)
        except SandboxError as exc:  # no sandbox to be had: the model sees why, the episode goes on
            return Observation(f"Error: {exc}", error=True)
        result = self.session.run(code)
        images, notes = self._copy_images(result) if self.session.alive else ([], [])
        text = "\n".join([render_cell(result, images), *notes])
        if restarted:
            text = "(the previous Python session had ended; this ran in a new one: earlier variables are gone)\n" + text
        if not self.session.alive and result.status != "timeout":
            text += "\n(the Python session ended; the next call starts a new one)"
        return Observation(clip(text), images, error=not result.ok, cell=result)

    def _copy_images(self, result: CellResult) -> tuple[list[str], list[str]]:
        """Copy the cell's image files and figures to ``out_dir``: at most ``MAX_IMAGES`` per call
        and ``limits.disk_bytes`` over the tool's life. (paths written, notes on what was not)."""
        written: list[str] = []
        notes: list[str] = []
        names = [name for name in result.files if name.lower().endswith(IMAGE_SUFFIXES)]
        if len(names) + len(result.figures) > MAX_IMAGES:
            notes.append(f"(only the first {MAX_IMAGES} of {len(names) + len(result.figures)} images are shown)")
        for name in names[:MAX_IMAGES]:
            try:
                copied = self.session.copy_out(self.out_dir, [name], budget=self.limits.disk_bytes - self.image_bytes)
            except SandboxError as exc:
                notes.append(f"(image not copied: {exc})")
                continue
            self.image_bytes += sum(path.stat().st_size for path in copied)
            written += map(str, copied)
        for png in result.figures[:MAX_IMAGES - len(written)]:
            if self.image_bytes + len(png) > self.limits.disk_bytes:
                notes.append(f"(figure not copied: over the {self.limits.disk_bytes}-byte budget for images)")
                break
            self.figures += 1
            target = self.out_dir / f"figure-{self.figures}.png"
            try:
                with atomic_file(target, "wb") as handle:
                    handle.write(png)
            except UserError as exc:
                notes.append(f"(figure not copied: {exc})")
                continue
            self.image_bytes += len(png)
            written.append(str(target))
        return written, notes

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def render_cell(result: CellResult, images: Sequence[str]) -> str:
    """The observation text of one cell: its output, last value, error and images."""
    parts = [result.stdout.rstrip("\n"), result.stderr.rstrip("\n")]  # stderr too: warnings help the model
    if result.value is not None:
        parts.append(result.value)
    if not result.ok:
        parts.append(f"Error: {result.traceback.rstrip() or result.error}")
        if result.status == "timeout":
            parts.append("(the cell was interrupted; variables set before this cell are kept)")
    parts += [f"[image: {path}]" for path in images]
    text = "\n".join(p for p in parts if p)
    return text or "(ran without output)"


BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_BITS = 1 << 16


def _bits(number: Fraction) -> int:
    return max(number.numerator.bit_length(), number.denominator.bit_length())


def calculate(expression: str) -> Fraction | float:
    """The value of an arithmetic expression: exact (``Fraction``) unless a root makes it a float.

    Only numbers, + - * / // % **, unary signs and parentheses; ValueError otherwise (never eval).
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression ({exc.msg})") from None

    def value(node: ast.AST) -> Fraction | float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            try:  # the literal as written ("0.1" is exactly 1/10), else its value
                return Fraction(ast.get_source_segment(expression.strip(), node) or "")
            except ValueError:
                return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            return UNARY[type(node.op)](value(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and isinstance(left, Fraction) and _bits(left) * abs(right) > MAX_BITS:
                raise ValueError("the power is too large")
            if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
                raise ValueError("division by zero")
            result = BINARY[type(node.op)](left, right)
            if isinstance(result, int):  # Fraction // Fraction is an int
                result = Fraction(result)
            if isinstance(result, complex):
                raise ValueError("the result is not a real number")
            if isinstance(result, Fraction) and _bits(result) > MAX_BITS:
                raise ValueError("the result is too large")
            return result
        raise ValueError(f"{type(node).__name__} is not allowed (numbers, + - * / // % ** and parentheses only)")

    return value(tree.body)


def number_text(number: Fraction | float) -> str:
    """An integer as an integer, anything else as the nearest float."""
    if isinstance(number, Fraction) and number.denominator == 1:
        return str(number.numerator)
    return repr(float(number))


class CalculatorTool(Tool):
    """Safe arithmetic: the expression is parsed with ``ast`` and evaluated node by node, never ``eval``."""

    spec = TOOL_SPECS["calculator"]

    def call(self, arguments: str) -> Observation:
        expression = json_argument(arguments.strip(), "expression") or arguments.strip().strip("`")
        try:
            return Observation(number_text(calculate(expression)))
        except (ValueError, OverflowError) as exc:
            return Observation(f"Error: {exc}", error=True)


TOOLS: dict[str, type[Tool]] = {"python": PythonTool, "calculator": CalculatorTool}


def make_tools(names: Sequence[str], files: Sequence[Path] = (), out_dir: Path | None = None,
               limits: Limits = Limits()) -> list[Tool]:
    """The tools named (``python`` gets ``files``, ``out_dir`` and ``limits``); a ``UserError`` for an unknown name."""
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise UserError(f"unknown tool {unknown[0]!r} (available: {', '.join(TOOLS)})")
    if len(set(names)) != len(names):
        raise UserError(f"a tool is named twice in {', '.join(names)}")
    if files and "python" not in names:
        raise UserError("files are copied into the python tool's session: add python to the tools")
    return [PythonTool(files, out_dir, limits) if n == "python" else TOOLS[n]() for n in names]
