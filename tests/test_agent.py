"""The ReAct loop on scripted model replies (no model quality involved) and the shipped tools.

The scripted ``complete`` also records every assistant prefix it was given, so the tests check what
the model would have read: the observations fed back, in the transcript format of the training data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen_cli.agent.react import parse_reply, run_episode
from qwen_cli.agent.tools import CalculatorTool, PythonTool, Tool, code_of, make_tools
from qwen_cli.data.react import ToolSpec, from_react, react_prompt
from qwen_cli.errors import UserError
from qwen_cli.sandbox import Limits

PNG = b"\x89PNG\r\n\x1a\nnot really an image"


class Script:
    """A ``complete`` function replaying fixed replies and recording the prefixes it was asked to continue."""

    def __init__(self, *replies: str) -> None:
        self.replies, self.prefixes, self.messages = list(replies), [], []

    def __call__(self, messages: list[dict], prefix: str) -> str:
        self.messages.append(messages)
        self.prefixes.append(prefix)
        return self.replies.pop(0)


@pytest.fixture()
def python():
    tool = PythonTool(limits=Limits(wall_s=5))
    yield tool
    tool.close()


def test_two_steps_share_variables_and_reach_the_final_answer(python):
    script = Script("Thought: first the remainder\nAction: python\nAction Input: ```py\nx = 2 ** 100 % 7\n```\n",
                    " now scale it\nAction: python\nAction Input: {\"code\": \"print(x * 10)\"}",
                    " done\nFinal Answer: 20")
    episode = run_episode(script, "What is (2**100 mod 7) * 10?", [python], max_steps=5)
    assert episode.stop_reason == "final_answer" and episode.final_answer == "20" == episode.reply
    assert [(s.thought, s.action, s.observation.text, s.observation.error) for s in episode.steps] == [
        ("first the remainder", "python", "(ran without output)", False), ("now scale it", "python", "20", False)]
    # what the model read before its second and third replies
    assert script.prefixes[1] == ("Thought: first the remainder\nAction: python\nAction Input: ```py\nx = 2 ** 100 % 7"
                                  "\n```\nObservation: (ran without output)\nThought:")
    assert script.prefixes[2].endswith("Action Input: {\"code\": \"print(x * 10)\"}\nObservation: 20\nThought:")
    assert script.messages[0][-1] == {"role": "user", "content": react_prompt("What is (2**100 mod 7) * 10?", [python])}
    # the live transcript is exactly what the SFT converter writes for the same record
    record = {"question": episode.question, "tools": ["python"], "final_thought": "done", "final_answer": "20",
              "steps": [{"thought": s.thought, "action": s.action, "action_input": s.action_input,
                         "observation": s.observation.text} for s in episode.steps]}
    assert from_react(record)[-1]["content"] == episode.transcript


def test_an_exception_is_an_error_observation_and_the_loop_goes_on(python):
    script = Script("Thought: try\nAction: python\nAction Input: y = 3\n1 / 0",
                    " fix it\nAction: python\nAction Input: print(y + 1)", " ok\nFinal Answer: 4")
    episode = run_episode(script, "q", [python], max_steps=3)
    failed, fixed = (s.observation for s in episode.steps)
    assert failed.error and failed.cell.status == "error" and failed.text.endswith("ZeroDivisionError: division by zero")
    assert not fixed.error and fixed.text == "4"  # y was set before the exception
    assert episode.stop_reason == "final_answer" and episode.final_answer == "4"


def test_an_infinite_loop_is_cut_by_the_cell_limit_and_the_episode_finishes():
    tool = PythonTool(limits=Limits(wall_s=1))
    try:
        script = Script("Thought: a\nAction: python\nAction Input: kept = 'still here'",
                        " b\nAction: python\nAction Input: ```python\nwhile True:\n    pass\n```",
                        " c\nAction: python\nAction Input: print(kept)", " d\nFinal Answer: still here")
        episode = run_episode(script, "q", [tool], max_steps=5)
    finally:
        tool.close()
    looped = episode.steps[1].observation
    assert looped.error and looped.cell.status == "timeout" and "cell time limit 1s exceeded" in looped.text
    assert episode.steps[2].observation.text == "still here"  # the same session, interrupted, not restarted
    assert episode.stop_reason == "final_answer" and episode.final_answer == "still here"


def test_the_step_limit_holds():
    script = Script(*["Thought: again\nAction: calculator\nAction Input: 1 + 1"] * 10)
    episode = run_episode(script, "q", [CalculatorTool()], max_steps=3)
    assert episode.stop_reason == "step_limit" and episode.final_answer is None
    assert len(script.prefixes) == 4 and len(episode.steps) == 4  # the 4th call is recorded, not run
    assert [s.observation is None for s in episode.steps] == [False, False, False, True]
    assert episode.transcript.count("Observation: 2\nThought:") == 3


def test_an_unknown_tool_is_reported_and_not_run():
    script = Script("Thought: look it up\nAction: web_search\nAction Input: {\"query\": \"x\"}")
    episode = run_episode(script, "q", [CalculatorTool()], max_steps=3)
    assert episode.stop_reason == "unknown_tool" and len(script.prefixes) == 1
    assert (episode.steps[0].action, episode.steps[0].observation) == ("web_search", None)


def test_plain_text_is_no_action_and_a_final_answer_needs_no_tool():
    assert run_episode(Script("Just words."), "q", [CalculatorTool()], 3).stop_reason == "no_action"
    episode = run_episode(Script("Thought: I know this\nFinal Answer: Paris"), "q", [CalculatorTool()], 3)
    assert (episode.stop_reason, episode.final_answer, episode.steps) == ("final_answer", "Paris", [])


class Weather(Tool):
    spec = ToolSpec("weather", "Current weather of a city.",
                    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                    human_name="Weather Service")


def test_the_prompt_lists_every_tool_with_its_description_and_json_parameters():
    tools = [*make_tools(["python", "calculator"]), Weather()]
    prompt = react_prompt("Is it raining in Oslo?", tools)
    for tool in tools:
        line = next(line for line in prompt.splitlines() if line.startswith(f"{tool.name}: "))
        assert f"Call this tool to interact with the {tool.human_name} API." in line
        assert f"useful for? {tool.description} Parameters: {json.dumps(tool.parameters)} " in line
    assert "Enclose the code within triple backticks" in prompt.split("\n\ncalculator: ")[0]
    assert prompt.split("\n\nweather: ")[1].split("\n")[0].endswith("Format the arguments as a JSON object.")
    assert "Action: the action to take, should be one of [python,calculator,weather]" in prompt
    assert prompt.startswith("Answer the following questions as best you can.")
    assert prompt.endswith("\n\nBegin!\n\nQuestion: Is it raining in Oslo?")


def test_reply_parsing_and_code_extraction():
    assert parse_reply("Thought: t\nAction: python\nAction Input: ```py\nprint(1)\n```\n") == (
        "t", "python", "```py\nprint(1)\n```", None)
    assert parse_reply(" t2\nFinal Answer: 42\n") == ("t2", None, "", "42")
    assert parse_reply("Action: calculator\n\n6*7") == ("", "calculator", "6*7", None)  # no Action Input line
    assert code_of("```python\nx = 1\n```") == "x = 1\n"
    assert code_of('{"code": "x = 2"}') == "x = 2"
    assert code_of("x = 3") == "x = 3"
    assert code_of("```py\nx = 4") == "x = 4"  # a fence never closed


def test_a_reply_with_both_an_action_and_a_final_answer_follows_whichever_comes_first():
    call_first = "Thought: t\nAction: calculator\nAction Input: 6*7\nFinal Answer: 41"
    assert parse_reply(call_first) == ("t", "calculator", "6*7\nFinal Answer: 41", None)
    answer_first = "Thought: t\nFinal Answer: 42\nAction: calculator\nAction Input: 6*7"
    assert parse_reply(answer_first) == ("t", None, "", "42\nAction: calculator\nAction Input: 6*7")
    # a keyword counts only where it starts a line: "Action:" inside the answer text is no call
    assert parse_reply("Final Answer: see Action: none") == ("", None, "", "see Action: none")


def test_user_files_go_in_and_saved_images_come_out(tmp_path):
    data = tmp_path / "sales.csv"
    data.write_text("city,sales\nOslo,3\nLima,5\n")
    (tool,) = make_tools(["python"], files=[data], out_dir=tmp_path / "out")
    try:
        read = tool.call("```py\nrows = open('sales.csv').read().splitlines()\nprint(len(rows))\n```")
        saved = tool.call(f"open('chart.png', 'wb').write({PNG!r})\nprint('saved')")
    finally:
        tool.close()
    assert read.text == "3" and not read.error
    assert saved.images == [str(tmp_path / "out" / "chart.png")] and f"[image: {saved.images[0]}]" in saved.text
    assert Path(saved.images[0]).read_bytes() == PNG


def test_tool_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown tool 'search'"):
        make_tools(["python", "search"])
    with pytest.raises(UserError, match="no such file"):
        make_tools(["python"], files=[tmp_path / "missing.csv"])
    with pytest.raises(UserError, match="add python"):
        make_tools(["calculator"], files=[tmp_path])


def test_calculator_is_exact_and_refuses_anything_but_arithmetic():
    calc = CalculatorTool()
    assert [calc.call(e).text for e in ("0.1 + 0.2", '{"expression": "(3 + 4) * 2 ** 10"}', "7 // 2", "2 ** 0.5")] == [
        "0.3", "7168", "3", "1.4142135623730951"]
    for bad in ("__import__('os').system('true')", "x + 1", "1 / 0", "9 ** 9 ** 9", "[1] * 3"):
        result = calc.call(bad)
        assert result.error and result.text.startswith("Error: ")


def test_a_cell_that_kills_the_sandbox_is_reported_and_the_next_call_starts_afresh(python):
    python.call("z = 1")
    died = python.call("import os\nos._exit(3)")
    assert died.error and died.cell.status == "died" and "the next call starts a new one" in died.text
    again = python.call("print('z' in globals())")
    assert not again.error and again.text.endswith("False") and "earlier variables are gone" in again.text


@pytest.mark.slow  # importing matplotlib inside the sandbox takes a few seconds
def test_a_figure_left_open_is_copied_out_by_path(tmp_path):
    (tool,) = make_tools(["python"], out_dir=tmp_path, limits=Limits(wall_s=60))
    try:
        shown = tool.call("```py\nimport matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nprint('plotted')\n```")
    finally:
        tool.close()
    assert not shown.error and shown.images == [str(tmp_path / "figure-1.png")]
    lines = shown.text.splitlines()  # stderr (here font cache warnings) comes between
    assert (lines[0], lines[-1]) == ("plotted", f"[image: {tmp_path / 'figure-1.png'}]")
    assert (tmp_path / "figure-1.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
