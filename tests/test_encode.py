"""`qwen tokenize encode`: shards read back equal direct encoding; splits, determinism, bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from qwen_cli.data.encode import encode_corpus, read_manifest
from qwen_cli.tokenizer import load_tokenizer

DOCS = [f"Document {i}: " + "the quick brown fox 狐狸 jumps " * (i % 7 + 1) + f"<|im_start|> {i * 37}" for i in range(60)]


def _jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    return path


def _read_split(root: Path, manifest: dict, split: str) -> list[tuple[int, ...]]:
    docs: list[tuple[int, ...]] = []
    eot = manifest["eot_id"]
    for shard in manifest["splits"][split]["shards"]:
        ids = np.memmap(root / shard["file"], dtype="<u4", mode="r")
        assert ids.size == shard["tokens"] and ids[-1] == eot
        ends = np.flatnonzero(ids == eot)
        starts = np.concatenate([[0], ends[:-1] + 1])
        docs += [tuple(int(x) for x in ids[s:e]) for s, e in zip(starts, ends, strict=True)]
    return docs


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer("qwen")


def test_shards_equal_direct_encoding_and_splits_are_disjoint(tmp_path: Path, qwen) -> None:
    src = _jsonl(tmp_path / "docs.jsonl", DOCS)
    manifest = encode_corpus([str(src)], "qwen", tmp_path / "out", val_fraction=0.1, seed=3, workers=2,
                             shard_tokens=300)
    root = tmp_path / "out"
    assert read_manifest(root) == manifest
    train, val = _read_split(root, manifest, "train"), _read_split(root, manifest, "val")
    direct = Counter(tuple(qwen.encode(d)) for d in DOCS)
    assert Counter(train) + Counter(val) == direct
    assert len(val) == 6 and not set(train) & set(val)
    assert len(manifest["splits"]["train"]["shards"]) > 1
    assert manifest["tokens"] == sum(len(d) + 1 for d in direct.elements())
    assert manifest["tokenizer"]["hash"] == qwen.hash == load_tokenizer(root / "tokenizer").hash
    assert not set().union(*train) & (set(qwen.special_ids.values()) - {qwen.eot_id})
    assert train != sorted(train, key=lambda d: DOCS.index(qwen.decode(d))), "documents are shuffled"


def test_same_seed_same_bytes_and_seed_changes_order(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "docs.jsonl", DOCS)
    shards = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        encode_corpus([str(src)], "qwen", tmp_path / name, seed=seed, workers=1)
        shards.append((tmp_path / name / "train" / "shard_00000.bin").read_bytes())
    assert shards[0] == shards[1] != shards[2]


def test_text_units_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("para one\n\npara two\n\n\npara three\n", encoding="utf-8")
    pq.write_table(pa.table({"body": ["row one", "row two"]}), tmp_path / "b.parquet")
    m = encode_corpus([str(tmp_path / "a.txt")], "qwen", tmp_path / "o1", text_unit="paragraph", workers=1)
    assert m["documents"] == 3
    m = encode_corpus([str(tmp_path / "b.parquet")], "qwen", tmp_path / "o2", text_field="body", workers=1)
    assert m["documents"] == 2 and m["sources"][0]["kind"] == "datasets"


BAD_INPUTS = {
    "invalid_utf8": ("bad.txt", b"fine line\nbad \xff\xfe byte\n", "bad.txt:2: invalid UTF-8"),
    "empty_file": ("empty.txt", b"", "empty.txt: empty file"),
    "malformed_json": ("bad.jsonl", b'{"text": "ok"}\n{"text": nope}\n', "bad.jsonl:2: malformed JSON line"),
    "missing_field": ("bad.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', "bad.jsonl:2: no 'text' field"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_error_or_counted_skip(case: str, tmp_path: Path, run_qwen) -> None:
    name, content, message = BAD_INPUTS[case]
    (tmp_path / name).write_bytes(content)
    good = _jsonl(tmp_path / "good.jsonl", DOCS[:5])
    args = ["tokenize", "encode", "--input", str(good), str(tmp_path / name), "--out", str(tmp_path / "out"),
            "--workers", "1"]
    code, _, err = run_qwen(*args)
    assert code == 2
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1 and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*")), "no half-written output"

    code, out, err = run_qwen(*args, "--on-error", "skip", "--json")
    assert code == 0
    assert json.loads(out)["skipped"] == {case: 1}
    assert read_manifest(tmp_path / "out")["skipped"] == {case: 1}


def test_unwritable_output_is_a_one_line_error(tmp_path: Path, run_qwen) -> None:
    good = _jsonl(tmp_path / "good.jsonl", DOCS[:5])
    (tmp_path / "file").write_text("x")
    code, _, err = run_qwen("tokenize", "encode", "--input", str(good), "--out", str(tmp_path / "file" / "out"))
    assert code == 2 and "error:" in err and "file" in err and len(err.strip().splitlines()) == 1


def test_existing_output_needs_overwrite(tmp_path: Path, run_qwen) -> None:
    good = _jsonl(tmp_path / "good.jsonl", DOCS[:5])
    args = ["tokenize", "encode", "--input", str(good), "--out", str(tmp_path / "out"), "--workers", "1"]
    assert run_qwen(*args)[0] == 0
    code, _, err = run_qwen(*args)
    assert code == 2 and "already exists" in err
    assert run_qwen(*args, "--overwrite")[0] == 0


def test_missing_input_names_the_hub_syntax(tmp_path: Path, run_qwen) -> None:
    code, _, err = run_qwen("tokenize", "encode", "--input", "no_such_corpus", "--out", str(tmp_path / "o"))
    assert code == 2 and "no_such_corpus: no such file or directory" in err and "hf:NAME" in err


def test_damaged_gzip_is_a_one_line_error(tmp_path: Path, run_qwen) -> None:
    import gzip

    data = gzip.compress(b"some text\n" * 1000)
    (tmp_path / "broken.txt.gz").write_bytes(data[: len(data) // 2])
    code, _, err = run_qwen("tokenize", "encode", "--input", str(tmp_path / "broken.txt.gz"),
                            "--out", str(tmp_path / "out"))
    assert code == 2 and "broken.txt.gz: cannot read" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
