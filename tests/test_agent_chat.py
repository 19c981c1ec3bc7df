"""`qwen chat --tools` end to end on a real (tiny, rigged) checkpoint and the generation engine.

The model is a bigram machine (as in test_chat_cli: attention and MLP outputs zeroed, so the next
token depends on the last one only) wired to write ``Action: python\\n\\nopen('data').read()`` and then
``Observation:``. Generation must stop there by text (else the chain runs on), the python tool must
read the file given with ``--file``, and the reply after ``Thought:`` continues the chain without an
``Action:`` line, so the episode ends as ``no_action``: structure, not quality.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from train_fixtures import bigram_model

from qwen_cli.checkpoint import save_model
from qwen_cli.model import ModelConfig
from qwen_cli.tokenizer import load_tokenizer

CHAIN = ["\n", "Action", ":", " python", "\n\n", "open", "('", "data", "').", "read", "()", "Observation", ":"]
ACTION_TEXT = "Action: python\n\nopen('data').read()"


def bigram_checkpoint(path: Path) -> Path:
    tok = load_tokenizer("qwen")
    ids = [i for piece in CHAIN for i in tok.encode(piece)]  # "Observation" is two tokens
    config = ModelConfig(vocab_size=tok.padded_vocab_size, hidden_size=16, num_layers=1, num_heads=2,
                         intermediate_size=32, max_position_embeddings=4096)
    links = dict(zip(ids, ids[1:], strict=False))  # ":" appears twice: its first successor wins
    model = bigram_model(config, links.items())
    save_model(path, model)
    tok.save(path, hf=False)  # our own tokenizer files only: deriving the Hugging Face merges takes seconds
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return bigram_checkpoint(tmp_path_factory.mktemp("agent-chat") / "bigram")


def chat(run_qwen, monkeypatch, stdin: str, *args):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return run_qwen("chat", *args)


def test_json_mode_runs_the_tool_on_the_users_file_and_reports_each_step(ckpt, tmp_path, run_qwen, monkeypatch):
    data = tmp_path / "data"
    data.write_text("hello from the file")
    code, out, err = chat(run_qwen, monkeypatch, "read it\n", ckpt, "--tools", "python,calculator", "--file", data,
                          "--json", "--max-new-tokens", "40")
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert set(record) == {"user", "reply", "final_answer", "stop_reason", "steps", "transcript"}
    (step,) = record["steps"]
    assert (step["thought"], step["action"], step["action_input"]) == ("", "python", "open('data').read()")
    assert step["observation"] == {"text": "'hello from the file'", "images": [], "error": False, "status": "ok"}
    # after "Thought:" the chain writes the same line without "Action:": a plain reply, no second call
    assert (record["stop_reason"], record["final_answer"]) == ("no_action", None)
    assert record["transcript"] == (f"{ACTION_TEXT}\nObservation: 'hello from the file'\nThought:"
                                    " python\n\nopen('data').read()")


def test_text_mode_shows_steps_on_stderr_and_replies_on_stdout(ckpt, tmp_path, run_qwen, monkeypatch):
    data = tmp_path / "data"
    data.write_text("x")
    code, out, err = chat(run_qwen, monkeypatch, "one\ntwo\n", ckpt, "--tools", "python", "--file", data,
                          "--max-new-tokens", "40")
    assert code == 0, err
    assert out == "python\n\nopen('data').read()\n\x1e\npython\n\nopen('data').read()\n"  # separated as plain chat
    assert err.count("action: python") == 2 and err.count("observation: 'x'") == 2


def test_max_steps_and_system_options_and_bad_tool_options(ckpt, tmp_path, run_qwen, monkeypatch):
    data = tmp_path / "data"
    data.write_text("x")
    code, out, err = chat(run_qwen, monkeypatch, "q\n", ckpt, "--tools", "python", "--file", data, "--json",
                          "--max-steps", "1", "--max-new-tokens", "40", "--system", "Always act.")
    assert code == 0 and json.loads(out)["steps"][0]["observation"]["text"] == "'x'"
    assert chat(run_qwen, monkeypatch, "", ckpt, "--tools", "python,shell")[::2] == (
        2, "error: unknown tool 'shell' (available: python, calculator)\n")
    code, _, err = chat(run_qwen, monkeypatch, "", ckpt, "--file", data)
    assert code == 2 and "needs --tools python" in err


def test_a_context_too_short_for_the_react_prompt_is_one_clear_error(ckpt):
    from rich.console import Console

    from qwen_cli.agent.chat import run_tool_loop
    from qwen_cli.agent.tools import make_tools
    from qwen_cli.checkpoint import load
    from qwen_cli.errors import UserError
    from qwen_cli.inference.chat_session import ChatSession

    model, tok = load(ckpt)
    session = ChatSession(model, tok, max_new_tokens=16, window=12)  # shorter than even the compact prompt
    with pytest.raises(UserError, match=r"the ReAct prompt for python takes \d+ tokens, the model's whole context is 12"):
        run_tool_loop(session, make_tools(["python"]), iter(["q"]), Console(stderr=True), True, False, 3)
