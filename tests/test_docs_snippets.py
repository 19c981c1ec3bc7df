"""What README.md and --help promise, run as printed: the transformers snippet, the sft help text, qwen_cli.load."""

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
