"""Behaviour of ``qwen_cli/evaluation`` that a one-line mutation sweep (issue 26) found unpinned.

Each test names the rule it pins. No data and no checkpoint: stubs, one random 2-layer model built in
the test (the perplexity sweep), one `sh` judge, and one pre-filled sandbox cell.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from qwen_cli.agent.react import Episode, Step
from qwen_cli.agent.tools import Observation
from qwen_cli.data.preference import read_gold_questions
from qwen_cli.errors import UserError
from qwen_cli.evaluation.agent import code_interpreter
from qwen_cli.evaluation.agent.code_interpreter import CodeTask, final_reply, mentions, score_episode
from qwen_cli.evaluation.agent.judge import Judge
from qwen_cli.evaluation.harness import scoring
from qwen_cli.evaluation.long_context.extend_context import parse_lengths
from qwen_cli.evaluation.long_context.sweep import (
    MAX_CONTEXT,
    check_context,
    length_chunks,
    parse_window_spec,
    run_sweep,
    sweep_methods,
    trained_length,
    window_size,
)
from qwen_cli.evaluation.reward import preference
from qwen_cli.evaluation.runner import _check_device, parse_tasks, run_eval
from qwen_cli.fsutil import WriteError
from qwen_cli.model import ModelConfig, QwenModel

# every test here takes well under a second
pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------- harness/scoring.py
def test_gsm8k_takes_the_last_number_of_a_reply_without_the_answer_phrase():
    assert scoring.gsm8k_correct("3 apples and 4 apples make 7 apples", "#### 7")
    assert not scoring.gsm8k_correct("7 apples minus 4 leaves 3", "#### 7")


def test_math_takes_the_last_boxed_answer_and_falls_back_to_it():
    assert scoring.last_boxed("first \\boxed{1}, then \\boxed{2}") == "2"
    assert scoring.math_correct("so the result is \\boxed{4}", "hence $\\boxed{4}$")  # no "final answer is"


def test_math_normalisation_drops_dollars_text_and_spaces():
    assert scoring.math_normalize("$x+1$") == "x+1"
    assert scoring.math_correct("\\boxed{\\text{(B)}}", "\\boxed{(B)}")
    assert scoring.math_correct("\\boxed{x + 1}", "\\boxed{x+1}")


def test_bbh_compares_with_the_target_stripped():
    assert scoring.bbh_correct("So the answer is False.", "False\n")


# ---------------------------------------------------------------- agent/judge.py
def test_judge_finds_a_bare_program_name_on_path(tmp_path):
    verdict = Judge("sh -c 'echo yes'")("Is it a plot?", [tmp_path / "a.png"])
    assert verdict.correct is True and verdict.output == "yes"


def test_judge_killed_by_a_signal_gives_no_verdict(tmp_path):
    verdict = Judge("sh -c 'echo yes; kill -9 $$'")("Is it a plot?", [tmp_path / "a.png"])
    assert verdict.correct is None and "status -9" in verdict.error


# ---------------------------------------------------------------- agent/code_interpreter.py
def _episode(observations: list[Observation], reply: str, stop_reason: str = "final_answer") -> Episode:
    steps = [Step("t", "code_interpreter", "print()", o) for o in observations]
    return Episode("q", steps, final_answer=reply if stop_reason == "final_answer" else None,
                   stop_reason=stop_reason, reply=reply)


MATH = CodeTask("t:1", "math", "How many?", answer="84")


def test_the_gold_number_is_the_last_number_of_the_answer():
    assert mentions("x = 12", "between 5 and 12") and not mentions("x = 5", "between 5 and 12")


def test_a_reply_without_final_answer_still_counts_as_the_final_reply():
    assert final_reply(_episode([], "It is 84.", stop_reason="no_action")) == "It is 84."
    assert final_reply(_episode([], "It is 84.", stop_reason="step_limit")) is None


def test_the_gold_in_an_errored_cell_and_its_images_do_not_count():
    broken = Observation("84\nValueError: no", images=["/tmp/broken.png"], error=True)
    clean = Observation("12", images=["/tmp/ok.png"])
    scores = score_episode(MATH, _episode([broken, clean], "The answer is 84."))
    assert scores["math_correct"] is False and scores["images"] == ["/tmp/ok.png"]
    assert not scores["executable"] and scores["code_runs"] == 2


def test_the_prefilled_step_keeps_the_tool_name_it_gave(tmp_path):
    prefill = "Thought: look.\nAction: python\nAction Input: ```py\nprint(1)\n```"
    task = CodeTask("t:2", "visualization", "Plot it.", prefill=prefill)
    record = code_interpreter.run_task(task, lambda messages, prefix: "Final Answer: done", None, tmp_path)
    assert record["prefilled_step"]["action"] == "python" and record["prefilled_step"]["observation"]["text"] == "1"


def test_summary_counts_math_tasks_with_an_answer():
    def rec(answer):
        return {"category": "math", "level": None, "executable": True, "math_correct": answer and True,
                "vis_correct": None, "answer": answer}
    assert code_interpreter.summarise([rec("1"), rec("2"), rec(None)])["n_math_with_answer"] == 2


# ---------------------------------------------------------------- reward/preference.py
def test_a_test_split_is_named_after_its_folder():
    assert preference.set_name("pairs/arith/test.jsonl") == "arith"
    assert preference.set_name("pairs/arith/holdout.jsonl") == "holdout"


def test_reward_accuracy_counts_ties_as_wrong():
    assert preference.summary(torch.tensor([0.0, 1.0]))["accuracy"] == 0.5


class _Tokenizer:
    im_end_id = 0

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


class _Template:
    tokenizer = _Tokenizer()

    def __init__(self) -> None:
        self.max_lens: list[int | None] = []

    def prompt(self, messages, max_len=None):
        self.max_lens.append(max_len)
        return [1, 2, 3]


class _Model:
    class config:  # noqa: N801 - mimics ModelConfig's attribute
        max_position_embeddings = 100

    def eval(self):
        return self


def test_gold_questions_limit_zero_means_all_and_every_line_is_checked(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": i}) + "\n" for i in range(3)))
    questions = read_gold_questions(prompts, 0)
    assert [answer for _, answer in questions] == ["0", "1", "2"]
    assert questions[1][0] == [{"role": "user", "content": "q1"}]
    assert len(read_gold_questions(prompts, 2)) == 2
    prompts.write_text(prompts.read_text() + json.dumps({"prompt": "q3"}) + "\n")
    with pytest.raises(UserError, match="prompts.jsonl:4"):
        read_gold_questions(prompts, 1)  # the bad line lies past the limit: still checked


def test_gold_accuracy_prompts_leave_room_for_the_reply(monkeypatch):
    questions = [([{"role": "user", "content": f"q{i}"}], str(i)) for i in range(3)]
    monkeypatch.setattr(preference, "generate", lambda model, ids, n, **kw: [[i] for i in range(len(ids))])
    template = _Template()
    assert preference.gold_accuracy(_Model(), template, questions, 30) == {"gold": 1.0, "prompts": 3}
    assert template.max_lens == [70, 70, 70]


def test_gold_exact_match_of_a_single_reply():
    assert preference.exact_match(_Tokenizer(), [[9]], ["9"]) == 1.0
    assert preference.exact_match(_Tokenizer(), [[8]], ["9"]) == 0.0


# ---------------------------------------------------------------- long_context
def test_default_lengths_are_one_to_sixteen_times_t_up_to_max_context():
    assert parse_lengths(None, 256) == [256, 512, 1024, 2048, 4096]
    assert parse_lengths(None, MAX_CONTEXT // 16)[-1] == MAX_CONTEXT


def test_a_length_below_two_is_refused():
    with pytest.raises(UserError, match="at least 2"):
        parse_lengths("1", 64)


def test_max_context_itself_is_allowed():
    assert check_context("--max-length", MAX_CONTEXT) == MAX_CONTEXT
    with pytest.raises(UserError):
        check_context("--max-length", MAX_CONTEXT + 1)


def test_an_empty_window_and_zero_layers_are_refused():
    with pytest.raises(UserError, match="expected a token count"):
        window_size("", 64)
    with pytest.raises(UserError, match="K in W@K"):
        parse_window_spec("T@0", 4, 64)


def test_training_length_prefers_the_config_then_a_positive_recipe_seq_len(tmp_path):
    assert trained_length(tmp_path, SimpleNamespace(train_length=128, max_position_embeddings=512)) == 128
    (tmp_path / "recipe.toml").write_text("[data]\nseq_len = 0\n")
    assert trained_length(tmp_path, SimpleNamespace(train_length=0, max_position_embeddings=512)) == 512
    (tmp_path / "recipe.toml").write_text("[data]\nseq_len = 64\n")
    assert trained_length(tmp_path, SimpleNamespace(train_length=0, max_position_embeddings=512)) == 64


def test_ntk_rows_use_the_bucketed_dynamic_base_and_logn():
    ntk, ntk_logn = sweep_methods(["ntk", "ntk+logn"], [], 4, 64)
    assert (ntk.rope_ntk, ntk.logn_attn) == ("dynamic", False)
    assert (ntk_logn.rope_ntk, ntk_logn.logn_attn) == ("dynamic", True)


def test_a_document_of_exactly_the_length_gives_one_chunk():
    assert length_chunks([[1, 2, 3, 4]], 4, max_tokens=100) == [[1, 2, 3, 4]]


def test_sweep_perplexity_predicts_length_tokens_per_chunk_and_switches_the_techniques_off_after():
    torch.manual_seed(0)
    model = QwenModel(ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)).eval()
    docs = [torch.randint(0, 64, (40,)).tolist()]
    result = run_sweep(model, docs, [8], sweep_methods(["ntk+logn"], [], 2, 16), 16, 1000)
    assert model.config.rope_ntk == "none" and not model.config.logn_attn and model.config.train_length == 0
    ids = torch.tensor(length_chunks(docs, 9, 1000))  # L + 1 tokens: L predictions, each with up to L of context
    with torch.no_grad():
        logits = model.lm_head(model.hidden_states(ids[:, :-1])).float()  # below T = 16: NTK and LogN change nothing
    expected = math.exp(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).item())
    assert result["perplexity"]["ntk+logn"][8] == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------- runner.py
def test_task_names_ignore_case_and_an_empty_list_is_refused():
    assert parse_tasks("GSM8K, gsm8k") == ["gsm8k"]
    with pytest.raises(UserError, match="none given"):
        parse_tasks(" , ")


def test_a_cuda_index_equal_to_the_device_count_is_refused():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(UserError, match="usable CUDA device"):
        _check_device(f"cuda:{count}")


@pytest.mark.parametrize(("options", "message"), [
    ({"num_fewshot": -1}, "--num-fewshot must be >= 0"), ({"limit": 0}, "--limit must be >= 1"),
    ({"batch_size": 0}, "--batch-size must be >= 1"), ({"max_gen_toks": 0}, "--max-gen-toks must be >= 1"),
    ({"data_dir": "FILE"}, "--data-dir is not a directory"),
])
def test_eval_options_are_refused_at_their_bounds_before_the_checkpoint_is_read(tmp_path, options, message):
    if options.get("data_dir") == "FILE":
        (tmp_path / "data.txt").write_text("")
        options = {"data_dir": tmp_path / "data.txt"}
    with pytest.raises(UserError, match=message):
        run_eval(tmp_path / "no-checkpoint", "gsm8k", **options)


def test_eval_out_is_checked_before_the_checkpoint_is_read(tmp_path):
    with pytest.raises(WriteError, match="cannot write"):
        run_eval(tmp_path / "no-checkpoint", "gsm8k", out=tmp_path)  # a directory: the JSON cannot go there
