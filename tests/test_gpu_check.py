"""``scripts/gpu_check.sh`` without a GPU: its dry run, its refusal, and the report it writes from the
steps' parts (sample JSON as the benches write it), including steps that failed or left nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "bench"))
import gpu_report  # noqa: E402

HEADER = {"gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "triton": "3.6.0", "transformers": "5.17.0"}


def test_dry_run_lists_the_steps_and_only_selects():
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run", "/tmp/unused"], capture_output=True, text=True, check=True).stdout
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["kernels", "loss", "pretrain", "decode", "plan", "train"]
    assert "880s budget" in out
    quick = subprocess.run(["bash", str(SCRIPT), "--quick", "--dry-run", "--only", "decode,train", "x"],
                           capture_output=True, text=True, check=True).stdout
    assert "170s budget" in quick and [line.split()[0] for line in quick.splitlines()[1:]] == ["decode", "train"]
    assert "--gpu --quick" in quick


@pytest.mark.parametrize("args, message", [([], "usage:"), (["--only", "nope", "x"], "unknown step 'nope'"),
                                           (["--fast", "x"], "unknown option --fast")])
def test_bad_usage_exits_2(args, message):
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr


def test_without_cuda_it_exits_2_with_one_line(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    if done.returncode == 0:
        pytest.skip("this machine has a CUDA GPU")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no CUDA GPU here" in done.stderr
    assert not (tmp_path / "out").exists()


def _parts(tmp_path: Path) -> Path:
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "steps.tsv").write_text("kernels\tok\t40\t0\nloss\tok\t20\t0\ndecode\ttimeout\t110\t124\n"
                                     "plan\tok\t30\t0\npretrain\tok\t90\t0\ntrain\tfailed\t5\t1\n")
    (parts / "kernels.xml").write_text('<testsuites><testsuite tests="16" failures="1" errors="0" skipped="0">'
                                       '<testcase name="a"/><testcase name="test_swiglu"><failure/></testcase>'
                                       "</testsuite></testsuites>")
    loss = {"tokens": 16384, "tuned_chunk": [4096], "rows": [
        {"run": "naive", "ms": 72.0, "vs_naive": 1.0, "vs_naive_min": 1.0, "vs_naive_max": 1.0, "peak_gib": 19.0},
        {"run": "fused triton", "ms": 65.0, "vs_naive": 0.9, "vs_naive_min": 0.88, "vs_naive_max": 0.93, "peak_gib": 3.5},
        {"run": "fused triton, chunk 2048", "ms": 80.0, "vs_naive": 1.11, "vs_naive_min": 1.1, "vs_naive_max": 1.2,
         "peak_gib": 2.0}]}
    (parts / "loss.json").write_text(json.dumps(loss))
    decode = {"hbm_bound_tok_s": 1000.0, "rows": [
        {"mode": "compiled", "batch": 1, "tok_s": 700.0, "transformers_tok_s": 290.0, "vs_transformers": 2.41,
         "identical": 1, "ratio_text": "2.41x (2.3-2.5)"},
        {"mode": "compiled", "batch": 8, "tok_s": 2000.0, "transformers_tok_s": 1900.0, "vs_transformers": 1.05,
         "identical": 8, "ratio_text": "1.05x (1.0-1.1)"}],
        "int8_ppl": {"what": "final", "before": 100.0, "after": 101.5}}
    (parts / "decode.json").write_text(json.dumps(decode))
    (parts / "plan.json").write_text(json.dumps({"rows": [
        {"ac": "none", "shape": "24 layers, 8 x 2048", "plan_gib": 60.0, "measured_gib": 58.0},
        {"ac": "full", "shape": "24 layers, 8 x 2048", "plan_gib": 40.0, "measured_gib": 30.0}]}))
    (parts / "pretrain.json").write_text(json.dumps({"tok_per_s": 50000.0, "mfu": 0.52, "stopped_at": 11,
                                                     "first_exit": 143, "resumed_from": 12, "last_step": 20,
                                                     "last_loss": 7.5, "resume_ok": True}))
    (parts / "train.log").write_text("Traceback …\nRuntimeError: CUDA out of memory | whatever\n\n")
    return parts


def test_report_from_sample_parts(tmp_path):
    parts = _parts(tmp_path)
    gpu_report.render(parts, tmp_path, "abc1234", "full", header=HEADER)
    md = (tmp_path / "gpu_check.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert md.startswith("GPU check (full) on **NVIDIA H200**: torch 2.11.0+cu130, triton 3.6.0, transformers 5.17.0, "
                         "commit abc1234; steps: kernels ok (40 s)")
    cells = [[c.strip() for c in line.split(" | ")] for line in table]
    verdicts = {(c[0].lstrip("| "), c[1]): c[-1].rstrip(" |") for c in cells}
    assert verdicts[("kernels", "Triton kernels vs torch references, compiled on CUDA")] == "**FAIL**"
    assert "15/16 passed; failed: test_swiglu" in md
    assert verdicts[("loss", "fused triton vs naive (16384 tokens): time, peak")] == "pass"
    assert "0.90x (0.88-0.93), 3.5 vs 19.0 GiB" in md
    assert verdicts[("loss", "fused triton, chunk 2048 vs naive (16384 tokens): time, peak")] == ""
    assert verdicts[("decode", "ours compiled, batch 1 vs transformers static compiled")] == "pass"  # 70% of bound
    assert "70% of HBM bound" in md
    assert verdicts[("decode", "ours compiled, batch 8 vs transformers static compiled")] == "**FAIL**"  # 1.05x
    assert "100.000 -> 101.500 (+1.50%)" in md
    assert verdicts[("plan", "--plan peak vs max_memory_allocated, AC none (24 layers, 8 x 2048)")] == "pass"
    assert verdicts[("plan", "--plan peak vs max_memory_allocated, AC full (24 layers, 8 x 2048)")] == "**FAIL**"
    assert "50,000 tok/s, MFU 52.0%" in md and "resumed at 12, reached 20" in md
    assert r"none (failed, exit 1: RuntimeError: CUDA out of memory \| whatever)" in md  # no part: the log's last line
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["gpu"] == "NVIDIA H200" and data["commit"] == "abc1234" and len(data["steps"]) == 6
    assert len(data["rows"]) == len(table)


def test_train_rows_and_headline_verdict(tmp_path):
    parts = tmp_path
    (parts / "steps.tsv").write_text("train\tok\t200\t0\n")
    rows = [{"run": "ours auto +compile", "compile": True, "tokens_per_s": 70000.0, "mfu": 0.62, "peak_gib": 30.0},
            {"run": "ours - cross_entropy +compile", "compile": True, "tokens_per_s": 60000.0, "mfu": 0.53, "peak_gib": 40.0},
            {"run": "transformers (sdpa) +compile", "compile": True, "tokens_per_s": 50000.0, "mfu": 0.44, "peak_gib": 50.0},
            {"run": "ours all fused ops", "compile": False, "error": "OutOfMemoryError: x"}]
    (parts / "train.json").write_text(json.dumps({"quick": False, "rows": rows}))
    _, out = gpu_report.collect(parts)
    assert [r["ok"] for r in out] == [True, None, None, False]  # 1.40x and 62% pass; a failed run fails
    assert out[0]["value"].startswith("70,000 tok/s = 1.40x transformers, MFU 62.0%")
    rows[0]["mfu"] = 0.55
    (parts / "train.json").write_text(json.dumps({"quick": False, "rows": rows}))
    assert gpu_report.collect(parts)[1][0]["ok"] is False


def test_pretrain_summary_and_logged_step(tmp_path):
    first, resumed = tmp_path / "first.jsonl", tmp_path / "all.jsonl"
    lines = [{"step": s, "loss": 10.0 - s / 10, "tok_per_s": 1000.0 * s, "mfu": 0.01 * s} for s in range(1, 11)]
    first.write_text("".join(json.dumps(x) + "\n" for x in lines[:5]))
    resumed.write_text("".join(json.dumps(x) + "\n" for x in lines))
    summary = gpu_report.pretrain_summary(first, resumed, 143)
    # timed: steps 2-5 of the first process and 7-10 of the second (each one's first step pays the compile)
    assert summary["tok_per_s"] == 6000.0 and summary["mfu"] == pytest.approx(0.06)
    assert (summary["stopped_at"], summary["resumed_from"], summary["last_step"]) == (5, 6, 10)
    assert summary["resume_ok"] and summary["last_loss"] == 9.0
    resumed.write_text("".join(json.dumps(x) + "\n" for x in lines[:5] + lines[1:]))  # restarted from scratch
    assert not gpu_report.pretrain_summary(first, resumed, 143)["resume_ok"]
    assert gpu_report.main(["logged-step", str(first), "5"]) == 0
    assert gpu_report.main(["logged-step", str(first), "6"]) == 1
    assert gpu_report.main(["logged-step", str(tmp_path / "none.jsonl"), "1"]) == 1


@pytest.mark.slow
def test_decode_bench_gpu_mode_runs_on_a_tiny_cpu_model(tmp_path):
    """``bench_decode.py --gpu``'s engines, interleaving and JSON on a tiny model (CPU: no graphs, same code)."""
    import argparse

    import bench_decode
    import torch

    args = argparse.Namespace(new_tokens=3, quick=True, prompt_len=4, batch=[1, 3], modes=["eager", "compiled", "int8"],
                              json=tmp_path / "decode.json", ppl_checkpoint=None, ppl_tokens=tmp_path / "none",
                              ppl_chars=100)
    shape = dict(hidden_size=64, num_heads=4, num_layers=1, intermediate_size=128, vocab_size=300)
    bench_decode.gpu_main(args, torch.device("cpu"), shape)
    data = json.loads(args.json.read_text())
    assert [(r["mode"], r["batch"]) for r in data["rows"]] == [(m, b) for b in (1, 3) for m in args.modes]
    assert all(r["identical"] == r["batch"] for r in data["rows"] if r["mode"] != "int8")  # same weights, greedy
    assert data["hbm_bound_tok_s"] > 0 and "int8_ppl" not in data
    gpu_report.decode_rows(tmp_path)  # the report reads what the bench wrote
