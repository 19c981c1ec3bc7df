"""Reward modelling and DPO: the pairwise loss and end-token pooling by hand, pair batches, a reward model
that learns a separable set and loads in transformers with equal scores, DPO's loss and its effect."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rlhf_fixtures import byte_tokenizer, prompt_file, separable_pairs, tiny_checkpoint, write_toml

from qwen_cli.checkpoint.reward_dir import load_reward_model
from qwen_cli.data.chat_template import ChatTemplate
from qwen_cli.data.preference import EncodedPair, PairStats, encode_pairs, pair_batch
from qwen_cli.evaluation.reward.preference import pair_rewards, pairwise_loss, reply_logprobs
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.heads import ScalarHeadModel
from qwen_cli.stages.dpo import dpo_loss

REWARD_RECIPE = """
[init]
checkpoint = "{base}"
[data]
seq_len = 64
val_fraction = 0.1
test = ["{test}"]
[pmp]
train = [{pmp}]
steps = {pmp_steps}
lr = 3e-3
[rm]
train = ["{train}"]
steps = 30
lr = 3e-3
[schedule]
warmup_steps = 2
decay = "constant"
[train]
batch_tokens = 512
micro_batch_size = 8
dtype = "float32"
device = "cpu"
peak_flops = 1e9
[checkpoint]
every = 10
[logging]
progress = "none"
log_every = 10
"""


def small_head_model() -> ScalarHeadModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=512, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    model = ScalarHeadModel(QwenModel(config), bias=False)
    torch.nn.init.normal_(model.score.weight)
    return model.eval()


def test_pairwise_loss_reads_each_reply_at_its_end_token():
    model = small_head_model()
    pairs = [EncodedPair([1, 2, 3], [4, 5, 9], [6, 9]), EncodedPair([7], [8, 8, 8, 8, 9], [5, 9])]
    batch = pair_batch(pairs, pad_id=0)
    chosen, rejected = pair_rewards(model, batch)
    loss = pairwise_loss(chosen, rejected).sum()

    def by_hand(ids: list[int]) -> float:  # the unpadded sequence alone, read at its last token
        with torch.no_grad():
            hidden = model.backbone.hidden_states(torch.tensor([ids]))
        return float(hidden[0, -1] @ model.score.weight[0].detach())

    expected_c = [by_hand([1, 2, 3, 4, 5, 9]), by_hand([7, 8, 8, 8, 8, 9])]
    expected_r = [by_hand([1, 2, 3, 6, 9]), by_hand([7, 5, 9])]
    assert torch.allclose(chosen, torch.tensor(expected_c), atol=1e-5)
    assert torch.allclose(rejected, torch.tensor(expected_r), atol=1e-5)
    hand_loss = sum(math.log1p(math.exp(-(c - r))) for c, r in zip(expected_c, expected_r, strict=True))
    assert loss.item() == pytest.approx(hand_loss, rel=1e-5)


def test_pair_batch_marks_reply_targets_and_end_positions():
    batch = pair_batch([EncodedPair([1, 2], [3, 9], [4, 4, 9])], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 9, 0], [1, 2, 4, 4, 9]]
    assert batch["end_index"].tolist() == [3, 4]
    assert batch["labels"].tolist() == [[-100, 3, 9, -100, -100], [-100, 4, 4, 9, -100]]


def test_encoding_keeps_the_reply_and_its_end_token_when_cutting():
    tok = byte_tokenizer()
    template = ChatTemplate(tok)
    stats = PairStats()
    long_prompt = [{"role": "user", "content": "x" * 200}]
    (pair,) = encode_pairs(template, [(long_prompt, "good", "bad")], 64, stats)
    assert len(pair.prompt) + len(pair.chosen) <= 64 and stats.truncated == 1
    assert pair.chosen[-1] == tok.im_end_id and tok.decode(pair.chosen[:-1]) == "good"
    assert pair.prompt[-3:] == template.prompt([{"role": "user", "content": "x"}])[-3:]  # ends "assistant\n"


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory):
    from qwen_cli.commands.rlhf import reward

    root = tmp_path_factory.mktemp("reward")
    base = tiny_checkpoint(root / "base")
    train = separable_pairs(root / "train.jsonl", 200, seed=1)
    test = separable_pairs(root / "separable.jsonl", 64, seed=2)
    recipe = write_toml(root / "reward.toml", REWARD_RECIPE.format(base=base, test=test, train=train,
                                                                    pmp=f'"{train}"', pmp_steps=10))
    torch.set_num_threads(1)
    assert reward(recipe, [], root / "run", False, False, False) == 0
    return root


def test_reward_model_learns_a_separable_set_in_both_phases(reward_run):
    scores = json.loads((reward_run / "run" / "scores.json").read_text())
    assert [Path(s["checkpoint"]).parent.name for s in scores] == ["pmp", "rm"]
    rm = scores[1]["sets"]["separable"]
    assert rm["accuracy"] >= 0.95 and rm["margin"] > 0 and rm["pairs"] == 64
    config = json.loads((reward_run / "run" / "rm" / "final" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"] and config["num_labels"] == 1
    rm_recipe = (reward_run / "run" / "rm" / "recipe.toml").read_text()
    assert str(reward_run / "run" / "pmp" / "final") in rm_recipe  # RM fine-tuning starts from PMP


def test_reward_checkpoint_loads_in_transformers_with_equal_scores(reward_run):
    transformers = pytest.importorskip("transformers")
    final = reward_run / "run" / "rm" / "final"
    ours = load_reward_model(final)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(final).eval()
    assert "lm_head.weight" not in {k for k, _ in theirs.named_parameters()}
    pairs = [EncodedPair([10, 11, 12], [13, 14, byte_tokenizer().im_end_id], [15, byte_tokenizer().im_end_id])] * 2
    batch = pair_batch(pairs, pad_id=byte_tokenizer().eot_id)
    chosen, rejected = pair_rewards(ours, batch)
    with torch.no_grad():
        logits = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long()).logits[:, 0]
    assert torch.allclose(torch.cat([chosen, rejected]), logits, atol=1e-4)


def test_reward_resume_of_a_finished_run_changes_nothing(reward_run):
    from qwen_cli.commands.rlhf import reward

    final = reward_run / "run" / "rm" / "final" / "model.safetensors"
    before = final.read_bytes()
    assert reward(reward_run / "reward.toml", [], reward_run / "run", True, False, False) == 0
    assert final.read_bytes() == before


def test_reward_refuses_a_bad_pair_line_naming_it(tmp_path, run_qwen):
    base = tiny_checkpoint(tmp_path / "base")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{"prompt": "hi", "chosen": "a"}\n')
    recipe = write_toml(tmp_path / "r.toml", REWARD_RECIPE.format(base=base, test=bad, train=bad, pmp="",
                                                                  pmp_steps=0))
    code, _, err = run_qwen("rlhf", "reward", recipe, "--out", tmp_path / "run")
    assert code == 2 and f"{bad}:2: missing field 'rejected'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_dpo_loss_matches_the_formula():
    policy = torch.tensor([-1.0, -2.0, -3.0, -1.5])  # chosen rows 0-1, rejected rows 2-3
    reference = torch.tensor([-1.5, -2.0, -2.0, -1.0])
    loss, n, metrics = dpo_loss(policy, reference, beta=0.5)
    logits = [0.5 * ((-1.0 + 1.5) - (-3.0 + 2.0)), 0.5 * ((-2.0 + 2.0) - (-1.5 + 1.0))]
    assert n == 2
    assert loss.item() == pytest.approx(sum(math.log1p(math.exp(-x)) for x in logits), rel=1e-6)
    assert float(metrics["reward_accuracy"]) == 1.0


def test_dpo_positive_charges_only_a_chosen_reply_that_lost_likelihood():
    policy = torch.tensor([-1.0, -2.5, -3.0, -1.5])  # chosen row 0 gained 0.5 nats, row 1 lost 0.5
    reference = torch.tensor([-1.5, -2.0, -2.0, -1.0])
    loss, _, _ = dpo_loss(policy, reference, beta=0.5, positive=10.0)
    logits = [0.5 * ((-1.0 + 1.5) - (-3.0 + 2.0)), 0.5 * ((-2.5 + 2.0) - (-1.5 + 1.0) - 10.0 * 0.5)]
    assert loss.item() == pytest.approx(sum(math.log1p(math.exp(-x)) for x in logits), rel=1e-6)
    assert dpo_loss(policy, reference, beta=0.5)[0].item() < loss.item()


def test_reply_logprobs_sum_the_reply_tokens_only():
    torch.manual_seed(0)
    model = QwenModel(ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))
    batch = pair_batch([EncodedPair([1, 2, 3], [4, 5], [6])], pad_id=0)
    logprobs = reply_logprobs(model.eval(), batch)
    full = torch.log_softmax(model(torch.tensor([[1, 2, 3, 4, 5]])), dim=-1)[0]
    assert logprobs[0].item() == pytest.approx((full[2, 4] + full[3, 5]).item(), abs=1e-5)


def test_dpo_makes_the_model_prefer_the_chosen_replies(tmp_path):
    from qwen_cli.commands.rlhf import dpo

    base = tiny_checkpoint(tmp_path / "base")
    train = separable_pairs(tmp_path / "train.jsonl", 120, seed=3)
    test = separable_pairs(tmp_path / "separable.jsonl", 40, seed=4)
    prompts = prompt_file(tmp_path / "prompts.jsonl", 9, seed=5)
    recipe = write_toml(tmp_path / "dpo.toml", f"""
[init]
checkpoint = "{base}"
[data]
train = ["{train}"]
test = ["{test}"]
eval_prompts = "{prompts}"
eval_limit = 6
eval_max_new_tokens = 4
seq_len = 64
[dpo]
beta = 0.5
[optim]
lr = 3e-3
[schedule]
warmup_steps = 2
decay = "constant"
[train]
batch_tokens = 512
micro_batch_size = 8
steps = 12
dtype = "float32"
device = "cpu"
peak_flops = 1e9
[logging]
progress = "none"
""")
    torch.set_num_threads(1)
    assert dpo(recipe, [], tmp_path / "run", False, False, False) == 0
    before, after = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert after["sets"]["separable"]["accuracy"] >= 0.95 > before["sets"]["separable"]["accuracy"]
    assert before["gold"]["prompts"] == after["gold"]["prompts"] == 6  # greedy gold exact match, both models
    assert (tmp_path / "run" / "final" / "generation_config.json").is_file()
