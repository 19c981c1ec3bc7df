"""The data a specialisation trains on, built once into ``RUN/data`` and decontaminated first.

``code``: the documents of ``[code] inputs`` are checked against the benchmarks' test items
(:mod:`qwen_cli.data.decontaminate`); a clean document is held out (``heldout.jsonl``, for the
perplexity measurement) by its content hash or goes to ``corpus.jsonl``, which is encoded into
token shards with the base model's tokenizer (``@code``) and mined for instruction pairs
(``@implement``, ``@explain``: :mod:`qwen_cli.data.code_corpus`). Held-out documents give no
pairs, so nothing measured on them was trained on in any stage.

``math``: problems from DeepMind's generator (:mod:`qwen_cli.data.math_problems`) are split by
question hash; training problems are decontaminated and written as one-exchange conversations
(``@math``); the held-out ones go, shuffled, to ``math_heldout/test.jsonl`` (``question``, ``answer``) so that
``qwen eval --data-dir RUN/data --tasks math_heldout`` scores any model on them.

The folder is written atomically with a ``manifest.json`` holding the build settings and the
counts (decontamination included); a resumed run reuses it when the settings are unchanged.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from qwen_cli.corpus import ReadStats, iter_documents
from qwen_cli.data import code_corpus, math_problems
from qwen_cli.data.decontaminate import Decontaminator
from qwen_cli.data.encode import encode_corpus
from qwen_cli.data.splits import is_heldout
from qwen_cli.errors import UserError
from qwen_cli.evaluation.harness.registry import DataUnavailable, resolve
from qwen_cli.fsutil import atomic_dir
from qwen_cli.recipe import Recipe

MANIFEST = "manifest.json"
HELDOUT_CODE = "heldout.jsonl"
HELDOUT_MATH = "math_heldout"  # a qwen eval --data-dir task folder


def item_text(benchmark: str, row: dict) -> str:
    """The text of one test item that training data must not contain (question and reference answer)."""
    if benchmark == "humaneval":
        return "\n".join((row["prompt"], row["canonical_solution"], row["test"]))
    if benchmark == "mbpp":
        return "\n".join((row["text"], row["code"], *row["test_list"]))
    if benchmark == "gsm8k":
        return row["question"] + "\n" + row["answer"]
    return row["problem"] + "\n" + row["solution"]


def load_benchmarks(names: list[str], data_dir: str, console: Console) -> tuple[dict[str, list[str]], dict, dict]:
    """(texts per benchmark, source per benchmark, reason per benchmark that could not be found)."""
    texts, sources, missing = {}, {}, {}
    for name in names:
        try:
            benchmark = resolve(name, Path(data_dir) if data_dir else None)
        except DataUnavailable as exc:
            missing[name] = str(exc)
            console.print(f"[yellow]decontamination: {escape(name)} not checked[/] ({escape(str(exc))})",
                          soft_wrap=True)
            continue
        texts[name] = [item_text(name, row) for row in benchmark.splits["test"]]
        sources[name] = benchmark.source
    return texts, sources, missing


class _Bars:
    """One rich bar per phase (hidden when the console is not a terminal); also the
    ``start``/``advance`` object ``encode_corpus`` reports to."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)
        self.task = None

    def __enter__(self) -> _Bars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def start(self, phase: str, total: int | None, unit: str = "items") -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(f"{phase} ({unit})", total=total)

    def advance(self, n: int = 1) -> None:
        self.progress.update(self.task, advance=n)


