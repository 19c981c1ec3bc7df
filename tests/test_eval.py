"""`qwen eval`: the lm-eval model class against direct computation, batching invariance, the data
registry, and an offline end-to-end run on a tiny checkpoint with small real fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from qwen_cli.checkpoint import save_model
from qwen_cli.evaluation import scoring
from qwen_cli.evaluation.lm_model import QwenLM
from qwen_cli.evaluation.registry import DataUnavailable, resolve
from qwen_cli.evaluation.runner import run_eval
from qwen_cli.inference.generate import generate
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.tokenizer import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = load_tokenizer("qwen")
    model = QwenModel(ModelConfig(vocab_size=tokenizer.padded_vocab_size, hidden_size=32, num_layers=2,
                                  num_heads=2, intermediate_size=64, max_position_embeddings=256)).eval()
    directory = save_model(tmp_path_factory.mktemp("ckpt") / "tiny", model, tokenizer)
    return model, tokenizer, directory


def _requests(pairs):
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


PAIRS = [
    ("The capital of France is", " Paris"),
    ("The capital of France is", " Lyon"),
    ("Question: 2+2=?\nAnswer:", " A"),
    ("Question: 2+2=?\nAnswer:", " B"),
    ("Question: 2+2=?\nAnswer:", " C"),
    ("def add(a, b):", "\n    return a + b\n"),
    ("Once upon a time", " there was a very long continuation of several tokens."),
    ("x", " y"),
]


def _direct(model, tokenizer, context, continuation):
    # lm-eval's split: the context's own encoding, then the tail of the joint encoding
    context_ids = tokenizer.encode(context)
    n_ctx = len(context_ids)
    whole = context_ids + tokenizer.encode(context + continuation)[n_ctx:]
    with torch.no_grad():
        logprobs = F.log_softmax(model(torch.tensor([whole])).float(), dim=-1)[0]
    targets = whole[n_ctx:]
    rows = logprobs[n_ctx - 1 : len(whole) - 1]
    total = rows.gather(1, torch.tensor(targets)[:, None]).sum().item()
    return total, bool((rows.argmax(-1) == torch.tensor(targets)).all())


def test_loglikelihood_equals_direct_computation(tiny):
    model, tokenizer, _ = tiny
    got = QwenLM(model=model, tokenizer=tokenizer, batch_size=4).loglikelihood(_requests(PAIRS))
    for (context, continuation), (logprob, greedy) in zip(PAIRS, got, strict=True):
        expected, expected_greedy = _direct(model, tokenizer, context, continuation)
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy


def test_batch_size_does_not_change_results(tiny):
    model, tokenizer, _ = tiny
    one = QwenLM(model=model, tokenizer=tokenizer, batch_size=1).loglikelihood(_requests(PAIRS))
    many = QwenLM(model=model, tokenizer=tokenizer, batch_size=64).loglikelihood(_requests(PAIRS))
    for a, b in zip(one, many, strict=True):
        assert a[0] == pytest.approx(b[0], abs=1e-4) and a[1] == b[1]


def test_loglikelihood_rolling_equals_direct_sum_and_windows_cover_long_documents(tiny):
    model, tokenizer, _ = tiny
    text = "Evaluation harnesses score whole documents by rolling windows over their tokens. " * 3
    tokens = tokenizer.encode(text)
    with torch.no_grad():
        ids = torch.tensor([[tokenizer.eot_id] + tokens])
        logprobs = F.log_softmax(model(ids).float(), dim=-1)[0, :-1]
    expected = logprobs.gather(1, torch.tensor(tokens)[:, None]).sum().item()
    lm = QwenLM(model=model, tokenizer=tokenizer)
    (whole,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert whole == pytest.approx(expected, abs=1e-3)
    short = QwenLM(model=model, tokenizer=tokenizer, max_length=16)
    (windowed,) = short.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert len(tokens) > 16 and windowed < 0 and windowed != pytest.approx(expected, abs=1e-3)


def test_generate_until_uses_the_engine_and_cuts_at_stop_strings(tiny):
    model, tokenizer, _ = tiny
    prompt = "Q: What is 1+1?\nA:"
    raw = tokenizer.decode(generate(model, [tokenizer.encode(prompt)], 12, stop_ids=(tokenizer.eot_id,))[0])
    stop = raw[3:5] if len(raw) > 5 else raw
    lm = QwenLM(model=model, tokenizer=tokenizer)
    out = lm.generate_until([Instance("generate_until", {}, (prompt, {"until": [stop], "max_gen_toks": 12}), 0),
                             Instance("generate_until", {}, (prompt, {"until": [], "max_gen_toks": 12}), 1)])
    assert out[1] == raw
    assert out[0] == raw.split(stop)[0] and stop not in out[0]


def test_registry_prefers_data_dir_and_reports_missing_data():
    assert resolve("mmlu", FIXTURES).source == str(FIXTURES / "mmlu")
    assert len(resolve("humaneval").splits["test"]) == 164
    with pytest.raises(DataUnavailable, match="ceval"):
        resolve("ceval", FIXTURES)


def test_answer_extraction():
    assert scoring.gsm8k_correct("... so 5 + 4 = 9. The answer is 9.", "blah\n#### 9")
    assert not scoring.gsm8k_correct("The answer is 8.", "#### 9")
    assert scoring.gsm8k_correct("she pays $1,200 in total", "#### 1200")
    assert scoring.math_correct("Final Answer: The final answer is $\\dfrac{1}{2}$. I hope it is correct.",
                                "so it is $\\boxed{\\frac{1}{2}}$.")
    assert not scoring.math_correct("\\boxed{3}", "\\boxed{2}")
    assert scoring.bbh_correct("A is True. So the answer is False.", "False")


def test_qwen_eval_end_to_end_offline(tiny, tmp_path):
    _, _, directory = tiny
    out = tmp_path / "result.json"
    status = run_eval(directory, "mmlu,humaneval,gsm8k,bbh", limit=2, batch_size=4, data_dir=FIXTURES,
                      out=out, max_gen_toks=6, workers=2)
    assert status == 1  # bbh has no data here: skipped, and the exit status says so
    record = json.loads(out.read_text())
    assert record["skipped"].keys() == {"bbh"}
    assert record["config"]["shots"] == {"mmlu": 5, "humaneval": 0, "gsm8k": 8}
    assert len(record["config"]["checkpoint_sha256"]) == 64 and record["config"]["versions"]["lm-eval"]
    assert 0.0 <= record["results"]["mmlu"]["acc"] <= 1.0
    assert record["results"]["humaneval"]["pass@1"] == 0.0  # 6 random tokens never solve a problem
    mmlu = record["samples"]["mmlu"]
    assert len(mmlu) == 2 and mmlu[0]["prompt"].count("Answer:") == 6  # 5 shots + the question
    assert mmlu[0]["choices"] == [" A", " B", " C", " D"] and len(mmlu[0]["output"]) == 4
    code = record["samples"]["humaneval"][0]
    assert code["prompt"].startswith("from typing import List") and code["output"][0][0]["status"] != "passed"
    assert record["samples"]["gsm8k"][0]["prompt"].count("Q:") == 9


def test_unknown_task_is_a_one_line_error(tiny):
    _, _, directory = tiny
    proc = subprocess.run([sys.executable, "-m", "qwen_cli.cli", "eval", str(directory), "--tasks", "mmlu,nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --tasks: unknown task nope (known: gsm8k, math, mmlu, "
                                                "ceval, humaneval, mbpp, bbh)"]
