"""Tasks of the code-interpreter benchmark, read from Qwen-Agent's JSON Lines format.

One object per line: ``query`` (the question), ``tags`` (comma list naming the category:
``math``/``ci_math_code``, ``visualization``/``ci_plot``, ``general``/``ci_open_questions``),
``input_file_path`` (optional list of files the task uploads), ``lang`` and ``task`` (optional;
a ``task`` containing "negative" is left out, as Qwen-Agent does). A math item may carry
``answer`` (a number, or text ending in ``#### N`` as in GSM8K); GSM8K lines themselves
(``question`` + ``answer``) are read as math items, which is how the official math column is made.

A visualisation query holding ``<|im_end|>`` is *easy*: after it comes a pre-filled first step
(``<|im_start|>assistant`` then ``Thought:``/``Action:``/``Action Input:``), typically reading the
CSV; the harness runs that code first and the model goes on from its output. Without one the task
is *hard*: the model must look at the data itself before plotting.

Upload files are found relative to the data file's folder (the task's upload directory): the path
as written, else its base name under ``upload_file_clean/`` or ``upload_file/`` there (the layout
of Qwen-Agent's data archive). An absolute path, a ``..`` or a link that leads out of that folder
is refused before any task runs, so no host file can be copied into a sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qwen_cli.data.jsonl import read_jsonl_lines
from qwen_cli.errors import UserError

PACKAGED = Path(__file__).with_name("data") / "code_interpreter.jsonl"
CATEGORY_TAGS = {"math": "math", "ci_math_code": "math", "gsm8k": "math", "visualization": "visualization",
                 "ci_plot": "visualization", "general": "general", "ci_open_questions": "general"}
END_OF_TURN, ASSISTANT = "<|im_end|>", "<|im_start|>assistant"
UPLOAD_DIRS = ("", "upload_file_clean", "upload_file")


@dataclass(frozen=True)
class CodeTask:
    """One benchmark task: its category, the question, the pre-filled step (easy visualisation
    only), the gold number (math, when known) and the host files to copy into the session."""

    where: str
    category: str
    question: str
    prefill: str = ""
    answer: str | None = None
    files: tuple[Path, ...] = ()

    @property
    def level(self) -> str | None:
        """``easy``/``hard`` for visualisation, None otherwise."""
        if self.category != "visualization":
            return None
        return "easy" if self.prefill else "hard"

    @property
    def group(self) -> str:
        """math | vis_hard | vis_easy | general (how ``--limit`` and the table split tasks)."""
        return f"vis_{self.level}" if self.level else self.category


def gold_answer(value: object) -> str | None:
    """The gold number of a math item as text: a JSON number, or the part after ``####``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value.rpartition("####")[2].strip() or None
    return None


def _category(row: dict, where: str) -> str:
    if "question" in row and "query" not in row:
        return "math"  # a GSM8K line
    tags = row.get("tags", "")
    tags = tags.split(",") if isinstance(tags, str) else tags if isinstance(tags, list) else []
    found = {CATEGORY_TAGS[t.strip()] for t in tags if isinstance(t, str) and t.strip() in CATEGORY_TAGS}
    if len(found) != 1:
        raise UserError(f"{where}: 'tags' must name one category (math, visualization or general), "
                        f"got {row.get('tags')!r}")
    return found.pop()


def _files(row: dict, folder: Path, where: str) -> tuple[Path, ...]:
    names = row.get("input_file_path") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where}: 'input_file_path' must be a list of file paths")
    found = []
    for name in names:
        if not name or PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise UserError(f"{where}: upload file {name!r} must be a relative path inside {folder} "
                            "(no leading '/', no '..')")
        candidates = [folder / (Path(sub) / Path(name).name if sub else Path(name)) for sub in UPLOAD_DIRS]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise UserError(f"{where}: upload file {name!r} not found (looked for {', '.join(map(str, candidates))})")
        if not hit.resolve().is_relative_to(folder.resolve()):
            raise UserError(f"{where}: upload file {name!r} resolves outside {folder} (a symbolic link)")
        found.append(hit)
    return tuple(found)


def _task(row: dict, folder: Path, where: str) -> CodeTask:
    text = row.get("query", row.get("question"))
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: missing 'query' (the question)")
    question, _, rest = text.partition(END_OF_TURN)
    prefill = rest.strip().removeprefix(ASSISTANT).strip()
    category = _category(row, where)
    if prefill and "Action Input:" not in prefill:
        raise UserError(f"{where}: the text after {END_OF_TURN} must be a pre-filled step with an Action Input")
    answer = gold_answer(row.get("answer")) if category == "math" else None
    return CodeTask(where, category, question.strip(), prefill, answer, _files(row, folder, where))


def load_tasks(path: Path | None = None) -> list[CodeTask]:
    """The tasks of ``path`` (default: the packaged offline set), negative items left out."""
    path = path or PACKAGED
    tasks = [_task(row, path.parent, where) for where, row in read_jsonl_lines(path)
             if "negative" not in str(row.get("task", ""))]
    if not tasks:
        raise UserError(f"{path}: no tasks (empty file)")
    return tasks


def limit_tasks(tasks: list[CodeTask], limit: int | None) -> list[CodeTask]:
    """The first ``limit`` tasks of each group (math, vis_hard, vis_easy, general), in file order."""
    if limit is None:
        return tasks
    seen: dict[str, int] = {}
    kept = []
    for task in tasks:
        seen[task.group] = seen.get(task.group, 0) + 1
        if seen[task.group] <= limit:
            kept.append(task)
    return kept
