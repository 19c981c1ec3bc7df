"""`qwen eval --chat`: the prompt the model sees is exactly the checkpoint's chat template applied
to the task's plain prompt (``chat_template_for(...).prompt``, what `qwen specialize` measures with),
for generated and for scored (log-likelihood) tasks; without `--chat` it is the plain prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_fixtures import tiny_qwen_checkpoint

import qwen_cli.inference.generate
from qwen_cli.data.jinja_chat import chat_template_for
from qwen_cli.evaluation.runner import run_eval

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _, tokenizer, directory = tiny_qwen_checkpoint(tmp_path_factory.mktemp("ckpt"), max_positions=512)
    return directory, tokenizer


def _seen(directory: Path, chat: bool, out: Path, monkeypatch) -> tuple[dict, list, list]:
    """The JSON record, the rows the model ran for scoring, and the generation calls (prompts, stop ids)."""
    rows, calls = [], []

    def generate(model, prompts, max_new_tokens, **kwargs):
        calls.append((prompts, kwargs["stop_ids"]))
        return [[] for _ in prompts]

    def record_rows(module, args):
        if isinstance(module, torch.nn.Embedding):  # the token ids of every forward pass
            rows.extend(args[0].tolist())

    monkeypatch.setattr(qwen_cli.inference.generate, "generate", generate)
    hook = torch.nn.modules.module.register_module_forward_pre_hook(record_rows)
    try:
        status = run_eval(directory, "mmlu,gsm8k", num_fewshot=0, limit=1, data_dir=FIXTURES, out=out, chat=chat)
    finally:
        hook.remove()
    assert status == 0
    return json.loads(out.read_text()), rows, calls


@pytest.mark.timeout(120)
def test_chat_prompts_are_the_template_rendering_and_plain_prompts_are_unchanged(tiny, tmp_path, monkeypatch):
    directory, tokenizer = tiny
    template = chat_template_for(tokenizer)
    plain, plain_rows, plain_calls = _seen(directory, False, tmp_path / "plain.json", monkeypatch)
    chat, chat_rows, chat_calls = _seen(directory, True, tmp_path / "chat.json", monkeypatch)
    assert plain["config"]["chat"] is False and chat["config"]["chat"] is True
    question = {task: plain["samples"][task][0]["prompt"] for task in ("mmlu", "gsm8k")}

    def rendered(task: str) -> list[int]:
        return template.prompt([{"role": "user", "content": question[task]}])

    # generated task (gsm8k): the prompt ids and the stop tokens handed to generation
    ((prompts, stops),) = chat_calls
    assert prompts == [rendered("gsm8k")] and stops == template.stop_ids
    assert tokenizer.im_end_id in stops
    ((prompts, stops),) = plain_calls
    assert prompts == [tokenizer.encode(question["gsm8k"])] and stops == (tokenizer.eot_id,)
    # scored task (mmlu, one-token choices " A".." D"): the context row is the rendering itself
    assert rendered("mmlu") in chat_rows
    assert tokenizer.encode(question["mmlu"]) in plain_rows
    assert not any(row[: len(rendered("mmlu"))] == rendered("mmlu") for row in plain_rows)
    assert chat["samples"]["mmlu"][0]["prompt"] == tokenizer.decode(rendered("mmlu"))


@pytest.mark.timeout(120)
def test_the_chat_flag_reaches_the_run(tiny, tmp_path, run_qwen):
    directory, _ = tiny
    out = tmp_path / "flag.json"
    code, _, err = run_qwen("eval", directory, "--tasks", "gsm8k", "--chat", "--num-fewshot", "0", "--limit", "1",
                            "--data-dir", FIXTURES, "--max-gen-toks", "1", "--out", out)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["config"]["chat"] is True and record["samples"]["gsm8k"][0]["prompt"].startswith("<|im_start|>")
