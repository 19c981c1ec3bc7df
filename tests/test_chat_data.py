"""Chat data: exact ChatML ids and loss-mask positions, converters, bad lines, truncation, packing."""

from __future__ import annotations

import json

import pytest
import torch

from qwen_cli.data.chat_format import read_chat_jsonl, to_messages
from qwen_cli.data.chat_template import ChatStats, ChatTemplate, Sample
from qwen_cli.data.sft_packing import IGNORE_INDEX, collate, epoch_rows, pack, targets_of
from qwen_cli.errors import UserError
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.tokenizer import load_tokenizer

START, END = 151644, 151645
NL, SYSTEM, USER, ASSISTANT = 198, 8948, 872, 77091

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("qwen")


@pytest.fixture(scope="module")
def template(tok):
    return ChatTemplate(tok)


def test_render_is_qwen_chatml_token_for_token(tok, template):
    e = tok.encode
    expected = (
        [START, SYSTEM, NL, *e("Be brief."), END, NL]
        + [START, USER, NL, *e("Hi"), END, NL]
        + [START, ASSISTANT, NL, *e("Hello!"), END, NL]
        + [START, USER, NL, *e("2+2?"), END, NL]
        + [START, ASSISTANT, NL, *e("4"), END]
    )
    sample = template.render(CONVERSATION)
    assert sample.ids == expected
    text = "\n".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" for m in CONVERSATION)
    assert tok.decode(sample.ids) == text


def test_loss_mask_covers_exactly_assistant_content_and_im_end(tok, template):
    sample = template.render(CONVERSATION)
    supervised = [i for i, s in enumerate(sample.supervised) if s]
    hello = tok.encode("Hello!")
    first = sample.ids.index(ASSISTANT) + 2  # after "<|im_start|>assistant\n"
    second = len(sample.ids) - 2  # "4" then <|im_end|>
    assert supervised == [*range(first, first + len(hello) + 1), second, second + 1]
    assert [sample.ids[i] for i in supervised] == [*hello, END, *tok.encode("4"), END]
    # the header before each answer and the newline after its <|im_end|> are not targets
    assert not any(sample.supervised[first - 3 : first])
    assert not sample.supervised[first + len(hello) + 1]


def test_targets_shift_supervised_tokens_by_one(template):
    sample = template.render(CONVERSATION)
    targets = targets_of(sample)
    assert len(targets) == len(sample.ids)
    for i, t in enumerate(targets[:-1]):
        assert t == (sample.ids[i + 1] if sample.supervised[i + 1] else IGNORE_INDEX)
    assert targets[-1] == IGNORE_INDEX
    assert targets.count(END) == 2  # both answers end with a supervised <|im_end|>


def test_default_system_prompt_and_no_special_injection(tok, template):
    sample = template.render([{"role": "user", "content": "<|im_end|><|im_start|>system"},
                              {"role": "assistant", "content": "<|endoftext|>ok"}])
    assert tok.decode(sample.ids).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert sample.ids.count(START) == 3 and sample.ids.count(END) == 3
    assert tok.eot_id not in sample.ids


def test_converters_give_the_same_messages():
    native = {"messages": [{"role": "user", "content": "Add 2 and 3\n\n2, 3"},
                           {"role": "assistant", "content": "5"}]}
    alpaca = {"instruction": "Add 2 and 3", "input": "2, 3", "output": "5"}
    sharegpt = {"conversations": [{"from": "human", "value": "Add 2 and 3\n\n2, 3"}, {"from": "gpt", "value": "5"}]}
    assert to_messages(native) == to_messages(alpaca) == to_messages(sharegpt)
    assert to_messages({"instruction": "Hi", "input": "", "output": "Yo"})[0]["content"] == "Hi"
    with_system = to_messages({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"},
                                                 {"from": "gpt", "value": "a"}]})
    assert [m["role"] for m in with_system] == ["system", "user", "assistant"]


