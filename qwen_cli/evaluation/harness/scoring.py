"""Answer extraction and comparison for the generative benchmarks (GSM8K, MATH, BBH).

GSM8K: the number after "The answer is", else the last number in the reply, compared
numerically with the number after ``####`` in the reference. MATH: the answer in "The final
answer is ...", else the last ``\\boxed{...}``, compared after a light LaTeX normalisation (spaces,
``\\left``/``\\right``, ``\\dfrac``, dollars, degrees, trailing dots) with the reference's last
``\\boxed{}``. BBH: the text after "the answer is", compared with the target.
"""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def _to_number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", "").rstrip("."))
    except ValueError:
        return None


def gsm8k_gold(answer: str) -> str:
    return answer.split("####")[-1].strip()


def gsm8k_extract(reply: str) -> str | None:
    match = re.search(r"[Tt]he answer is \$?(-?[\d,]*\.?\d+)", reply)
    if match:
        return match.group(1)
    numbers = NUMBER.findall(reply)
    return numbers[-1] if numbers else None


def gsm8k_correct(reply: str, answer: str) -> bool:
    predicted = gsm8k_extract(reply)
    if predicted is None:
        return False
    a, b = _to_number(predicted), _to_number(gsm8k_gold(answer))
    return a is not None and b is not None and abs(a - b) < 1e-6


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def math_normalize(answer: str) -> str:
    answer = answer.strip().strip("$").rstrip(".")
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\dfrac", "\\frac"),
                     ("\\tfrac", "\\frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""),
                     ("\\$", ""), ("\\text{ }", "")):
        answer = answer.replace(old, new)
    answer = re.sub(r"\\text\{(.*?)\}", r"\1", answer)
    return re.sub(r"\s+", "", answer)


def math_extract(reply: str) -> str | None:
    match = re.search(r"final answer is \$?(.+?)\$?\. I hope", reply)
    if match:
        return match.group(1)
    return last_boxed(reply)


def math_correct(reply: str, solution: str) -> bool:
    predicted, gold = math_extract(reply), last_boxed(solution)
    if predicted is None or gold is None:
        return False
    a, b = math_normalize(predicted), math_normalize(gold)
    if a == b:
        return True
    x, y = _to_number(a), _to_number(b)
    return x is not None and y is not None and abs(x - y) < 1e-6


def bbh_correct(reply: str, target: str) -> bool:
    match = re.search(r"answer is (.+?)\.?(?:\n|$)", reply)
    return match is not None and match.group(1).strip() == target.strip()
