"""The perplexity filter (a checkpoint in our format) and instruction-data decontamination, end to end."""

from __future__ import annotations

import json
import math

import torch
from prepare_fixtures import output_docs, planted_corpus, recipe
from rlhf_fixtures import tiny_checkpoint

from qwen_cli.prepare.config import load
from qwen_cli.prepare.run import prepare


def test_keep_fraction_keeps_the_lowest_perplexity_documents(tmp_path):
    """Oracle: perplexities recomputed here with the model, outside the pipeline."""
    from qwen_cli.checkpoint import load as load_checkpoint
    from qwen_cli.prepare.perplexity import document_perplexity

    planted_corpus(tmp_path)
    model_dir = tiny_checkpoint(tmp_path / "ref", seed=3)
    path = recipe(tmp_path / "r.toml", tmp_path,
                  perplexity=f'enabled = true\nmodel = "{model_dir}"\nkeep_fraction = 0.5\nmax_tokens = 64',
                  minhash="enabled = false", exact_dedup="enabled = false")
    manifest = prepare(load(path, ["input.sources=[{name='web', paths=['" + str(tmp_path / "web") + "']}]"]),
                       tmp_path / "out")
    model, tokenizer = load_checkpoint(model_dir)
    kept = output_docs(tmp_path / "out")
    rule = next(r for r in manifest["rules"] if r["rule"] == "perplexity")
    scored = [d["metadata"]["perplexity"] for d in kept]
    removed = [json.loads(line)["metadata"]["perplexity"] for f in (tmp_path / "out" / "removed" / "perplexity").glob("*")
               for line in f.open()]
    assert rule["docs_in"] == len(kept) + len(removed) and len(kept) == math.ceil(rule["docs_in"] / 2)
    assert max(scored) < min(removed)
    for doc in kept[:3]:
        with torch.no_grad():
            assert math.isclose(document_perplexity(model, tokenizer, doc["text"], 64), doc["metadata"]["perplexity"],
                                rel_tol=1e-5)


def test_instruction_data_is_mixed_in_minus_benchmark_overlaps(tmp_path):
    planted_corpus(tmp_path)
    bench = tmp_path / "bench" / "gsm8k"
    bench.mkdir(parents=True)
    question = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                "in May. How many clips did Natalia sell altogether in April and May?")
    (bench / "test.jsonl").write_text(json.dumps({"question": question, "answer": "72 #### 72"}) + "\n")
    chat = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": "Solve: " + question}, {"role": "assistant", "content": "72"}]},
            {"messages": [{"role": "user", "content": "Name a colour of the sky."},
                          {"role": "assistant", "content": "Blue, on a clear day."}]},
            {"text": "A plain instruction document about rivers and stones."}]
    chat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = recipe(tmp_path / "r.toml", tmp_path, instruct=f'enabled = true\npaths = ["{chat}"]\n'
                  f'benchmarks = ["gsm8k"]\ndata_dir = "{tmp_path / "bench"}"')
    manifest = prepare(load(path), tmp_path / "out")
    mixed = [json.loads(line)["text"] for f in (tmp_path / "out" / "data" / "instruct").glob("*.jsonl")
             for line in f.open()]
    assert mixed == ["user: Name a colour of the sky.\nassistant: Blue, on a clear day.",
                     "A plain instruction document about rivers and stones."]
    rule = next(r for r in manifest["rules"] if r["rule"] == "decontamination")
    assert list(rule["removed"]) == ["overlap_gsm8k"] and rule["removed"]["overlap_gsm8k"]["docs"] == 1
    assert manifest["decontamination"]["test_items"] == {"gsm8k": 1}
