"""Code for specialisation: corpus inputs from local source trees, and instruction pairs from real functions.

Inputs are what ``qwen tokenize encode`` reads (files, directories, JSONL with a ``text`` field)
plus two portable names, resolved on this machine without importing anything:

* ``stdlib:PATH`` — a file or folder of the running Python's standard library (``stdlib:json``,
  ``stdlib:typing.py``; ``stdlib:`` alone is all of it);
* ``package:NAME`` — the source folder of an installed package (``package:numpy``).

Instruction pairs come from functions with a docstring in the Python documents (each parsed with
``ast``; a document that does not parse gives none). Two kinds, both real code, no model involved:

* ``implement``: the user gives the signature and the docstring, the assistant writes the function
  (its source without the docstring) — the HumanEval task in chat form;
* ``explain``: the user shows the function (without its docstring), the assistant answers with the
  docstring's first paragraph.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sysconfig
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qwen_cli.errors import UserError

KINDS = ("implement", "explain")
MIN_BODY_LINES = 2  # a function whose code (without the docstring) is shorter teaches nothing


def resolve_input(spec: str) -> str:
    """A path for ``stdlib:PATH`` / ``package:NAME`` (see the module docstring); other inputs unchanged."""
    if spec.startswith("stdlib:"):
        path = Path(sysconfig.get_paths()["stdlib"]) / spec.removeprefix("stdlib:")
    elif spec.startswith("package:"):
        name = spec.removeprefix("package:")
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is None or not (found.submodule_search_locations or found.origin):
            raise UserError(f"{spec}: no installed package named {name!r}")
        path = Path(next(iter(found.submodule_search_locations)) if found.submodule_search_locations
                    else found.origin)
    else:
        return spec
    if not path.exists():
        raise UserError(f"{spec}: {path} does not exist")
    return str(path)


@dataclass(frozen=True)
class Function:
    """A documented function: its signature, docstring and code without the docstring."""

    name: str
    signature: str
    docstring: str
    code: str


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}"


def _without_docstring(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    doc = node.body[0]
    first = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
    kept = lines[first : doc.lineno - 1] + lines[doc.end_lineno : node.end_lineno]
    return textwrap.dedent("\n".join(kept)).strip("\n")


def functions(source: str) -> Iterator[Function]:
    """Documented functions and methods of one Python document (none if it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return
    lines = source.splitlines()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        docstring = ast.get_docstring(node)
        if not docstring or len(node.body) < 2 or node.body[0].lineno == node.lineno:
            continue
        code = _without_docstring(lines, node)
        if len(code.splitlines()) < 1 + MIN_BODY_LINES:
            continue
        yield Function(node.name, _signature(node), inspect.cleandoc(docstring), code)


def summary(docstring: str) -> str:
    """The docstring's first paragraph, on one line."""
    return " ".join(docstring.split("\n\n")[0].split())


def conversation(function: Function, kind: str) -> dict:
    """One chat record (``{"messages": [...]}``) of the given kind for ``function``."""
    if kind == "implement":
        user = f"Write a Python function `{function.signature}`.\n\n{function.docstring}"
        reply = function.code
    elif kind == "explain":
        user = f"What does this Python function do?\n\n{function.code}"
        reply = summary(function.docstring)
    else:
        raise ValueError(f"unknown instruction kind {kind!r} (known: {', '.join(KINDS)})")
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}

