"""Usage errors and user text on the command line: exit 2, a short message, never a traceback or markup.

Every subcommand is run as a real ``qwen`` process with an unknown flag, a value of the wrong type
and a missing argument; each must exit 2 with exactly one line on stderr naming the culprit and
pointing to ``--help``.
Error messages and chat command echoes hold user text (paths, prompts) and are printed literally:
``[/]`` or ``[bold]`` in them is neither a crash nor formatting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_chat_cli import TEXT, rigged_checkpoint

MISSING = "no_such_checkpoint"

# (arguments, what the message must name): per subcommand an unknown flag, a wrong type, a missing argument
USAGE_ERRORS = [
    (["tokenize", "train", "--corpus", "c.txt", "--vocab-size", "300", "--out", "o", "--bogus"], "--bogus"),
    (["tokenize", "train", "--corpus", "c.txt", "--vocab-size", "abc", "--out", "o"], "--vocab-size"),
    (["tokenize", "train", "--corpus", "c.txt", "--vocab-size", "300"], "--out"),
    (["tokenize", "encode", "--input", "c.txt", "--out", "o", "--bogus"], "--bogus"),
    (["tokenize", "encode", "--input", "c.txt", "--out", "o", "--val-fraction", "half"], "--val-fraction"),
    (["tokenize", "encode", "--out", "o"], "--input"),
    (["tokenize", "stats", "--corpus", "c.txt", "--bogus"], "--bogus"),
    (["tokenize", "stats", "--corpus", "c.txt", "--max-bytes", "lots"], "--max-bytes"),
    (["tokenize", "stats"], "--corpus"),
    (["rlhf", "reward", "r.toml", "--bogus"], "--bogus"),
    (["rlhf", "ppo"], "RECIPE"),
    (["rlhf", "dpo", "r.toml", "--set"], "--set"),
    (["rlhf", "score", "ckpt"], "--pairs"),
    (["rlhf", "score", "ckpt", "--pairs", "p.jsonl", "--seq-len", "many"], "--seq-len"),
    (["rlhf", "pairs", "arithmetic"], "--out"),
    (["rlhf", "pairs", "arithmetic", "--out", "o", "--limit", "x"], "--limit"),
    (["pretrain", "r.toml", "--bogus"], "--bogus"),
    (["pretrain", "r.toml", "--resume=maybe"], "--resume"),  # its options are paths, strings and flags
    (["pretrain"], "recipe"),
    (["sft", "r.toml", "--bogus"], "--bogus"),
    (["sft", "r.toml", "--json=yes"], "--json"),
    (["sft"], "recipe"),
    (["chat", MISSING, "--bogus"], "--bogus"),
    (["chat", MISSING, "--max-new-tokens", "many"], "--max-new-tokens"),
    (["chat"], "checkpoint"),
    (["eval", MISSING, "--bogus"], "--bogus"),
    (["eval", MISSING, "--limit", "ten"], "--limit"),
    (["eval"], "checkpoint"),
    (["convert", "src", "dst", "--bogus"], "--bogus"),
    (["convert", "src", "dst", "--overwrite=3"], "--overwrite"),
    (["convert", "src"], "dst"),
    (["frobnicate"], "frobnicate"),
    (["[bold]x[/bold]"], "[bold]x[/bold]"),  # an unknown command is echoed literally
]

# numeric options out of range: refused before anything is read or loaded
RANGE_ERRORS = [
    (["chat", MISSING, "--top-p", "2"], "--top-p"),
    (["chat", MISSING, "--top-p", "0"], "--top-p"),
    (["chat", MISSING, "--max-new-tokens", "0"], "--max-new-tokens"),
    (["chat", MISSING, "--temperature", "-1"], "--temperature"),
    (["tokenize", "encode", "--input", MISSING, "--out", "o", "--seed", "-1"], "--seed"),
    (["tokenize", "encode", "--input", MISSING, "--out", "o", "--workers", "0"], "--workers"),
    (["eval", MISSING, "--workers", "0"], "--workers"),
    (["eval", MISSING, "--seed", "-1"], "--seed"),
]


def qwen(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qwen_cli.cli", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def assert_usage_error(proc: subprocess.CompletedProcess, culprit: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert lines[0].startswith("error: ") and culprit.lower() in lines[0].lower(), proc.stderr
    assert lines[0].endswith(" --help')"), proc.stderr


@pytest.mark.parametrize(("args", "culprit"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_error_is_exit_2_and_names_the_culprit(args, culprit, tmp_path):
    assert_usage_error(qwen(*args, cwd=tmp_path), culprit)


@pytest.mark.parametrize(("args", "culprit"), RANGE_ERRORS, ids=[" ".join(a) for a, _ in RANGE_ERRORS])
def test_out_of_range_option_is_refused_before_loading(args, culprit, tmp_path):
    proc = qwen(*args, cwd=tmp_path)
    assert_usage_error(proc, culprit)
    assert MISSING not in proc.stderr  # the option is at fault, not the path (nothing was loaded)


@pytest.mark.parametrize("path", ["dir[/]x/recipe.toml", "[bold]x[/bold]/recipe.toml"])
def test_user_error_text_is_printed_literally(path, run_qwen):
    code, _, err = run_qwen("pretrain", path)
    assert code == 2
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, err


def test_chat_commands_with_brackets_keep_the_session(tmp_path):
    ckpt = rigged_checkpoint(tmp_path / "stop", loop=False)
    (tmp_path / "blocker[").write_text("a file where /save needs a directory")
    saved = tmp_path / "ok[/]saved.json"
    lines = [f"/save {tmp_path}/blocker[/]x.json", "/system [/] [bold]hi[/bold]", "/frob [/]", "hi", f"/save {saved}"]
    proc = qwen("chat", str(ckpt), cwd=tmp_path, stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{TEXT}\n"  # the line after the failed commands still gets its reply
    assert f"error: {tmp_path}/blocker[: cannot create output directory" in proc.stderr
    assert "system prompt set, history cleared: [/] [bold]hi[/bold]" in proc.stderr
    assert "unknown command '/frob [/]'" in proc.stderr
    assert f"saved {saved}" in proc.stderr
    assert json.loads(saved.read_text())["messages"][0] == {"role": "system", "content": "[/] [bold]hi[/bold]"}


def test_version_is_the_installed_distributions(run_qwen):
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    code, out, err = run_qwen("--version")
    assert (code, out, err) == (0, f"qwen {project['version']}\n", "")
