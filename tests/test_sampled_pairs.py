"""`qwen rlhf sample-pairs`: comparison pairs from a model's own samples, judged by each prompt's known answer."""

from __future__ import annotations

import json

from rlhf_fixtures import tiny_checkpoint

from qwen_cli.rl.pairs.sampled import SampleStats, judged_pairs


def test_each_distinct_wrong_reply_is_paired_with_a_right_one_the_model_wrote():
    stats = SampleStats()
    rows = judged_pairs("What is 30 + 67?", "79", ["79", "69", "The answer is 79", "69", "701", ""], stats)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("79", "69"), ("The answer is 79", "701"), ("79", "")]
    assert all(r["prompt"] == "What is 30 + 67?" and r["source"] == "samples" for r in rows)
    assert (stats.prompts, stats.samples, stats.right, stats.pairs) == (1, 6, 2, 3)


def test_without_a_right_reply_the_known_answer_is_chosen_and_all_right_gives_no_pair():
    stats = SampleStats()
    rows = judged_pairs([{"role": "user", "content": "What is 9 + 9?"}], "81", ["71", "91"], stats)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("81", "71"), ("81", "91")]
    assert rows[0]["prompt"] == [{"role": "user", "content": "What is 9 + 9?"}]
    assert judged_pairs("What is 1 + 1?", "2", ["2", "2"], stats) == []
    assert (stats.prompts, stats.samples, stats.right, stats.pairs) == (2, 4, 2, 2)


def prompts_file(path, n: int):
    path.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(n)))
    return path


def test_the_command_samples_each_prompt_and_writes_only_wrong_replies_as_rejected(tmp_path, run_qwen):
    model = tiny_checkpoint(tmp_path / "model")
    prompts = prompts_file(tmp_path / "prompts.jsonl", 5)
    args = ["rlhf", "sample-pairs", str(model), "--prompts", str(prompts), "--samples", "3", "--max-new-tokens", "6",
            "--system", ""]
    code, out, _ = run_qwen(*args, "--out", str(tmp_path / "a.jsonl"))
    assert code == 0 and "5 prompts x 3 samples" in out
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert rows and all(row["chosen"] == str(2 * int(row["prompt"].split()[2])) for row in rows)  # random model: no right reply
    assert all(row["rejected"] != row["chosen"] for row in rows)
    assert {row["prompt"] for row in rows} <= {f"What is {i} + {i}?" for i in range(5)}
    assert len(rows) <= 15
    run_qwen(*args, "--out", str(tmp_path / "b.jsonl"))
    run_qwen(*args, "--out", str(tmp_path / "c.jsonl"), "--seed", "1")
    assert (tmp_path / "b.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()  # seeded
    assert (tmp_path / "c.jsonl").read_text() != (tmp_path / "a.jsonl").read_text()


def test_bad_input_stops_before_any_sampling_and_leaves_the_output_alone(tmp_path, run_qwen):
    model = tiny_checkpoint(tmp_path / "model")
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"prompt": "What is 1 + 1?", "answer": "2"}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    code, _, err = run_qwen("rlhf", "sample-pairs", str(model), "--prompts", str(bad), "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and f"{bad}:2" in err and "answer" in err
    assert not (tmp_path / "o.jsonl").exists()
    existing = tmp_path / "kept.jsonl"
    existing.write_text("keep me\n")
    good = prompts_file(tmp_path / "good.jsonl", 2)
    code, _, err = run_qwen("rlhf", "sample-pairs", str(model), "--prompts", str(good), "--out", str(existing))
    assert code == 2 and "--overwrite" in err and existing.read_text() == "keep me\n"
    code, _, err = run_qwen("rlhf", "sample-pairs", str(model), "--prompts", str(good), "--out", str(tmp_path / "x.jsonl"),
                            "--max-new-tokens", "128")
    assert code == 2 and "window" in err
