"""ReAct records as SFT data: the ChatML rendering, the loss mask that leaves the observations out
(checked token by token against the rendered text), the shipped example file, and `qwen sft` on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_sft import byte_tokenizer, write_recipe

from qwen_cli.agent.tools import make_tools
from qwen_cli.checkpoint import save_model
from qwen_cli.data.chat_format import read_chat_jsonl
from qwen_cli.data.chat_template import ChatStats, ChatTemplate, encode_conversations
from qwen_cli.data.react import TOOL_SPECS, from_react, react_prompt
from qwen_cli.data.sft_packing import IGNORE_INDEX, targets_of
from qwen_cli.errors import UserError
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.recipe import load_recipe
from qwen_cli.stages.sft import SECTIONS, SFTStage
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.train.trainer import run_stage

FIXTURE = Path(__file__).parent / "fixtures" / "react_tool_use.jsonl"
RECORD = {"question": "What is 6 * 7, and its square?", "tools": ["python", "calculator"],
          "steps": [{"thought": "multiply", "action": "calculator", "action_input": "6 * 7", "observation": "42"},
                    {"thought": "square it", "action": "python", "action_input": "print(42 ** 2)",
                     "observation": "结果 1764\n"}],
          "final_answer": "42, and 42² = 1764"}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("qwen")


def test_a_record_is_the_react_prompt_and_the_transcript(tok):
    system, user, assistant = from_react({**RECORD, "system": "Be exact."})
    assert system == {"role": "system", "content": "Be exact."}
    assert user == {"role": "user", "content": react_prompt(RECORD["question"],
                                                            [TOOL_SPECS["python"], TOOL_SPECS["calculator"]])}
    assert assistant["content"] == ("Thought: multiply\nAction: calculator\nAction Input: 6 * 7\nObservation: 42\n"
                                    "Thought: square it\nAction: python\nAction Input: print(42 ** 2)\n"
                                    "Observation: 结果 1764\n\nThought: I now know the final answer\n"
                                    "Final Answer: 42, and 42² = 1764")


def test_observations_are_masked_token_for_token(tok):
    template = ChatTemplate(tok)
    messages = from_react(RECORD)
    sample = template.render(messages)
    plain = template.render([*messages[:-1], {"role": "assistant", "content": messages[-1]["content"]}])
    assert sample.ids == plain.ids  # masking never changes the tokens: the whole text is encoded at once
    content = messages[-1]["content"].encode()
    start = len(sample.ids) - 1 - len(tok.encode(messages[-1]["content"]))  # content tokens, then <|im_end|>
    assert tok.decode(sample.ids[start:-1]).encode() == content
    # the byte ranges of " <observation>" right after each "Observation:", found in the text itself
    spans, at = [], 0
    for step in RECORD["steps"]:
        at = content.index(b"Observation:", at) + len(b"Observation:")
        spans.append((at, at + len((" " + step["observation"]).encode())))
    offsets = [0]
    for token in sample.ids[start:-1]:
        offsets.append(offsets[-1] + len(tok.token_bytes(token)))
    masked = [i for i in range(start, len(sample.ids) - 1) if not sample.supervised[i]]
    expected = [start + k for k, o in enumerate(offsets[:-1]) if any(a <= o < b for a, b in spans)]
    assert masked == expected and masked
    runs = [[masked[0]]]
    for i in masked[1:]:
        runs[-1].append(i) if i == runs[-1][-1] + 1 else runs.append([i])
    # a token straddling the end (the observation's "\n" + the next line's "\n") starts inside it: masked
    assert [tok.decode(sample.ids[r[0]:r[-1] + 1]) for r in runs] == [" 42", " 结果 1764\n\n"]
    assert sample.supervised[-1] and sum(plain.supervised) - sum(sample.supervised) == len(masked)
    labels = targets_of(sample)  # position i predicts token i + 1
    assert all(labels[i - 1] == IGNORE_INDEX for i in masked)
    assert all(labels[i - 1] == sample.ids[i] for i in range(start, len(sample.ids)) if i not in masked)


@pytest.mark.parametrize("change, reason", [
    ({"final_answer": None}, "'final_answer' must be a string"),
    ({"steps": [{"thought": "t", "action": "search", "action_input": "x", "observation": "o"}]},
     "steps[0]: action 'search' is not among the prompt's tools"),
    ({"tools": ["browser"]}, "tools[0]: unknown tool 'browser'"),
    ({"steps": [{"thought": "t", "action": "python", "action_input": "x"}]}, "steps[0]: missing 'observation'"),
    ({"steps": [], "tools": None}, "'tools' must be a non-empty list"),
])
def test_bad_records_name_the_line_and_key(tmp_path, change, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps({**RECORD, **change}) + "\n")
    with pytest.raises(UserError, match=f"^{path}:2: " + reason.replace("[", r"\[").replace("]", r"\]")):
        read_chat_jsonl(path)


def test_the_example_file_reads_as_sft_data_with_real_observations(tok):
    conversations, skipped = read_chat_jsonl(FIXTURE)
    stats = ChatStats()
    samples = encode_conversations(ChatTemplate(tok), conversations, 2048, stats)
    assert (len(samples), skipped, stats.dropped, stats.truncated_tail) == (8, 0, 0, 0)
    records = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    for record in records:  # the python/calculator observations are what the tools return today
        tools = {t.name: t for t in make_tools(["python", "calculator"])}
        try:
            for step in record["steps"]:
                if step["action"] in tools:
                    observed = tools[step["action"]].call(step["action_input"])
                    # tracebacks differ between Python versions in their caret lines; the error line does not
                    got, want = (observed.text, step["observation"]) if not observed.error else (
                        observed.text.splitlines()[-1], step["observation"].splitlines()[-1])
                    assert got == want, record["question"]
        finally:
            for tool in tools.values():
                tool.close()


def test_qwen_sft_trains_on_react_records(tmp_path, one_thread):
    tok = byte_tokenizer()  # a small vocabulary keeps the logits small; the prompts are ~1,500 bytes
    config = ModelConfig(vocab_size=tok.padded_vocab_size, hidden_size=16, num_layers=1, num_heads=2,
                         intermediate_size=32, max_position_embeddings=2048)
    torch.manual_seed(0)
    base = save_model(tmp_path / "base", QwenModel(config), tok)
    recipe = load_recipe(write_recipe(tmp_path, base, FIXTURE), ["data.seq_len=2048", "train.batch_tokens=2048",
                                                                  "train.micro_batch_size=1", "train.steps=1"],
                         sections=SECTIONS)
    stage = SFTStage(recipe)
    masked = sum(len(s.ids) - sum(s.supervised) for s in stage.train_samples)
    assert stage.stats.conversations == 8 and masked > 0
    result = run_stage(SFTStage, recipe, tmp_path / "run")
    assert result.exit_code == 0 and (result.final_dir / "model.safetensors").is_file()