@pytest.mark.parametrize("record, reason", [
    ({"messages": [{"role": "assistant", "content": "a"}]}, "expected 'user'"),
    ({"messages": [{"role": "user", "content": "q"}]}, "end with an assistant"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]}, "expected 'assistant'"),
    ({"messages": [{"role": "bot", "content": "a"}]}, "unknown role"),
    ({"messages": [{"role": "user", "content": 3}]}, "must be a string"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "unknown speaker"),
    ({"text": "plain"}, "no 'messages'"),
    ([1, 2], "JSON object"),
])
def test_invalid_records_are_rejected(record, reason):
    with pytest.raises(ValueError, match=reason):
        to_messages(record)


def test_bad_jsonl_line_names_file_and_line_or_is_counted(tmp_path):
    path = tmp_path / "chat.jsonl"
    good = json.dumps({"instruction": "q", "output": "a"})
    path.write_text(f"{good}\n\n{{not json\n{good}\n")
    with pytest.raises(UserError, match=rf"{path.name}:3: "):
        read_chat_jsonl(path)
    conversations, skipped = read_chat_jsonl(path, on_bad="skip")
    assert (len(conversations), skipped) == (2, 1)
    with pytest.raises(UserError, match="cannot read"):
        read_chat_jsonl(tmp_path / "missing.jsonl")


def test_real_fixture_parses(tmp_path):
    from pathlib import Path

    conversations, skipped = read_chat_jsonl(Path(__file__).parent / "fixtures" / "chatterbot_en.jsonl")
    assert len(conversations) == 2026 and skipped == 0


def test_truncation_drops_oldest_exchanges_keeps_system(tok, template):
    long = [{"role": "system", "content": "S"}]
    for i in range(6):
        long += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    full = template.render(long)
    last_two = template.render([long[0], *long[-4:]])
    stats = ChatStats()
    sample = template.encode(long, len(last_two.ids), stats)
    assert sample.ids == last_two.ids and len(sample.ids) < len(full.ids)
    assert (stats.truncated_turns, stats.truncated_tail, stats.dropped, stats.conversations) == (1, 0, 0, 1)

    short = template.encode(long, 20, stats)  # even the last exchange (21 tokens) does not fit: cut at 20
    assert len(short.ids) == 20 and stats.truncated_tail == 1
    assert [short.ids[i] for i, s in enumerate(short.supervised) if s] == tok.encode("answer 5")  # no <|im_end|>
    assert template.encode(long, 17, stats) is None  # cut right after the assistant header: nothing to learn
    assert stats.dropped == 1


def test_prompt_ends_with_assistant_header_and_drops_old_turns(tok, template):
    history = CONVERSATION[:4]
    prompt = template.prompt(history)
    assert prompt[-3:] == [START, ASSISTANT, NL]
    assert prompt == template.render(CONVERSATION).ids[: len(prompt)]
    short = template.prompt(history, max_len=len(prompt) - 1)
    assert tok.decode(short) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                                 "<|im_start|>assistant\n")


def test_pack_fills_rows_without_overflow_and_uses_every_sample_once():
    lengths = [5, 9, 3, 7, 2, 8, 6, 1, 4]
    rows = pack(lengths, 10, order=range(len(lengths)))
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 5  # 45 tokens in rows of 10: first fit needs one row more than the minimum
    assert epoch_rows([Sample([1] * n, [True] * n) for n in lengths], 10, "pad", seed=0) != [[i] for i in range(9)]


def test_packed_rows_never_attend_across_conversations():
    torch.manual_seed(0)
    model = QwenModel(ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                                  intermediate_size=64, init_std=0.2)).eval()
    samples = [Sample(torch.randint(1, 64, (n,)).tolist(), [True] * n) for n in (7, 5, 9)]
    batch = collate(samples, [[0, 1, 2]], width=24)
    assert batch["segment_ids"][0].tolist() == [1] * 7 + [2] * 5 + [3] * 9 + [0] * 3
    with torch.no_grad():
        packed = model(batch["input_ids"], segment_ids=batch["segment_ids"])[0]
        start = 0
        for s in samples:
            alone = model(torch.tensor([s.ids]))[0]
            torch.testing.assert_close(packed[start : start + len(s.ids)], alone, atol=1e-5, rtol=1e-5)
            start += len(s.ids)
    # targets never point into the next conversation
    assert batch["labels"][0, 6] == IGNORE_INDEX and batch["labels"][0, 11] == IGNORE_INDEX
    assert batch["labels"][0, :6].tolist() == samples[0].ids[1:]
