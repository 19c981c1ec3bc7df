"""The report of ``scripts/gpu_check.sh``: one markdown table and one JSON file from the steps' parts.

Each step of the script leaves its results in a parts folder: ``steps.tsv`` (name, status, seconds,
exit code, one line per step run so far), and per step what its bench wrote (``kernels.xml``: pytest's
JUnit XML; ``loss.json``, ``decode.json``, ``plan.json``, ``train.json``: the benches' ``--json``;
``pretrain.json``: :func:`pretrain_summary`). ``render`` turns whatever is there into
``gpu_check.md`` and ``gpu_check.json`` (a missing or broken part becomes a row saying so), so the
script can call it after every step and a later failure never loses an earlier result.

    python bench/gpu_report.py render PARTS OUTDIR [--commit C] [--mode full|quick]
    python bench/gpu_report.py logged-step METRICS.jsonl STEP     # exit 0 once STEP is logged
    python bench/gpu_report.py pretrain FIRST.jsonl RESUMED.jsonl FIRST_EXIT   # JSON summary on stdout
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

Row = dict  # {"step", "measure", "value", "target", "ok" (True/False/None)}

TARGETS = {  # the bars
    "decode_hbm_fraction": 0.60,
    "decode_vs_transformers": 1.3,
    "loss_vs_naive": 1.0,
    "train_vs_transformers": 1.3,
    "train_mfu": 0.60,
    "plan_error": 0.10,
}


def _row(step: str, measure: str, value: str, target: str = "", ok: bool | None = None) -> Row:
    return {"step": step, "measure": measure, "value": value, "target": target, "ok": ok}


def kernels_rows(parts: Path) -> list[Row]:
    root = ET.parse(parts / "kernels.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    names = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
    value = f"{total - failed - skipped}/{total} passed" + (f"; failed: {', '.join(names)}" if names else "")
    return [_row("kernels", "Triton kernels vs torch references, compiled on CUDA", value, "all pass", failed == 0)]


def loss_rows(parts: Path) -> list[Row]:
    data = json.loads((parts / "loss.json").read_text())
    rows = {r["run"]: r for r in data["rows"]}
    naive, out = rows["naive"], []
    for name, r in rows.items():
        if name == "naive":
            continue
        tuned = name in ("fused triton", "fused torch")
        out.append(_row("loss", f"{name} vs naive ({data['tokens']} tokens): time, peak",
                        f"{r['vs_naive']:.2f}x ({r['vs_naive_min']:.2f}-{r['vs_naive_max']:.2f}), "
                        f"{r['peak_gib']:.1f} vs {naive['peak_gib']:.1f} GiB",
                        "<= 1.00x, less memory" if tuned else "",
                        (r["vs_naive"] <= TARGETS["loss_vs_naive"] and r["peak_gib"] < naive["peak_gib"])
                        if name == "fused triton" else None))
    return out


def decode_rows(parts: Path) -> list[Row]:
    data = json.loads((parts / "decode.json").read_text())
    out = []
    for r in data["rows"]:
        is_graph = r["mode"] == "compiled"
        ok = None
        if is_graph:
            ok = r["vs_transformers"] >= TARGETS["decode_vs_transformers"] and r["identical"] == r["batch"]
            if r["batch"] == 1 and data.get("hbm_bound_tok_s"):
                ok = ok and r["tok_s"] >= TARGETS["decode_hbm_fraction"] * data["hbm_bound_tok_s"]
        bound = f", {100 * r['tok_s'] / data['hbm_bound_tok_s']:.0f}% of HBM bound" \
            if r["batch"] == 1 and data.get("hbm_bound_tok_s") else ""
        out.append(_row("decode", f"ours {r['mode']}, batch {r['batch']} vs transformers static compiled",
                        f"{r['tok_s']:,.0f} vs {r['transformers_tok_s']:,.0f} tok/s = {r['ratio_text']}{bound}; "
                        f"identical rows {r['identical']}/{r['batch']}",
                        ">= 1.3x, rows identical" + (", >= 60% HBM" if r["batch"] == 1 else "") if is_graph else "",
                        ok))
    if "int8_ppl" in data:
        p = data["int8_ppl"]
        out.append(_row("decode", f"int8 weight-only perplexity ({p['what']})",
                        f"{p['before']:.3f} -> {p['after']:.3f} ({100 * (p['after'] / p['before'] - 1):+.2f}%)"))
    return out


def plan_rows(parts: Path) -> list[Row]:
    data = json.loads((parts / "plan.json").read_text())
    out = []
    for r in data["rows"]:
        error = r["plan_gib"] / r["measured_gib"] - 1
        out.append(_row("plan", f"--plan peak vs max_memory_allocated, AC {r['ac']} ({r['shape']})",
                        f"{r['plan_gib']:.1f} vs {r['measured_gib']:.1f} GiB ({100 * error:+.1f}%)",
                        "within 10%", abs(error) <= TARGETS["plan_error"]))
    return out


def train_rows(parts: Path) -> list[Row]:
    data = json.loads((parts / "train.json").read_text())
    rows = data["rows"]
    base = {r["compile"]: r["tokens_per_s"] for r in rows if r["run"].startswith("transformers") and "error" not in r}
    out = []
    for r in rows:
        if "error" in r:
            out.append(_row("train", r["run"], f"failed: {r['error']}", "", False))
            continue
        ratio = r["tokens_per_s"] / base[r["compile"]] if base.get(r["compile"]) else float("nan")
        headline = r["run"] == "ours auto +compile" and not data.get("quick")  # what a recipe runs
        mfu = f", MFU {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
        out.append(_row("train", r["run"], f"{r['tokens_per_s']:,.0f} tok/s = {ratio:.2f}x transformers{mfu}, "
                        f"step peak {r['peak_gib']:.1f} GiB",
                        ">= 1.3x, >= 60% MFU" if headline else "",
                        (ratio >= TARGETS["train_vs_transformers"] and (r.get("mfu") or 0) >= TARGETS["train_mfu"])
                        if headline else None))
    return out


def pretrain_rows(parts: Path) -> list[Row]:
    d = json.loads((parts / "pretrain.json").read_text())
    return [
        _row("pretrain", "qwen pretrain qwen-1.8b: tok/s, MFU (median of logged steps, after the first)",
             f"{d['tok_per_s']:,.0f} tok/s, MFU {100 * d['mfu']:.1f}%" if d.get("mfu") is not None
             else f"{d['tok_per_s']:,.0f} tok/s"),
        _row("pretrain", "SIGTERM then --resume", f"stopped at step {d['stopped_at']} (exit {d['first_exit']}), "
             f"resumed at {d['resumed_from']}, reached {d['last_step']}, last loss {d['last_loss']:.3f}",
             "continues from the checkpoint", d["resume_ok"]),
    ]


SUMMARIES: dict[str, Callable[[Path], list[Row]]] = {
    "kernels": kernels_rows, "loss": loss_rows, "decode": decode_rows, "plan": plan_rows,
    "pretrain": pretrain_rows, "train": train_rows,
}


def read_steps(parts: Path) -> list[dict]:
    path = parts / "steps.tsv"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        name, status, seconds, code = line.split("\t")
        steps.append({"step": name, "status": status, "seconds": int(seconds), "exit": code})
    return steps


def collect(parts: Path) -> tuple[list[dict], list[Row]]:
    """(the steps run, every table row); a step's part that is missing or unreadable becomes one row."""
    steps, rows = read_steps(parts), []
    for step in steps:
        try:
            rows += SUMMARIES[step["step"]](parts)
        except FileNotFoundError as exc:
            rows.append(_row(step["step"], "results", f"none ({step['status']}, exit {step['exit']}: "
                             f"{last_line(parts / (step['step'] + '.log')) or Path(exc.filename).name + ' missing'})",
                             "", False))
        except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
            rows.append(_row(step["step"], "results", f"unreadable ({step['status']}, exit {step['exit']}; {reason})",
                             "", False))
    return steps, rows


