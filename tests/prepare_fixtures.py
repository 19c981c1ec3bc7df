"""Small corpora for the ``qwen tokenize prepare`` tests, with planted duplicates and known-bad documents.

English documents are random sentences over a small vocabulary (distinct documents share almost no
5-word shingle); the planted cases are each written to their own file so tests can name them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NOUNS = "river stone cloud lamp tiger bread glass music paper snow wheel garden window teacher letter".split()
VERBS = "carries finds watches holds paints follows keeps builds opens moves".split()
ADJECTIVES = "quiet bright small old green heavy warm distant simple careful".split()
GERMAN = ("Der Fluss fließt langsam durch die alte Stadt, und die Menschen sitzen am Ufer und sprechen über "
          "das Wetter, die Arbeit und die Familie. Im Sommer ist es hier sehr warm und die Kinder spielen "
          "bis zum Abend im Park, während ihre Eltern Kaffee trinken und Zeitung lesen.")
CHINESE = ("今天的天气非常好，我们一起去公园散步。公园里有很多人，有的在跑步，有的在下棋，还有的在唱歌。"
           "孩子们在草地上玩耍，老人们坐在长椅上聊天。我们走了一个小时，然后在湖边的茶馆里喝茶休息。")
ARTICLE_HTML = """<!DOCTYPE html><html><head><title>River notes</title></head><body>
<nav><a href="/">Home</a> | <a href="/about">About</a> | <a href="/login">Login</a></nav>
<article><h1>Notes on the river</h1><p>{body}</p></article>
<footer>Copyright 2026 Example Corp. All rights reserved. Privacy policy. Terms of use.</footer>
</body></html>"""


def english(rng: random.Random, words: int = 120) -> str:
    """Random English sentences, about ``words`` long."""
    sentences = []
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the "
                         f"{rng.choice(NOUNS)} and a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} "
                         f"{rng.choice(VERBS)} it with the {rng.choice(NOUNS)}.")
    return " ".join(sentences)


def near_copy(text: str, rng: random.Random, changes: int = 1) -> str:
    """``text`` with ``changes`` words replaced (Jaccard of 5-shingles stays above 0.9 for 120 words)."""
    words = text.split()
    for i in rng.sample(range(len(words)), changes):
        words[i] = rng.choice(NOUNS)
    return " ".join(words)


def planted_corpus(root: Path, seed: int = 0) -> dict[str, Path]:
    """Writes ``root/web/*.txt`` and ``root/pages/article.html``; returns the planted files by role."""
    rng = random.Random(seed)
    web, pages = root / "web", root / "pages"
    web.mkdir(parents=True)
    pages.mkdir()
    files = {}
    for i in range(8):
        files[f"clean{i}"] = web / f"clean{i}.txt"
        files[f"clean{i}"].write_text(english(rng))
    original = files["clean0"].read_text()
    planted = {
        "exact_dup": "  " + original.replace(". ", ".\n\n").replace("The ", "the ") + " !",  # same once normalised
        "near_dup": near_copy(files["clean1"].read_text(), rng),
        "german": GERMAN,
        "chinese": CHINESE,
        "offensive": english(rng) + " What a load of bullshit, said the teacher.",
        "short": "The river is quiet.",  # Gopher: fewer than min_words
    }
    for name, text in planted.items():
        files[name] = web / f"{name}.txt"
        files[name].write_text(text, encoding="utf-8")
    files["article"] = pages / "article.html"
    files["article"].write_text(ARTICLE_HTML.format(body=english(rng)))
    return files


def recipe(path: Path, root: Path, **sections: str) -> Path:
    """A prepare recipe over :func:`planted_corpus`'s folders; ``sections`` add TOML lines per section."""
    body = {
        "input": f'sources = [{{ name = "web", paths = ["{root / "web"}"] }}, '
                 f'{{ name = "pages", paths = ["{root / "pages"}"], upsample = 2.0 }}]',
        "executor": "workers = 1",
        "quality": 'languages = ["en"]\nmin_words = 20\nc4 = false',
    }
    for name, lines in sections.items():
        body[name] = body.get(name, "") + "\n" + lines
    path.write_text("".join(f"[{name}]\n{lines}\n\n" for name, lines in body.items()))
    return path


def output_docs(out: Path) -> list[dict]:
    """Every output record of a finished run (sorted by id)."""
    docs = [json.loads(line) for f in sorted((out / "data").rglob("*.jsonl")) for line in f.open()]
    return sorted(docs, key=lambda d: d["id"])
