"""Scoring oracles: gold answers sent through the whole `qwen eval` scoring path (registry, our lm-eval
task configs, the sandbox filter, lm-eval's metric aggregation, our report) score 1, wrong answers 0, on every
benchmark of the paper; and every prompt carries the paper's number of exemplars.

An oracle model stands in for ours: it answers each request from the document it was built from.
Every benchmark row appears twice in a row; the first copy gets the gold answer, the second a wrong
one, so each item is scored both ways. Data: the real items under tests/fixtures/eval (GSM8K,
HumanEval, MMLU) and the real MATH, MBPP and BBH items that lm-eval itself ships as exemplars
(read through the same helpers as the task definitions); C-Eval rows are written here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import lm_eval
import pytest
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from qwen_cli.evaluation.harness.registry import lm_eval_literal, lm_eval_yaml, read_jsonl, resolve
from qwen_cli.evaluation.harness.report import build_record, primary_score
from qwen_cli.evaluation.harness.tasks import LETTERS, task_config

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
METRIC = {"mmlu": "acc", "ceval": "acc", "gsm8k": "exact_match", "math": "exact_match", "bbh": "exact_match",
          "humaneval": "pass@1", "mbpp": "pass@1"}
# exemplars per prompt in the report's Table 2, and what marks one exemplar (plus the question) in a prompt
TABLE2_SHOTS = {"mmlu": 5, "ceval": 5, "gsm8k": 8, "math": 4, "humaneval": 0, "mbpp": 3, "bbh": 3}
MARKER = {"mmlu": "\nAnswer:", "ceval": "答案：", "gsm8k": "Q: ", "math": "Problem:\n", "humaneval": "def ",
          "mbpp": "[BEGIN]", "bbh": "A: Let's think step by step."}
FINAL_ANSWER = "\nFinal Answer:"


def _ceval_row(question: str, options: list[str], answer: str) -> dict:
    return {"question": question, **dict(zip(LETTERS, options, strict=True)), "answer": answer,
            "subject": "高中数学"}


CEVAL_DEV = [_ceval_row(f"{a}+{b}等于多少？", [str(a + b + k - 1) for k in range(4)], "B")
             for a, b in ((1, 1), (2, 3), (4, 4), (5, 7), (6, 9))]
CEVAL_VAL = [_ceval_row("3×4等于多少？", ["7", "12", "10", "14"], "B"), _ceval_row("9-5等于多少？", ["4", "3", "5", "6"], "A")]


def _bbh_rows() -> list[dict]:
    """lm-eval's boolean_expressions exemplars; the target is the expression evaluated by Python."""
    rows = []
    for sample in lm_eval_yaml("bbh/cot_fewshot/boolean_expressions.yaml")["fewshot_config"]["samples"]:
        target = str(eval(sample["input"].removesuffix(" is")))  # trusted text from lm-eval
        rows.append({"input": sample["input"], "target": target, "subtask": "boolean_expressions",
                     "reasoning": sample["target"]})
    return rows


def _math_rows() -> list[dict]:
    """lm-eval's Minerva MATH exemplars as MATH rows (the solution ends at its \\boxed{} answer)."""
    return [{"problem": s["problem"], "solution": s["solution"].split(FINAL_ANSWER)[0],
             "reasoning": s["solution"]} for s in lm_eval_literal("minerva_math/utils.py", "list_fewshot_samples")]


def _mbpp_rows() -> list[dict]:
    return [{k: s[k] for k in ("task_id", "text", "code", "test_list")}
            for s in lm_eval_literal("mbpp/utils.py", "list_fewshot_samples")]


