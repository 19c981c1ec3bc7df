"""`qwen chat --verbose / --quantize int8 / --compile` and `qwen eval --quantize` end to end in a subprocess,
on the rigged bigram checkpoint of test_chat_cli (its reply is known: "中文" then <|im_end|>)."""

from __future__ import annotations

import json

import pytest
from test_chat_cli import TEXT, qwen, rigged_checkpoint


@pytest.fixture(scope="module")
def stop_ckpt(tmp_path_factory):
    return rigged_checkpoint(tmp_path_factory.mktemp("chat-opts") / "stop", loop=False)


def test_json_verbose_int8_reports_timing_and_the_same_reply(stop_ckpt):
    proc = qwen("chat", str(stop_ckpt), "--json", "--verbose", "--quantize", "int8", input="hello\nagain\n")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["reply"] for r in records] == [TEXT, TEXT]
    for r in records:
        assert r["tokens"] == 6
        assert 0 < r["time_to_first_token_s"] < 60 and r["tokens_per_s"] > 0


def test_text_verbose_prints_timing_on_stderr_only(stop_ckpt):
    proc = qwen("chat", str(stop_ckpt), "--verbose", input="hello\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{TEXT}\n"
    assert "time to first token" in proc.stderr and "tokens/s" in proc.stderr


@pytest.mark.slow
def test_compiled_decode_gives_the_same_reply(stop_ckpt):
    proc = qwen("chat", str(stop_ckpt), "--compile", "--json", "--verbose", input="hello\nagain\n")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["reply"] for line in proc.stdout.splitlines()] == [TEXT, TEXT]


def test_unknown_quantisation_is_a_usage_error(stop_ckpt):
    for command in ("chat", "eval"):
        proc = qwen(command, str(stop_ckpt), "--quantize", "int4", input="")
        assert proc.returncode == 2, (command, proc.stderr)
        assert "--quantize" in proc.stderr and "int8" in proc.stderr and "Traceback" not in proc.stderr
