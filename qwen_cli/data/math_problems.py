"""Math question/answer pairs from DeepMind's ``mathematics-dataset`` generator (Saxton et al., 2019).

``pip install mathematics-dataset`` (Apache-2.0; needs sympy, numpy, absl-py, six). The package
was written against sympy < 1.6: it imports ``base_solution_linear`` from the
``sympy.solvers.diophantine`` package, which newer sympy keeps one module deeper. :func:`modules`
re-exports the function where the generator looks for it before importing it; nothing else of
sympy is touched. Some generator modules also call NumPy APIs removed in NumPy 2
(``np.object``, ``ndarray.itemset``): they are reported as unavailable (with the error) rather
than patched, and the other modules run unchanged.

Problems are drawn as the package's own ``generate.py`` draws them: ``modules.train`` at the
chosen difficulty (``easy``/``medium``/``hard``: the lower, middle or upper third of the entropy
range, as for the published ``train-easy`` ... files), questions over 160 characters and answers
over 30 dropped and drawn again. Seeding NumPy, ``random`` and sympy's own generator (which
``randprime`` draws from) makes the draw reproducible across processes.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qwen_cli.data.splits import is_heldout
from qwen_cli.errors import UserError

LEVELS = ("easy", "medium", "hard")
MAX_QUESTION_CHARS, MAX_ANSWER_CHARS = 160, 30  # mathematics_dataset.generate_settings
MAX_DRAWS = 1000  # draws per accepted problem before a module is declared unusable


@dataclass(frozen=True)
class Problem:
    module: str
    question: str
    answer: str


def _import_generator():
    """``mathematics_dataset.modules.modules`` imported under a current sympy (see the module docstring)."""
    try:
        diophantine = importlib.import_module("sympy.solvers.diophantine")
        if not hasattr(diophantine, "base_solution_linear"):
            deep = importlib.import_module("sympy.solvers.diophantine.diophantine")
            diophantine.base_solution_linear = deep.base_solution_linear
        return importlib.import_module("mathematics_dataset.modules.modules")
    except ImportError as exc:
        raise UserError(f"the math data builder needs DeepMind's generator: pip install mathematics-dataset "
                        f"({exc})") from None


def _entropy(level: str) -> Callable[[tuple[float, float]], tuple[float, float]]:
    index = LEVELS.index(level)

    def restrict(range_: tuple[float, float]) -> tuple[float, float]:
        low, high = range_
        return low + index / 3 * (high - low), low + (index + 1) / 3 * (high - low)

    return restrict


def modules(level: str = "easy") -> dict[str, Callable]:
    """Every generator module as ``area__name`` -> a function drawing one problem."""
    if level not in LEVELS:
        raise UserError(f"math level must be one of {', '.join(LEVELS)}, got {level!r}")
    flat: dict[str, Callable] = {}

    def add(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            name = f"{prefix}__{key}" if prefix else key
            if isinstance(value, dict):
                add(value, name)
            else:
                flat[name] = value

    add(_import_generator().train(_entropy(level)), "")
    return dict(sorted(flat.items()))


def _draw(module: Callable) -> tuple[str, str]:
    for _ in range(MAX_DRAWS):
        problem = module()
        question, answer = str(problem.question), str(problem.answer)
        if len(question) <= MAX_QUESTION_CHARS and len(answer) <= MAX_ANSWER_CHARS:
            return question, answer
    raise RuntimeError(f"no problem within {MAX_QUESTION_CHARS}/{MAX_ANSWER_CHARS} characters "
                       f"in {MAX_DRAWS} draws")


def generate(names: list[str], per_module: int, seed: int, level: str = "easy",
             on_problem: Callable[[], None] | None = None) -> tuple[list[Problem], dict[str, str]]:
    """``per_module`` distinct problems from each named module (all modules when ``names`` is empty).

    Returns the problems (module by module, in the order drawn) and the modules that could not run
    here, each with the reason (an error on the first draw, e.g. a NumPy 2 incompatibility).
    Unknown names are a ``UserError`` listing the known ones.
    """
    available = modules(level)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UserError(f"unknown mathematics-dataset module {unknown[0]!r} (known: {', '.join(available)})")
    from sympy.core import random as sympy_random  # importable once modules() has loaded the generator

    random.seed(seed)
    np.random.seed(seed)
    sympy_random.seed(seed)  # sympy's own generator (randprime, ...), seeded from the OS when imported
    problems: list[Problem] = []
    failed: dict[str, str] = {}
    for name in names or list(available):
        seen: set[str] = set()
        try:
            for _ in range(per_module * 20):
                if len(seen) == per_module:
                    break
                question, answer = _draw(available[name])
                if question not in seen:
                    seen.add(question)
                    problems.append(Problem(name, question, answer))
                    if on_problem:
                        on_problem()
        except Exception as exc:  # the generator's own errors: numpy/sympy API drift, sampling limits
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            problems = [p for p in problems if p.module != name]
    return problems, failed



def split_heldout(problems: list[Problem], fraction: float) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out) by the question alone (:func:`~qwen_cli.data.splits.is_heldout`): no question
    is on both sides (repeated questions are kept once)."""
    train, heldout, seen = [], [], set()
    for problem in problems:
        if problem.question in seen:
            continue
        seen.add(problem.question)
        (heldout if is_heldout(problem.question, fraction) else train).append(problem)
    return train, heldout
