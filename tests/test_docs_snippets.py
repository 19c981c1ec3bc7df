"""What README.md, docs/ and --help promise: the transformers snippet run as printed, every documented `qwen` command and flag, the sft help text, qwen_cli.load."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rlhf_fixtures import tiny_checkpoint

import qwen_cli
from qwen_cli.checkpoint import load_model
from qwen_cli.data.chat_template import ChatTemplate
from qwen_cli.inference.generate import generate
from qwen_cli.interop.qwen2 import write_generation_config
from qwen_cli.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def readme_block(starting: str) -> str:
    """The indented code block of README.md whose first line starts with ``starting``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith(starting))
    block = []
    for line in lines[first:]:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block).strip() + "\n"


def test_readme_transformers_snippet_runs_as_printed(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    checkpoint = tiny_checkpoint(tmp_path / "chat")
    write_generation_config(checkpoint, load_tokenizer(str(checkpoint)).special_ids)
    code = readme_block("from transformers import AutoModelForCausalLM")
    assert "runs/tiny/sft/final" in code
    exec(code.replace("runs/tiny/sft/final", str(checkpoint)), {})  # noqa: S102 (the README's own code)
    printed = capsys.readouterr().out
    tok = load_tokenizer(str(checkpoint))
    prompt = ChatTemplate(tok).prompt([{"role": "user", "content": "Hello, how are you?"}])
    ours = generate(load_model(checkpoint), [prompt], 32, stop_ids=(tok.im_end_id, tok.eot_id))[0]
    hf_tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    assert printed == hf_tok.decode(torch.tensor(ours), skip_special_tokens=True) + "\n"


def test_sft_help_shows_the_lora_section_name():
    proc = subprocess.run([sys.executable, "-m", "qwen_cli.cli", "sft", "--help"], capture_output=True, text=True,
                          env={"COLUMNS": "200", "PATH": ""}, timeout=60)
    assert proc.returncode == 0 and re.search(r"\(\[lora\] rank > 0\)", proc.stdout), proc.stdout


def test_load_returns_model_and_tokenizer_as_documented(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "m")
    model, tokenizer = qwen_cli.load(checkpoint)
    assert "-> (model, tokenizer)" in qwen_cli.__doc__
    assert model.config.vocab_size == tokenizer.padded_vocab_size and not model.training


DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(``page:line``, argv) of every ``qwen …`` command in an indented or fenced code block of the docs.

    A command continued with a trailing backslash is joined with its next lines; comments, pipes
    and shell substitutions end the part that is checked.
    """
    import shlex

    found = []
    for page in DOC_PAGES:
        lines = page.read_text().splitlines()
        fenced = False
        for number, line in enumerate(lines, 1):
            if line.strip().startswith("```"):
                fenced = not fenced
                continue
            if not (fenced or line.startswith("    ")):
                continue
            text = line.strip()
            start = text.find("qwen ")
            if start < 0 or (start > 0 and text[start - 1] not in " |;(") or text.startswith(("#", "from ", "import ")):
                continue
            command, following = text[start:], number
            while command.endswith("\\") and following < len(lines):
                command, following = command[:-1] + " " + lines[following].strip(), following + 1
            command = re.split(r"\s+(?:#|\||&&|;|<|>|2>)\s*|\$\(", command)[0]
            try:
                argv = shlex.split(command)[1:]
            except ValueError:
                continue
            found.append((f"{page.name}:{number}", argv))
    return found


def test_every_documented_command_and_option_exists():
    """A renamed subcommand or flag turns this red instead of leaving the docs wrong."""
    import typer.main

    from qwen_cli.cli import app

    root = typer.main.get_command(app)
    commands = documented_commands()
    assert len(commands) > 40  # the docs are full of examples; finding few means the reader broke
    stale = []
    for where, argv in commands:
        command, words = root, list(argv)
        while hasattr(command, "commands") and words and words[0] in command.commands:  # a group
            command = command.commands[words.pop(0)]
        if hasattr(command, "commands"):
            if words and not words[0].startswith("-") and words[0].isidentifier():
                stale.append(f"{where}: no command {words[0]!r} in {' '.join(argv)}")
            continue
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for word in words:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and flag not in options and flag != "--help":
                stale.append(f"{where}: {command.name} has no option {flag}")
    assert not stale, "\n".join(stale)