def _write(path: Path, rows: list[dict], twice: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doubled = [row for row in rows for _ in range(2 if twice else 1)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in doubled))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oracle")
    for task in ("gsm8k", "humaneval", "mmlu"):
        _write(root / task / "test.jsonl", read_jsonl(FIXTURES / task / "test.jsonl"))
    _write(root / "mmlu" / "dev.jsonl", read_jsonl(FIXTURES / "mmlu" / "dev.jsonl"), twice=False)
    _write(root / "ceval" / "val.jsonl", CEVAL_VAL)
    _write(root / "ceval" / "dev.jsonl", CEVAL_DEV, twice=False)
    _write(root / "math" / "test.jsonl", _math_rows())
    _write(root / "mbpp" / "test.jsonl", _mbpp_rows())
    _write(root / "bbh" / "test.jsonl", _bbh_rows())
    return root


# ---------------------------------------------------------------- replies: gold, and a wrong one
def _gsm8k(doc: dict, right: bool) -> str:
    reasoning, gold = doc["answer"].split("####")
    answer = int(gold.strip().replace(",", "")) + (0 if right else 1)
    return f"{reasoning.strip()} The answer is {answer}."


def _math(doc: dict, right: bool) -> str:
    if right:
        return doc["reasoning"]  # the published solution, Minerva's "Final Answer: ..." line included
    return doc["solution"].replace("\\boxed{", "\\boxed{1+")  # a different boxed answer


def _humaneval(doc: dict, right: bool) -> str:
    return doc["canonical_solution"] if right else "    return None\n"


def _mbpp(doc: dict, right: bool) -> str:
    if right:
        return doc["code"]
    name = re.search(r"def (\w+)", doc["code"]).group(1)
    return f"def {name}(*args):\n    return None\n"


def _bbh(doc: dict, right: bool) -> str:
    if right:
        return doc["reasoning"]
    return f"Let's evaluate it. So the answer is {doc['target'] != 'True'}."


REPLIES = {"gsm8k": _gsm8k, "math": _math, "humaneval": _humaneval, "mbpp": _mbpp, "bbh": _bbh}


def _gold_letter(task: str, doc: dict) -> str:
    return LETTERS[doc["answer"]] if task == "mmlu" else doc["answer"]


class OracleLM(LM):
    """Answers the first copy of every item right and the second wrong; records every prompt."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: dict[str, list[str]] = {}

    def _seen(self, request) -> bool:
        """True for the gold copy (even doc id), False for the wrong one."""
        self.prompts.setdefault(request.task_name, []).append(request.args[0])
        return request.doc_id % 2 == 0

    def loglikelihood(self, requests):
        results = []
        for request in requests:
            right = self._seen(request)
            is_gold = request.args[1].strip() == _gold_letter(request.task_name, request.doc)
            results.append((0.0 if is_gold == right else -10.0, False))
        return results

    def generate_until(self, requests):
        return [REPLIES[r.task_name](r.doc, self._seen(r)) for r in requests]

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


@pytest.fixture(scope="module")
def evaluated(data_dir):
    oracle = OracleLM()
    configs = [task_config(resolve(task, data_dir), workers=2) for task in METRIC]
    results = lm_eval.simple_evaluate(model=oracle, tasks=configs, task_manager=TaskManager(include_defaults=False),
                                      log_samples=True, bootstrap_iters=0, confirm_run_unsafe_code=True)
    return results, oracle.prompts


@pytest.mark.parametrize("task", list(METRIC))
def test_gold_answers_score_one_and_wrong_answers_zero(evaluated, task):
    results, _ = evaluated
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    scores = [s[METRIC[task]] for s in samples]
    assert len(scores) >= 4 and scores == [1.0, 0.0] * (len(scores) // 2), scores
    record = build_record({}, results, {})  # what `qwen eval` reports and writes
    assert primary_score(task, record["results"][task]) == pytest.approx(50.0)


@pytest.mark.parametrize("task", list(METRIC))
def test_prompts_carry_the_papers_exemplar_counts(evaluated, task):
    _, prompts = evaluated
    assert prompts[task]
    for prompt in prompts[task]:
        assert prompt.count(MARKER[task]) == TABLE2_SHOTS[task] + 1, prompt
