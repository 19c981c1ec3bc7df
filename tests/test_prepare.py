"""``qwen tokenize prepare`` on a planted corpus: each rule removes what it should and only that."""

from __future__ import annotations

import json

import pytest
from prepare_fixtures import output_docs, planted_corpus, recipe


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One run over the planted corpus (keeping en and zh), shared by the tests below."""
    from qwen_cli.prepare.config import load
    from qwen_cli.prepare.run import prepare

    root = tmp_path_factory.mktemp("prepare")
    files = planted_corpus(root)
    path = recipe(root / "prepare.toml", root, language='keep = ["en", "zh"]')
    manifest = prepare(load(path), root / "out")
    return files, root / "out", manifest


def _ids(docs: list[dict]) -> set[str]:
    return {d["id"].split("#")[0].rsplit("/", 1)[-1] for d in docs}


def _rule(manifest: dict, name: str) -> dict:
    return next(r for r in manifest["rules"] if r["rule"] == name)


def test_every_planted_document_is_removed_by_its_rule(prepared):
    files, out, manifest = prepared
    kept = _ids(output_docs(out))
    assert {f"clean{i}.txt" for i in range(8)} <= kept  # nothing clean is lost
    assert {"chinese.txt", "article.html"} <= kept
    assert not kept & {"exact_dup.txt", "near_dup.txt", "german.txt", "offensive.txt", "short.txt"}
    removed = {rule["rule"]: {reason: v["docs"] for reason, v in rule["removed"].items()}
               for rule in manifest["rules"]}
    assert removed["language"] == {"other_language": 1}
    assert removed["offensive"] == {"word_list": 1}
    assert removed["quality"] == {"gopher_short_doc": 1}
    assert removed["exact_dedup"] == {"duplicate": 1}
    assert removed["minhash_dedup"] == {"duplicate": 1}


def test_manifest_counts_chain_and_examples_name_the_documents(prepared):
    files, out, manifest = prepared
    language = _rule(manifest, "language")
    assert language["docs_in"] == 15 and language["docs_out"] == 14
    example = language["removed"]["other_language"]["examples"][0]
    assert example["text"].startswith("Der Fluss") and example["source"] == "web"
    assert language["removed"]["other_language"]["bytes"] == len(files["german"].read_bytes())
    dedup = [r for r in manifest["rules"] if r["stage"] == "dedup"]
    assert dedup[0]["docs_out"] == dedup[1]["docs_in"]  # exact then MinHash, same stream
    assert manifest["output"]["docs"] == len(output_docs(out))
    assert json.loads((out / "manifest.json").read_text())["output"] == manifest["output"]
    assert manifest["minhash"] == {"ngram": 5, "bands": 14, "rows": 8, "threshold": 0.719}


def test_languages_are_routed_and_html_is_extracted(prepared):
    files, out, _ = prepared
    assert sorted(p.name for p in (out / "data").iterdir()) == ["en", "zh"]
    chinese = [json.loads(line) for f in (out / "data" / "zh").glob("*.jsonl") for line in f.open()]
    assert [d["text"] for d in chinese] == [files["chinese"].read_text()]
    article = [d for d in output_docs(out) if d["id"].startswith(str(files["article"]).lstrip("/"))]
    assert len(article) == 2  # source "pages" is up-sampled x2
    assert "<p>" not in article[0]["text"] and "All rights reserved" not in article[0]["text"]
    assert article[0]["text"] == article[1]["text"] and article[1]["id"].endswith("#1")


def test_upsampling_repeats_a_fraction_of_documents_deterministically():
    from datatrove.data import Document

    from qwen_cli.prepare.steps import Upsample

    docs = [Document(f"text {i}", f"doc{i}", metadata={"source": "a"}) for i in range(1000)]
    first = [d.id for d in Upsample({"a": 1.5})(iter(docs))]
    again = [d.id for d in Upsample({"a": 1.5})(iter(docs))]
    assert first == again and 1400 < len(first) < 1600
    assert len(list(Upsample({"a": 0.25})(iter(docs)))) < 300


def test_user_word_list_replaces_the_builtin_one(tmp_path):
    from datatrove.data import Document

    from qwen_cli.prepare.steps import WordListFilter

    words = tmp_path / "mine.txt"
    words.write_text("# my list\nmarmalade\n坏话\n")
    step = WordListFilter([words], max_fraction=0.0)
    assert step.filter(Document("I like Marmalade on bread.", "a")) == (False, "word_list")
    assert step.filter(Document("这是坏话。", "b")) == (False, "word_list")
    assert step.filter(Document("What a load of bullshit.", "c")) is True  # not in this list
