"""Bad input to ``qwen tokenize prepare``: one line naming the file or key, exit 2, no output folder."""

from __future__ import annotations

import pytest
from prepare_fixtures import english, planted_corpus, recipe


@pytest.fixture()
def corpus(tmp_path):
    planted_corpus(tmp_path)
    return tmp_path


def _fails(run_qwen, path, out, *args) -> str:
    code, stdout, stderr = run_qwen("tokenize", "prepare", path, "--out", out, *args)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr
    assert not out.exists() and not (out.parent / f".{out.name}.prepare").exists()
    return lines[0]


def test_non_utf8_text_names_the_file_and_line(run_qwen, corpus):
    bad = corpus / "web" / "latin1.txt"
    bad.write_bytes("ok line\nCaf\xe9 au lait\n".encode("latin-1"))
    line = _fails(run_qwen, recipe(corpus / "r.toml", corpus), corpus / "out")
    assert str(bad) in line and ":2" in line and "UTF-8" in line


def test_empty_corpus(run_qwen, tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "pages").mkdir()
    (tmp_path / "web" / "empty.txt").write_text("")
    line = _fails(run_qwen, recipe(tmp_path / "r.toml", tmp_path), tmp_path / "out")
    assert "corpus is empty" in line


def test_missing_perplexity_model(run_qwen, corpus):
    path = recipe(corpus / "r.toml", corpus, perplexity=f'enabled = true\nmodel = "{corpus / "no-such-model"}"')
    line = _fails(run_qwen, path, corpus / "out")
    assert line.startswith("error: perplexity.model") and "no-such-model" in line


def test_missing_word_list(run_qwen, corpus):
    path = recipe(corpus / "r.toml", corpus, offensive=f'word_lists = ["{corpus / "gone.txt"}"]')
    assert "gone.txt" in _fails(run_qwen, path, corpus / "out")


@pytest.mark.parametrize(("setting", "key"), [("minhash.bands=0", "minhash.bands"),
                                               ("perplexity.keep_fraction=1.5", "perplexity.keep_fraction"),
                                               ("language.min_score=-1", "language.min_score")])
def test_recipe_key_out_of_range(run_qwen, corpus, setting, key):
    line = _fails(run_qwen, recipe(corpus / "r.toml", corpus), corpus / "out", "--set", setting)
    assert key in line


@pytest.mark.parametrize("engine", ["resiliparse", "trafilatura"])
def test_broken_html_is_extracted_or_counted_never_a_crash(tmp_path, engine):
    """Truncated markup is what crawls contain: lxml recovers the text; a page with none is counted."""
    import random

    from qwen_cli.prepare.config import load
    from qwen_cli.prepare.run import prepare

    (tmp_path / "web").mkdir()
    pages = tmp_path / "pages"
    pages.mkdir()
    body = english(random.Random(1))
    (pages / "truncated.html").write_text(f"<html><body><div><p>{body}</p><p>unclosed <b>bold <i>and")
    (pages / "no_text.html").write_text("<html><head><script>var x = 1;</script></head><body><img src=a.png>")
    manifest = prepare(load(recipe(tmp_path / "r.toml", tmp_path), [f"extract.engine={engine}"]), tmp_path / "out")
    extract = next(r for r in manifest["rules"] if r["rule"] == "extract")
    assert extract["docs_in"] == 2 and extract["docs_out"] == 1
    assert extract["removed"] == {"empty_extraction": {"docs": 1}}
    assert manifest["output"]["docs"] == 2  # the recovered page, up-sampled x2
