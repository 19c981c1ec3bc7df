"""`qwen chat` end to end in a subprocess, on tiny checkpoints with the real Qwen tokenizer.

The model is rigged into a bigram machine (attention and MLP outputs zeroed, so the last hidden
state is the normalised embedding of the last token): after the assistant header's ``\\n`` it
emits the single-byte tokens of "中文" (6 tokens, no complete character before every third),
then either ``<|im_end|>`` (``stop`` checkpoint) or the first byte again (``loop``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import bigram_model

from qwen_cli.checkpoint import save_model
from qwen_cli.model import ModelConfig
from qwen_cli.tokenizer import load_tokenizer

TEXT = "中文"


def rigged_checkpoint(path: Path, loop: bool) -> Path:
    tok = load_tokenizer("qwen")
    chain = [tok.encode("\n")[0], *(tok.ranks[bytes([b])] for b in TEXT.encode())]
    chain.append(chain[1] if loop else tok.im_end_id)
    config = ModelConfig(vocab_size=tok.padded_vocab_size, hidden_size=16, num_layers=1, num_heads=2,
                         intermediate_size=32, max_position_embeddings=32768)
    model = bigram_model(config, zip(chain, chain[1:], strict=False))
    return save_model(path, model, tok)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    return rigged_checkpoint(root / "stop", loop=False), rigged_checkpoint(root / "loop", loop=True)


def qwen(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qwen_cli.cli", *args], capture_output=True, text=True,
                          encoding="utf-8", timeout=120, **kwargs)


def test_piped_stdin_one_reply_per_line_stops_at_im_end(ckpts):
    stop, _ = ckpts
    proc = qwen("chat", str(stop), input="hello\n你好吗?\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{TEXT}\n\x1e\n{TEXT}\n"  # a separator line between replies, whole characters


def test_json_messages_file_and_length_limit(ckpts, tmp_path):
    stop, loop = ckpts
    conversation = tmp_path / "conv.json"
    conversation.write_text(json.dumps({"messages": [{"role": "system", "content": "Be terse."},
                                                     {"role": "user", "content": "hi"}]}))
    proc = qwen("chat", str(stop), "--messages", str(conversation), "--json", input="")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [
        {"user": "hi", "reply": TEXT, "tokens": 6, "finish_reason": "stop"}]
    proc = qwen("chat", str(loop), "--json", "--max-new-tokens", "7", input="hi\n")
    assert json.loads(proc.stdout) == {"user": "hi", "reply": TEXT + "\ufffd", "tokens": 7, "finish_reason": "length"}


def test_commands_save_and_bad_messages_file(ckpts, tmp_path):
    stop, _ = ckpts
    saved = tmp_path / "saved.json"
    proc = qwen("chat", str(stop), input=f"/system Talk like a pirate.\nhi\n/save {saved}\n/exit\nnever read\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{TEXT}\n"
    assert json.loads(saved.read_text())["messages"] == [
        {"role": "system", "content": "Talk like a pirate."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": TEXT}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"role": "assistant", "content": "x"}]))
    proc = qwen("chat", str(stop), "--messages", str(bad), input="")
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {bad}: turn 1 is 'assistant'")


def test_sigint_mid_reply_returns_to_the_prompt(ckpts, tmp_path):
    _, loop = ckpts
    saved = tmp_path / "after.json"
    proc = subprocess.Popen([sys.executable, "-m", "qwen_cli.cli", "chat", str(loop), "--max-new-tokens", "100000"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job ignores it
    proc.stdin.write(b"go on forever\n")
    proc.stdin.flush()
    first = os.read(proc.stdout.fileno(), 3)  # the reply is streaming: interrupt it now (a warm machine writes
    proc.send_signal(signal.SIGINT)            # the whole 32k-token window of this tiny model in well under a second)
    out, err = proc.communicate(f"/save {saved}\n".encode(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"[interrupted]" in err
    reply = (first + out).decode("utf-8")
    assert reply.endswith("\n") and set(reply.strip()) <= set(TEXT)  # whole characters only
    history = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    partial = history[2]["content"]
    assert partial and (TEXT * 20_000).startswith(partial) and len(partial) < 10_000  # cut short (the window holds ~10,900)


def test_reply_never_runs_past_the_context_window(ckpts):
    import qwen_cli
    from qwen_cli.inference.chat_session import ChatSession

    model, tokenizer = qwen_cli.load(ckpts[1])  # the model that never stops
    window = 96
    session = ChatSession(model, tokenizer, max_new_tokens=10 * window, window=window)
    prompt = session.template.prompt([*session.messages, {"role": "user", "content": "go"}], session.prompt_budget)
    reply = session.reply("go")
    assert reply.finish_reason == "length"
    assert len(prompt) + reply.tokens == window
