"""Hugging Face files written by ``Tokenizer.save`` load offline and give our ids exactly."""

from __future__ import annotations

import json
import sysconfig
import unicodedata
from pathlib import Path

import pytest

from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.tokenizer.hf_files import bytes_to_unicode, derive_merges

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SAMPLES = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "通义千问是阿里云研发的大语言模型，支持中文和英文。",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\n",
    "1234567890 3.14159 2024-01-01 0x1F",
    "emoji 😀🎉👩‍👩‍👧 and Ünïcödé e\u0301 ﬁ 𠀀 龘",
    "  leading spaces\t\ttabs\r\nwindows lines   \n\n\n   trailing   ",
    "it's we'll they'RE I'm DON'T",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "qwen"
    load_tokenizer("qwen").save(out)
    return out


def _sample_texts() -> list[str]:
    texts = list(SAMPLES)
    texts.append((FIXTURES / "hamlet_excerpt.txt").read_text(encoding="utf-8"))
    texts += [json.loads(line)["text"] for line in (FIXTURES / "lunyu.jsonl").read_text(encoding="utf-8").splitlines()]
    texts += [(STDLIB / name).read_text(encoding="utf-8") for name in ("textwrap.py", "difflib.py", "argparse.py")]
    return texts


def test_every_qwen_token_has_a_merge() -> None:
    tok = load_tokenizer("qwen")
    merges = derive_merges(tok.ranks)
    assert len(merges) == tok.num_ranks - 256
    assert all(tok.ranks[a + b] > max(tok.ranks[a], tok.ranks[b]) for a, b in merges[:5000])


def test_vocab_json_matches_qwen_ranks_through_byte_map(exported: Path) -> None:
    vocab = json.loads((exported / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 151643
    table = bytes_to_unicode()
    assert vocab["".join(table[b] for b in b" world")] == 1879
    config = json.loads((exported / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "Qwen2Tokenizer" and config["eos_token"] == "<|endoftext|>"
    assert "<|im_start|>" in config["chat_template"]


def test_auto_tokenizer_gives_identical_ids(exported: Path) -> None:
    from transformers import AutoTokenizer

    tok = load_tokenizer(exported)
    hf = AutoTokenizer.from_pretrained(exported)
    assert hf.convert_tokens_to_ids("<|im_end|>") == tok.im_end_id == 151645
    for text in _sample_texts():
        ids = tok.encode(text)
        assert hf(text, add_special_tokens=False)["input_ids"] == ids
        assert hf.decode(ids) == unicodedata.normalize("NFC", text)


def test_fast_tokenizer_json_gives_identical_ids(exported: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer

    tok = load_tokenizer(exported)
    hf = HFTokenizer.from_file(str(exported / "tokenizer.json"))
    encodings = hf.encode_batch(_sample_texts(), add_special_tokens=False)
    assert [e.ids for e in encodings] == tok.encode_batch(_sample_texts())


def test_chat_template_renders_chatml(exported: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(exported)
    text = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_vocab_json_alone_loads_as_the_same_tokenizer(exported: Path, tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_bytes((exported / "vocab.json").read_bytes())
    assert load_tokenizer(tmp_path).hash == load_tokenizer("qwen").hash


@pytest.mark.slow
def test_fast_tokenizer_matches_on_megabytes_of_code(exported: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer

    texts, size = [], 0
    for path in sorted(STDLIB.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
        size += len(texts[-1])
        if size > 5_000_000:
            break
    tok = load_tokenizer(exported)
    hf = HFTokenizer.from_file(str(exported / "tokenizer.json"))
    assert [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)] == tok.encode_batch(texts)