def _write_jsonl(path: Path, records) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _build_code(top: Recipe, base: Path, tmp: Path, decon: Decontaminator, bars: _Bars) -> dict:
    code = top.code
    if not code.inputs:
        raise UserError(f"{top.source}: code.inputs is empty (source folders, files or JSONL of code)")
    inputs = [code_corpus.resolve_input(spec) for spec in code.inputs]
    stats = ReadStats()
    counts = {"train": 0, "heldout": 0, **{kind: 0 for kind in code.instructions}}
    names = {"train": "corpus.jsonl", "heldout": HELDOUT_CODE, **{kind: f"{kind}.jsonl" for kind in code.instructions}}
    bars.start("decontaminating code", None, "documents")
    with contextlib.ExitStack() as stack:
        files = {key: stack.enter_context((tmp / name).open("w", encoding="utf-8")) for key, name in names.items()}
        for document in iter_documents(inputs, stats, text_field=code.text_field, on_error="skip"):
            bars.advance()
            if not decon.keep(document):
                continue
            split = "heldout" if is_heldout(document, code.heldout_fraction) else "train"
            records = [(split, {"text": document})]
            if split == "train":  # held-out documents give no instruction pairs
                records += [(kind, code_corpus.conversation(function, kind))
                            for function in code_corpus.functions(document)
                            if len(function.code) + len(function.docstring) <= code.max_instruction_chars
                            for kind in code.instructions]
            for key, record in records:
                files[key].write(json.dumps(record, ensure_ascii=False) + "\n")
                counts[key] += 1
    if not counts["train"]:
        raise UserError(f"{top.source}: no code document is left for training (inputs: {', '.join(code.inputs)})")
    manifest = encode_corpus([str(tmp / "corpus.jsonl")], str(base), tmp / "code_shards",
                             val_fraction=code.val_fraction, seed=code.seed, progress=bars)
    return {"inputs": inputs, "documents_read": sum(s.documents for s in stats.sources),
            "skipped_inputs": dict(stats.skipped), "train_documents": counts["train"],
            "heldout_documents": counts["heldout"], "train_tokens": manifest["splits"]["train"]["tokens"],
            "instruction_pairs": {kind: counts[kind] for kind in code.instructions}}


def _build_math(top: Recipe, tmp: Path, decon: Decontaminator, bars: _Bars) -> dict:
    math = top.math
    total = math.per_module * (len(math.modules) or len(math_problems.modules(math.level)))
    bars.start("generating math problems", total, "problems")
    problems, failed = math_problems.generate(math.modules, math.per_module, math.seed, math.level, bars.advance)
    if not problems:
        raise UserError(f"{top.source}: no math module could generate problems here ({failed})")
    train, heldout = math_problems.split_heldout(problems, math.heldout_fraction)
    random.Random(math.seed).shuffle(heldout)  # modules interleaved: any first N rows are a fair sample
    clean = [p for p in train if decon.keep(f"{p.question}\n{p.answer}")]

    def conversations() -> Iterator[dict]:
        for p in clean:
            yield {"messages": [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.answer}]}

    _write_jsonl(tmp / "math_train.jsonl", conversations())
    (tmp / HELDOUT_MATH).mkdir()
    _write_jsonl(tmp / HELDOUT_MATH / "test.jsonl",
                 ({"question": p.question, "answer": p.answer, "module": p.module} for p in heldout))
    return {"generator": "mathematics-dataset", "level": math.level, "modules_failed": failed,
            "problems": len(problems), "train_problems": len(clean), "heldout_problems": len(heldout)}


def build_settings(top: Recipe) -> dict:
    """The recipe values the built data depends on (a resumed run must match them)."""
    sections = top.to_dict()
    kind = sections["specialize"]["kind"]
    return {"specialize": sections["specialize"], kind: sections[kind], "decontaminate": sections["decontaminate"]}


def build(top: Recipe, data_dir: Path, console: Console) -> dict:
    """Build (or reuse, when its settings match) the run's data folder; returns its manifest."""
    settings = build_settings(top)
    manifest_path = data_dir / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("settings") == settings:
            console.print(f"data: reusing {data_dir}")
            return old
        changed = next(f"{s}.{k}" for s in settings for k in {**settings[s], **old["settings"].get(s, {})}
                       if settings[s].get(k) != old["settings"].get(s, {}).get(k))
        raise UserError(f"{manifest_path}: built with another {changed}; --overwrite rebuilds the data")
    d = top.decontaminate
    texts, sources, missing = load_benchmarks(list(d.benchmarks), d.data_dir, console)
    decon = Decontaminator(texts, d.ngram)
    with atomic_dir(data_dir) as tmp, _Bars(console) as bars:
        if top.specialize.kind == "code":
            report = _build_code(top, Path(top.specialize.base), tmp, decon, bars)
        else:
            report = _build_math(top, tmp, decon, bars)
        decontamination = {**decon.report(), "sources": sources, "not_checked": missing}
        manifest = {"settings": settings, "data": report, "decontamination": decontamination}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    checked = ", ".join(f"{n} ({decon.items[n]} items)" for n in texts) or "none"
    console.print(f"decontamination ({d.ngram}-grams vs {checked}): {decon.removed_documents} of {decon.checked} "
                  f"training documents removed {dict(decon.removed)}")
    return manifest
