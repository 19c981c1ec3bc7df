"""BPE training: from scratch (HF trainer -> exact tiktoken ranks) and extending cl100k."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from qwen_cli.errors import UserError
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.tokenizer.bpe import train_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
CODE = [str(STDLIB / name) for name in ("textwrap.py", "fractions.py", "string.py")]
CORPUS = [str(FIXTURES / "hamlet_excerpt.txt"), str(FIXTURES / "lunyu.jsonl"), *CODE]
SAMPLES = [
    "To be, or not to be, that is the question:",
    "子曰：“学而时习之，不亦说乎？”",
    "def wrap(text, width=70, **kwargs):\n    return TextWrapper(width=width).wrap(text)\n",
    "In 2024 the answer was 1234567 and 3.14159.",
    "Ünïcödé 😀🎉 \t\n\n  trailing  ",
]


def _texts() -> list[str]:
    from qwen_cli.corpus import ReadStats, iter_documents

    return list(iter_documents(CORPUS, ReadStats()))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bpe") / "tok"
    summary = train_tokenizer(CORPUS, 1200, out)
    assert summary["vocab_size"] == 1200 and summary["num_ranks"] == 992
    return out


def test_scratch_vocabulary_works_and_splits_digits(scratch: Path) -> None:
    tok = load_tokenizer(scratch)
    assert tok.vocab_size == 1200 and tok.padded_vocab_size == 1280
    assert tok.special_ids["<|endoftext|>"] == 992 and tok.im_end_id == 994
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
    digits = [tok.token_bytes(i) for i in tok.encode("x = 1234567")]
    assert digits[-7:] == [b"1", b"2", b"3", b"4", b"5", b"6", b"7"]
    assert max(len(tok.token_bytes(i)) for i in tok.encode(SAMPLES[0])) > 3, "merges were learned"
    assert tok.encode(SAMPLES[0]) != list(SAMPLES[0].encode()), "not just bytes"


def test_scratch_ranks_reproduce_the_hf_trainer(scratch: Path) -> None:
    """Our tiktoken ranks give the same ids as the HF tokenizer that learned them."""
    from qwen_cli.tokenizer.bpe import train_from_scratch

    tok = load_tokenizer(scratch)
    ranks = train_from_scratch(_texts(), 992)
    assert ranks == tok.ranks, "training is deterministic"


def test_hf_files_of_trained_tokenizer_give_identical_ids(scratch: Path) -> None:
    from transformers import AutoTokenizer

    tok = load_tokenizer(scratch)
    hf = AutoTokenizer.from_pretrained(scratch)
    for text in [*SAMPLES, *_texts()]:
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)


def test_extending_cl100k_keeps_ids_and_adds_used_tokens(tmp_path: Path) -> None:
    cl100k = load_tokenizer("cl100k")
    texts = _texts()
    summary = train_tokenizer(CORPUS, cl100k.num_ranks + 300 + 208, tmp_path / "ext", base="cl100k")
    tok = load_tokenizer(tmp_path / "ext")
    assert summary["new_ranks"] == 300 and tok.num_ranks == cl100k.num_ranks + 300
    assert all(tok.ranks[token] == rank for token, rank in cl100k.ranks.items())
    ids = [i for t in texts for i in tok.encode(t)]
    new_used = {i for i in ids if i >= cl100k.num_ranks}
    assert len(new_used) > 250, "learned tokens are actually produced"
    assert len(ids) < sum(len(cl100k.encode(t)) for t in texts) * 0.97
    for text in [*SAMPLES, *texts]:
        assert tok.decode(tok.encode(text)) == text
    assert [tok.token_bytes(i) for i in tok.encode("7 = 1234")][-4:] == [b"1", b"2", b"3", b"4"]


def test_vocab_size_too_small_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least 465"):
        train_tokenizer(CORPUS, 400, tmp_path / "t")
    with pytest.raises(UserError, match="at least 100465"):
        train_tokenizer(CORPUS, 50_000, tmp_path / "t", base="cl100k")
    assert not (tmp_path / "t").exists()


def test_cli_train_then_encode_with_the_trained_directory(tmp_path: Path, run_qwen) -> None:
    import json

    from qwen_cli.data.encode import read_manifest

    def run(*args: str) -> str:
        code, out, err = run_qwen(*args)
        assert code == 0, err
        return out

    summary = json.loads(run("tokenize", "train", "--corpus", *CORPUS, "--vocab-size", "800",
                             "--out", str(tmp_path / "tok"), "--json"))
    assert summary["vocab_size"] == 800 and summary["documents"] == len(_texts())
    run("tokenize", "encode", "--tokenizer", str(tmp_path / "tok"), "--input", *CORPUS[:2],
        "--out", str(tmp_path / "shards"), "--workers", "1")
    manifest = read_manifest(tmp_path / "shards")
    assert manifest["tokenizer"]["hash"] == summary["hash"] and manifest["tokenizer"]["vocab_size"] == 800


def test_long_pretokens_are_cut_before_counting() -> None:
    from collections import Counter

    from qwen_cli.tokenizer.bpe import MAX_PRETOKEN_CHARS, _hf_trainer_tokenizer, count_pretokens

    text = "x" * (2 * MAX_PRETOKEN_CHARS + 5) + " ok"
    assert count_pretokens([text]) == Counter({"x" * MAX_PRETOKEN_CHARS: 2, "xxxxx": 1, " ok": 1})
    hf_pieces = [piece for piece, _ in _hf_trainer_tokenizer().pre_tokenizer.pre_tokenize_str(text)]
    assert hf_pieces == ["x" * MAX_PRETOKEN_CHARS] * 2 + ["xxxxx", "Ġok"]


def test_a_200kb_line_without_spaces_trains_and_encodes_in_seconds(tmp_path: Path, run_qwen) -> None:
    """One 200 KB pre-token: training was quadratic in its length (30 KB of one letter took 39 s)."""
    import random
    import string
    import time

    corpus = tmp_path / "line.txt"
    letters = random.Random(0).choices(string.ascii_lowercase, k=100_000)
    corpus.write_text("a" * 100_000 + "".join(letters) + "\n")
    start = time.perf_counter()
    code, _, err = run_qwen("tokenize", "train", "--corpus", corpus, "--vocab-size", "1000", "--out", tmp_path / "tok")
    assert code == 0, err
    code, _, err = run_qwen("tokenize", "encode", "--tokenizer", tmp_path / "tok", "--input", corpus,
                            "--out", tmp_path / "shards", "--workers", "1", "--val-fraction", "0")
    assert code == 0, err
    assert time.perf_counter() - start < 20
