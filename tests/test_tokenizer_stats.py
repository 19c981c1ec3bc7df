"""`qwen tokenize stats`: compression table, JSON and PNG through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"


def test_stats_json_and_plot(tmp_path: Path, run_qwen) -> None:
    english, chinese = str(FIXTURES / "hamlet_excerpt.txt"), str(FIXTURES / "lunyu.jsonl")
    png = tmp_path / "fig.png"
    code, out, err = run_qwen("tokenize", "stats", "--tokenizer", "qwen", "cl100k", "--corpus", english, chinese,
                           "--json", "--plot", str(png))
    assert code == 0, err
    result = json.loads(out)
    rows = {(Path(r["corpus"]).name, r["tokenizer"]): r for r in result["rows"]}
    assert len(rows) == 4
    zh_qwen, zh_cl = rows[("lunyu.jsonl", "qwen")], rows[("lunyu.jsonl", "cl100k")]
    assert zh_qwen["tokens"] < 0.8 * zh_cl["tokens"], "Qwen's vocabulary compresses Chinese far better"
    assert zh_qwen["bytes_per_token"] == pytest.approx(zh_qwen["bytes"] / zh_qwen["tokens"], abs=1e-3)
    assert zh_cl["tokens_vs_first"] > 1.2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_stats_table_and_max_bytes(run_qwen) -> None:
    code, out, _ = run_qwen("tokenize", "stats", "--tokenizer", "qwen", "--corpus", str(FIXTURES / "hamlet_excerpt.txt"),
                         "--max-bytes", "1000")
    assert code == 0 and "hamlet_excerpt.txt" in out and "1,000" in out


def test_stats_bad_tokenizer_is_one_line_error(tmp_path: Path, run_qwen) -> None:
    code, _, err = run_qwen("tokenize", "stats", "--tokenizer", str(tmp_path / "nope"), "--corpus",
                         str(FIXTURES / "hamlet_excerpt.txt"))
    assert code == 2 and err.startswith("error:") and "nope" in err


def test_stats_with_a_cut_inside_the_first_character(run_qwen) -> None:
    # 2 bytes cannot hold one Chinese character (3 bytes): nothing to measure, said in one line
    code, _, err = run_qwen("tokenize", "stats", "--tokenizer", "qwen", "--corpus", str(FIXTURES / "lunyu.jsonl"),
                            "--max-bytes", "2")
    assert code == 2 and "no text to measure" in err