def last_line(log: Path) -> str:
    """The last non-empty line of a step's log (its error, usually), cut to 160 characters, '|' escaped."""
    if not log.is_file():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:160].replace("|", "\\|") if lines else ""


def markdown(header: dict, steps: list[dict], rows: list[Row]) -> str:
    verdict = {True: "pass", False: "**FAIL**", None: ""}
    lines = [f"GPU check ({header['mode']}) on **{header['gpu']}**: torch {header['torch']}, triton {header['triton']}, "
             f"transformers {header['transformers']}, commit {header['commit']}; steps: "
             + ", ".join(f"{s['step']} {s['status']} ({s['seconds']} s)" for s in steps), "",
             "| step | measure | result | target | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['measure']} | {r['value']} | {r['target']} | {verdict[r['ok']]} |" for r in rows]
    return "\n".join(lines) + "\n"


def versions() -> dict:
    """GPU name and library versions of this machine (``unknown`` where one is missing)."""
    out = {"gpu": "unknown", "torch": "unknown", "triton": "unknown", "transformers": "unknown"}
    import importlib.metadata as md

    for name in ("torch", "triton", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return out


def render(parts: Path, out: Path, commit: str, mode: str, header: dict | None = None) -> None:
    steps, rows = collect(parts)
    header = {**(header or versions()), "commit": commit, "mode": mode}
    (out / "gpu_check.md").write_text(markdown(header, steps, rows))
    (out / "gpu_check.json").write_text(json.dumps({**header, "steps": steps, "rows": rows}, indent=1))


def _metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pretrain_summary(first: Path, resumed: Path, first_exit: int) -> dict:
    """Throughput and the resume check of the two pretrain runs (the second one's metrics.jsonl holds both)."""
    before = [r for r in _metrics(first) if "tok_per_s" in r]
    after = [r for r in _metrics(resumed) if "tok_per_s" in r][len(before):]
    timed = (before[1:] + after[1:]) or before + after  # the first step of each process pays the compile
    stopped = before[-1]["step"] if before else 0
    resumed_from = after[0]["step"] if after else 0
    last = after[-1] if after else {"step": 0, "loss": float("nan")}
    return {"tok_per_s": statistics.median(r["tok_per_s"] for r in timed) if timed else 0.0,
            "mfu": statistics.median(r["mfu"] for r in timed) if timed and "mfu" in timed[0] else None,
            "stopped_at": stopped, "first_exit": first_exit, "resumed_from": resumed_from,
            "last_step": last["step"], "last_loss": last["loss"],
            "resume_ok": bool(before and after) and resumed_from == stopped + 1 and last["loss"] == last["loss"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("parts", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--commit", default="unknown")
    r.add_argument("--mode", default="full")
    s = sub.add_parser("logged-step")
    s.add_argument("metrics", type=Path)
    s.add_argument("step", type=int)
    p = sub.add_parser("pretrain")
    p.add_argument("first", type=Path)
    p.add_argument("resumed", type=Path)
    p.add_argument("first_exit", type=int)
    args = parser.parse_args(argv)
    if args.cmd == "render":
        render(args.parts, args.out, args.commit, args.mode)
    elif args.cmd == "logged-step":
        return 0 if any(r.get("step", 0) >= args.step for r in _metrics(args.metrics)) else 1
    else:
        print(json.dumps(pretrain_summary(args.first, args.resumed, args.first_exit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
