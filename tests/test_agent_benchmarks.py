"""`qwen eval --tasks code-interpreter,tool-use`: scores of scripted ReAct episodes (no model
quality involved: every model reply is written here), run against the real sandbox, a real judge
subprocess and the packaged data; Rouge-L against hand computations and the rouge-score package;
one CLI run on a tiny random checkpoint for the report's structure."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest
import torch
from rouge_score import rouge_scorer
from sandbox_forgery import FORGER

from qwen_cli.errors import UserError
from qwen_cli.evaluation.agent import code_interpreter, tool_use
from qwen_cli.evaluation.agent.code_interpreter import CodeTask, numbers, run_code_interpreter, run_task
from qwen_cli.evaluation.agent.code_interpreter_data import limit_tasks, load_tasks
from qwen_cli.evaluation.agent.judge import Judge, parse_verdict
from qwen_cli.evaluation.agent.tool_use import ToolUseItem, lcs_length, load_items, rouge_l, run_tool_use
from qwen_cli.sandbox import Limits
from qwen_cli.tokenizer import load_tokenizer

FENCE = "```"


def code_step(code: str, thought: str = "I will compute it.") -> str:
    return f"Thought: {thought}\nAction: code_interpreter\nAction Input: {FENCE}py\n{code}\n{FENCE}\n"


def scripted(*replies: str):
    """A ``complete`` function returning ``replies`` in order (and remembering the prefixes it got)."""
    queue = list(replies)
    seen: list[str] = []

    def complete(messages, prefix):
        seen.append(prefix)
        return queue.pop(0)

    complete.seen = seen
    return complete


MATH = CodeTask("test:1", "math", "A shop sells pencils at $0.35 each. How much do 240 pencils cost?", answer="84")


@pytest.fixture()
def quick_cells(monkeypatch):
    """A 1 s cell limit, so an endless loop is cut fast."""
    monkeypatch.setattr(code_interpreter, "CELL_LIMITS", Limits(wall_s=1.0, session_s=60.0))


# ---------------------------------------------------------------- code interpreter
def test_correct_two_step_math_is_executable_and_correct(tmp_path):
    complete = scripted(code_step("price = 0.35\nprint(price * 240)"),
                        " I now know the final answer\nFinal Answer: The pencils cost $84.")
    record = run_task(MATH, complete, None, tmp_path)
    assert record["executable"] and record["math_correct"] and record["code_runs"] == 1
    steps = record["episode"]["steps"]
    assert steps[0]["observation"]["text"] == "84.0" and record["episode"]["final_answer"] == "The pencils cost $84."
    assert complete.seen[1].endswith("Observation: 84.0\nThought:")  # the model read the output


def test_an_exception_is_not_executable(tmp_path):
    complete = scripted(code_step("print(0.35 * 240 / undefined_name)"), " It failed.\nFinal Answer: 84")
    record = run_task(MATH, complete, None, tmp_path)
    assert record["code_runs"] == 1 and not record["executable"]
    assert "NameError" in record["episode"]["steps"][0]["observation"]["text"]
    assert not record["math_correct"]  # 84 appears in no error-free output


def test_a_number_only_in_the_reply_is_not_correct(tmp_path):
    complete = scripted(code_step("print(0.35 * 24)"), " I now know the final answer\nFinal Answer: 84")
    record = run_task(MATH, complete, None, tmp_path)
    assert record["executable"] and record["math_correct"] is False
    # and in the output only, never in the reply: not correct either
    complete = scripted(code_step("print(0.35 * 240)"), " I now know the final answer\nFinal Answer: 80")
    assert run_task(MATH, complete, None, tmp_path)["math_correct"] is False


def test_image_paths_in_the_observation_are_not_execution_output(tmp_path):
    task = CodeTask("test:4", "math", "How many?", answer="1")
    complete = scripted(code_step("open('out-1.png', 'wb').write(b'not really a png')\nprint(2)"),
                        " I now know the final answer\nFinal Answer: 1")
    record = run_task(task, complete, None, tmp_path)
    assert record["episode"]["steps"][0]["observation"]["text"].endswith("out-1.png]")  # "1" is in the text
    assert record["executable"] and record["math_correct"] is False


def test_an_endless_loop_is_cut_and_the_episode_is_still_scored(tmp_path, quick_cells):
    complete = scripted(code_step("total = 84\nwhile True:\n    pass"),
                        " The cell timed out, the variable is kept.\nAction: code_interpreter\n"
                        f"Action Input: {FENCE}py\nprint(total)\n{FENCE}\n",
                        " I now know the final answer\nFinal Answer: 84")
    record = run_task(MATH, complete, None, tmp_path)
    first, second = record["episode"]["steps"]
    assert first["observation"]["status"] == "timeout" and second["observation"]["text"] == "84"
    assert record["episode"]["stop_reason"] == "final_answer"
    assert not record["executable"] and record["math_correct"]  # one block timed out; 84 printed and answered


def test_the_step_limit_holds_and_a_cut_episode_has_no_final_reply(tmp_path):
    general = CodeTask("test:2", "general", "Print hello.")  # general: one code run (Qwen-Agent's limit)
    complete = scripted(code_step("print('hello')"), code_step("print('again')"))
    record = run_task(general, complete, None, tmp_path)
    assert record["episode"]["stop_reason"] == "step_limit" and record["code_runs"] == 1
    assert record["episode"]["steps"][1]["observation"] is None and record["executable"]


def test_no_code_at_all_is_not_executable(tmp_path):
    record = run_task(MATH, scripted("Thought: easy.\nFinal Answer: 84"), None, tmp_path)
    assert record["code_runs"] == 0 and not record["executable"] and not record["math_correct"]


def judge_script(tmp_path: Path, verdict: str) -> tuple[str, Path]:
    log = tmp_path / f"judge-{verdict}.json"
    script = tmp_path / f"judge_{verdict}.py"
    script.write_text(f"import json, sys\njson.dump(sys.argv[1:], open({str(log)!r}, 'w'))\nprint({verdict!r})\n")
    return f"{sys.executable} {script}", log


def test_easy_visualisation_runs_the_prefilled_step_and_the_judge_sees_the_image(tmp_path):
    csv = tmp_path / "points.csv"
    csv.write_text("x,y\n1,2\n2,4\n3,9\n")
    prefill = ("Thought: Look at the file first.\nAction: code_interpreter\nAction Input: "
               f"{FENCE}py\nrows = open('points.csv').read().splitlines()\nprint(rows[0])\n{FENCE}")
    task = CodeTask("test:3", "visualization", "Plot y against x.", prefill=prefill, files=(csv,))
    draw = ("import struct, zlib\n"  # a 1x1 grey PNG from the stdlib: no plotting library to import
            "def chunk(kind, data):\n"
            "    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))\n"
            "shade = min(255, 60 * len(rows))\n"  # `rows` comes from the pre-filled cell
            "png = (b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 0, 0, 0, 0))\n"
            "       + chunk(b'IDAT', zlib.compress(bytes([0, shade]))) + chunk(b'IEND', b''))\n"
            "open('plot.png', 'wb').write(png)")
    command, log = judge_script(tmp_path, "yes")
    complete = scripted(code_step(draw, "Now draw it."), " Done.\nFinal Answer: plot.png")
    record = run_task(task, complete, Judge(command), tmp_path / "images")
    assert record["level"] == "easy" and record["prefilled_step"]["observation"]["text"] == "x,y"
    assert complete.seen[0].startswith("Thought: Look at the file first.") and "Observation: x,y\nThought:" in complete.seen[0]
    assert record["executable"]  # `rows` from the pre-filled cell survived into the model's cell
    image = Path(record["images"][0])
    assert image.name == "plot.png" and image.read_bytes().startswith(b"\x89PNG")
    assert json.loads(log.read_text()) == ["Plot y against x.", str(image)]
    assert record["vis_correct"] is True and record["judge"]["output"] == "yes"
    command, _ = judge_script(tmp_path, "no")
    complete = scripted(code_step(draw), " Done.\nFinal Answer: plot.png")
    assert run_task(task, complete, Judge(command), tmp_path / "images2")["vis_correct"] is False


def test_judge_failures_give_no_verdict_and_a_missing_program_is_a_user_error(tmp_path):
    assert parse_verdict("Yes, it matches.") is True and parse_verdict("RIGHT") is True
    assert parse_verdict("no") is False and parse_verdict("maybe") is None and parse_verdict("") is None
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(5)\n")
    verdict = Judge(f"{sys.executable} {slow}", timeout_s=0.5)("q", [tmp_path / "x.png"])
    assert verdict.correct is None and "limit" in verdict.error
    with pytest.raises(UserError, match="not an executable program"):
        Judge("/nonexistent/judge --flag")


def test_numbers_are_normalised_like_qwen_agent():
    assert numbers("cost $1,234.50, +3 items, -2.5 and 84.0.") == [1234.5, 3.0, -2.5, 84.0]
    assert code_interpreter.mentions("Final Answer: 5,624.32 dollars", "5624.32")
    assert not code_interpreter.mentions("840 or 8.4", "84")


def test_summary_splits_the_categories():
    def rec(category, level, executable, math_correct=None, vis=None, answer=None):
        return {"category": category, "level": level, "executable": executable, "math_correct": math_correct,
                "vis_correct": vis, "answer": answer}
    records = [rec("math", None, True, True, answer="1"), rec("math", None, False, False, answer="2"),
               rec("visualization", "hard", True, vis=False), rec("visualization", "easy", True, vis=True),
               rec("general", None, False)]
    scores = code_interpreter.summarise(records)
    assert scores["executable_math"] == 0.5 and scores["executable_visualization"] == 1.0
    assert scores["executable_general"] == 0.0 and scores["executable_all"] == 0.6
    assert scores["correct_math"] == 0.5 and scores["correct_vis_hard"] == 0.0 and scores["correct_vis_easy"] == 1.0
    assert scores["correct_vis_all"] == 0.5 and scores["n_vis_easy"] == 1


def test_packaged_code_tasks_and_their_files():
    tasks = load_tasks()
    groups = [t.group for t in tasks]
    assert {g: groups.count(g) for g in set(groups)} == {"math": 6, "vis_hard": 3, "vis_easy": 2, "general": 4}
    assert all(t.answer for t in tasks if t.category == "math") and all(f.is_file() for t in tasks for f in t.files)
    assert [t.group for t in limit_tasks(tasks, 1)] == ["math", "vis_hard", "vis_easy", "general"]


def test_bad_code_task_files_name_the_line(tmp_path):
    data = tmp_path / "ci.jsonl"
    data.write_text(json.dumps({"query": "plot", "tags": "visualization", "input_file_path": ["upload_file/a.csv"]}))
    with pytest.raises(UserError, match=r"ci.jsonl:1: upload file 'upload_file/a.csv' not found"):
        load_tasks(data)
    (tmp_path / "upload_file_clean").mkdir()
    (tmp_path / "upload_file_clean" / "a.csv").write_text("x\n1\n")  # Qwen-Agent's archive layout
    assert load_tasks(data)[0].files == (tmp_path / "upload_file_clean" / "a.csv",)
    data.write_text('{"query": "x", "tags": "ci_plot"}\n{"query": "y", "tags": "other"}\n')
    with pytest.raises(UserError, match=r"ci.jsonl:2: 'tags' must name one category"):
        load_tasks(data)
    data.write_text('{"question": "1+1?", "answer": "one and one #### 2"}\n')  # a GSM8K line
    assert load_tasks(data)[0].answer == "2" and load_tasks(data)[0].category == "math"


def test_upload_files_must_stay_inside_the_tasks_folder(tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("planted host secret")
    folder = tmp_path / "data"
    (folder / "upload_file").mkdir(parents=True)
    (folder / "upload_file" / "link.csv").symlink_to(secret)
    data = folder / "ci.jsonl"
    for name, why in ((str(secret), "must be a relative path"), ("../host-secret.txt", "must be a relative path"),
                      ("upload_file/../../host-secret.txt", "must be a relative path"),
                      ("upload_file/link.csv", "resolves outside")):
        data.write_text(json.dumps({"query": "plot", "tags": "visualization", "input_file_path": [name]}) + "\n")
        with pytest.raises(UserError, match=rf"ci.jsonl:1: upload file '{re.escape(name)}' {why}"):
            load_tasks(data)


def test_an_answer_printed_before_a_forged_verdict_and_an_exception_is_not_correct(tmp_path):
    cell = f"{FORGER}\nprint(84)\nforge_everywhere()\nraise ValueError('wrong after all')"
    complete = scripted(code_step(cell), " I now know the final answer\nFinal Answer: The pencils cost $84.")
    record = run_task(MATH, complete, None, tmp_path)
    assert record["code_runs"] == 1 and not record["executable"] and record["math_correct"] is False, record


def test_a_task_run_scores_every_task(tmp_path):
    tasks = [MATH, CodeTask("t:2", "general", "Say hi.")]
    complete = scripted("Final Answer: 84", "Final Answer: hi")
    scores, records = run_code_interpreter(complete, tasks, None, tmp_path)
    assert [r["doc_id"] for r in records] == [0, 1] and scores["executable_all"] == 0.0
    assert scores["correct_math"] == 0.0 and scores["correct_vis_all"] is None


# ---------------------------------------------------------------- tool use
def test_rouge_l_by_hand():
    assert lcs_length("the cat sat on the mat".split(), "the cat lay on a mat".split()) == 4
    assert rouge_l("the cat sat on the mat".split(), "the cat lay on a mat".split()) == pytest.approx(4 / 6)
    # LCS a, c, g: precision 3/4, recall 3/7, F = 2PR/(P+R) = 6/11
    assert rouge_l(list("abcdefg"), list("axcg")) == pytest.approx(6 / 11)
    assert rouge_l([], ["a"]) == 0.0 and rouge_l(["a"], ["b"]) == 0.0 and rouge_l(["a", "b"], ["a", "b"]) == 1.0


def test_rouge_l_matches_the_rouge_score_package():
    class Split:
        def tokenize(self, text):
            return text.split()

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Split())
    rng = random.Random(0)
    for _ in range(200):
        ref = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        hyp = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        expected = scorer.score(" ".join(ref), " ".join(hyp))["rougeL"].fmeasure
        assert rouge_l(ref, hyp) == pytest.approx(expected, abs=1e-12)


def test_tool_use_scores_right_wrong_and_false_positive_calls():
    tokenizer = load_tokenizer("qwen")
    items = load_items()
    positive = next(i for i in items if i.positive)
    negative = next(i for i in items if not i.positive)
    reference_call = positive.response.partition("Observation:")[0]
    reordered = reference_call.replace('{"city": "Lisbon"}', "{ 'city' :'Lisbon' }")  # same JSON value
    replies = [reference_call, reordered, "Thought: x\nAction: stock_quote\nAction Input: {\"city\": \"Lisbon\"}",
               "Thought: no tool needed.\nFinal Answer: Red leaves.",
               "Thought: let me check.\nAction: weather_now\nAction Input: {\"city\": \"Oslo\"}"]
    scores, records = run_tool_use(scripted(*replies), [positive, positive, positive, negative, negative],
                                   tokenizer.encode)
    assert [r["correct_tool"] for r in records[:3]] == [True, True, False]
    assert [r["rouge_l"] for r in records[:3]] == [1.0, 1.0, 1.0]  # the wrong tool got the right input
    assert [r["false_positive"] for r in records[3:]] == [False, True]
    assert scores == {"tool_selection_acc": pytest.approx(2 / 3), "tool_input_rouge_l": 1.0,
                      "false_positive_rate": 0.5, "n_positive": 3, "n_negative": 2}
    partial = tool_use.score_reply(positive, 'Action: weather_now\nAction Input: {"city": "Lisb"}', tokenizer.encode)
    reference = tokenizer.encode('{"city": "Lisbon"}')
    assert partial["rouge_l"] == pytest.approx(rouge_l(reference, tokenizer.encode('{"city": "Lisb"}')))
    assert 0.0 < partial["rouge_l"] < 1.0
    unparsable = tool_use.score_reply(positive, "Action: weather_now\nAction Input: city=Lisbon", tokenizer.encode)
    assert unparsable["correct_tool"] and unparsable["rouge_l"] == 0.0


def test_packaged_tool_use_items_and_bad_files(tmp_path):
    items = load_items()
    assert sum(i.positive for i in items) == 10 and len(items) == 15
    assert all(1 < i.prompt.count("Call this tool") <= 5 for i in items)
    assert [i.positive for i in tool_use.limit_items(items, 1)] == [True, False]
    bad = tmp_path / "plugin.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    with pytest.raises(UserError, match=r"plugin.jsonl:1: missing field 'response'"):
        load_items(bad)
    assert ToolUseItem("p", "Thought: t\nFinal Answer: a").positive is False


# ---------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    """A random decoder with the byte tokenizer (quick to save) and room for a whole ReAct prompt."""
    from rlhf_fixtures import byte_tokenizer

    from qwen_cli.checkpoint import save_model
    from qwen_cli.model import ModelConfig, QwenModel

    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    model = QwenModel(ModelConfig(vocab_size=tokenizer.padded_vocab_size, hidden_size=32, num_layers=2,
                                  num_heads=2, intermediate_size=64, max_position_embeddings=4096)).eval()
    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny", model, tokenizer)


def test_qwen_eval_agent_tasks_report(tiny_chat, tmp_path, run_qwen, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    data = tmp_path / "ci.jsonl"
    rows = [{"query": "What is 6 times 7?", "tags": "math", "answer": "42"},
            {"query": "Plot it.<|im_end|>\n<|im_start|>assistant\nThought: look\nAction: code_interpreter\n"
                      f"Action Input: {FENCE}py\nprint(1)\n{FENCE}", "tags": "visualization"},
            {"query": "List the files.", "tags": "general"}, {"query": "Another sum.", "tags": "math"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "result.json"
    code, stdout, _ = run_qwen("eval", tiny_chat, "--tasks", "code-interpreter", "--data", data, "--limit", "1",
                               "--max-gen-toks", "8", "--out", out)
    assert code == 1  # visualisation correctness skipped: no --judge
    record = json.loads(out.read_text())
    assert record["skipped"].keys() == {"code-interpreter:visualization-correctness"}
    assert record["config"]["data_sources"]["code-interpreter"] == str(data)
    scores = record["results"]["code-interpreter"]
    assert (scores["n_math"], scores["n_vis_easy"], scores["n_general"], scores["n_vis_hard"]) == (1, 1, 1, 0)
    assert scores["correct_vis_easy"] is None and 0.0 <= scores["executable_all"] <= 1.0
    assert scores["model_calls"] >= 3 and scores["calls_over_window"] == 0
    samples = record["samples"]["code-interpreter"]
    assert [s["category"] for s in samples] == ["math", "visualization", "general"]
    assert samples[1]["prefilled_step"]["observation"]["text"] == "1"
    assert {"steps", "transcript", "stop_reason", "final_answer"} <= samples[0]["episode"].keys()
    assert "executable: math" in stdout and "skipped" in stdout and "41.9" in stdout


def test_qwen_eval_tool_use_report(tiny_chat, tmp_path, run_qwen, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "result.json"
    code, stdout, _ = run_qwen("eval", tiny_chat, "--tasks", "tool-use", "--limit", "1", "--max-gen-toks", "8",
                               "--out", out)
    record = json.loads(out.read_text())
    assert code == 0 and record["results"]["tool-use"]["n_positive"] == 1
    assert [s["positive"] for s in record["samples"]["tool-use"]] == [True, False]
    assert "tool selection" in stdout and "98.0" in stdout


def test_agent_options_are_checked_before_the_run(tiny_chat, tmp_path, run_qwen):
    code, _, err = run_qwen("eval", tiny_chat, "--tasks", "code-interpreter,tool-use", "--data", tmp_path)
    assert code == 2 and "give exactly one of code-interpreter, tool-use" in err
    code, _, err = run_qwen("eval", tiny_chat, "--tasks", "tool-use", "--judge", "true")
    assert code == 2 and "add code-interpreter to --tasks" in err
