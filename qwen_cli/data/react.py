"""The ReAct format of Qwen's tool use: the prompt, the transcript, and ReAct records as SFT data.

One tool-use turn is a ChatML exchange. The user turn is :func:`react_prompt`: Qwen's tool block
(per tool ``NAME: Call this tool to interact with the HUMAN API. What is the HUMAN API useful
for? DESCRIPTION Parameters: JSON`` plus how to format the arguments), the protocol and the
question. The assistant turn is the transcript, which the live loop (``qwen_cli.agent.react``)
builds and training data reproduces character for character::

    Thought: ...
    Action: python
    Action Input: ...
    Observation: <what the tool returned>
    Thought: ...
    Final Answer: ...

The model writes everything but the observation: it ends a step by writing ``Observation:``
(generation stops there), the harness appends `` <result>\\nThought:`` and the model goes on.

ReAct records (JSONL, read by ``qwen sft`` like any chat data; other keys are ignored)::

    {"question": "...", "steps": [{"thought": "...", "action": "python", "action_input": "...",
     "observation": "..."}], "final_answer": "...",
     "final_thought": "...",           (optional, default "I now know the final answer")
     "tools": ["python", {"name": ..., "description": ..., "parameters": {JSON schema}}],  (optional)
     "system": "...",                   (optional)
     "compact": true}                   (optional: the short prompt, :data:`COMPACT_PROMPT`)

``tools`` entries are names of the shipped tools (:data:`TOOL_SPECS`) or full descriptions; without
``tools`` the prompt lists the shipped tools the steps use. :func:`from_react` turns a record
into messages whose assistant turn carries ``unsupervised`` character spans: the observations,
which the model must read but never learns to write (``ChatTemplate`` leaves them out of the loss).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

FINAL_THOUGHT = "I now know the final answer"
OBSERVATION = "Observation:"

TOOL_DESC = ("{name}: Call this tool to interact with the {human_name} API. What is the {human_name} API "
             "useful for? {description} Parameters: {parameters}{args_hint}")
ARGS_HINTS = {"json": " Format the arguments as a JSON object.",
              "code": " Enclose the code within triple backticks (`) at the beginning and end of the code."}
PROMPT = """Answer the following questions as best you can. You have access to the following tools:

{tool_descs}

Use the following format:

Question: the input question you must answer
Thought: you should always think about what to do
Action: the action to take, should be one of [{tool_names}]
Action Input: the input to the action
Observation: the result of the action
... (this Thought/Action/Action Input/Observation can be repeated zero or more times)
Thought: I now know the final answer
Final Answer: the final answer to the original input question

Begin!

Question: {question}"""
# for models whose window cannot hold PROMPT (the tiny demo model: 256 tokens); same transcript format
COMPACT_PROMPT = "Tools: {tool_names}\nQuestion: {question}"


@dataclass(frozen=True)
class ToolSpec:
    """How a tool is described to the model: its name, what it is for, its arguments (a JSON schema)."""

    name: str
    description: str
    parameters: dict = field(default_factory=dict)
    human_name: str = ""  # the name in "the ... API" (default: ``name``)
    args_format: Literal["json", "code"] = "json"


TOOL_SPECS: dict[str, ToolSpec] = {
    "python": ToolSpec(
        "python", "Runs Python code in a persistent sandboxed session (variables, imports and files stay "
        "between calls; no network). Use it for exact arithmetic, data analysis of the user's files and "
        "plots: print what you need to see; figures saved to files or left open are shown to the user.",
        {"type": "object", "properties": {"code": {"type": "string", "description": "the Python code to run"}},
         "required": ["code"]},
        human_name="Python Interpreter", args_format="code"),
    "calculator": ToolSpec(
        "calculator", "Evaluates one arithmetic expression exactly: numbers, + - * / // % ** and parentheses.",
        {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. (3 + 4) * 2 ** 10"}},
         "required": ["expression"]},
        human_name="Calculator"),
}
# the python tool under the name the code-interpreter benchmark (and the traces that train for it) use
CODE_INTERPRETER_SPEC = replace(TOOL_SPECS["python"], name="code_interpreter", human_name="Code Interpreter")


def tool_description(tool) -> str:
    """One tool's paragraph of the prompt (``tool``: a :class:`ToolSpec` or anything with its fields)."""
    return TOOL_DESC.format(name=tool.name, human_name=getattr(tool, "human_name", "") or tool.name,
                            description=tool.description,
                            parameters=json.dumps(tool.parameters, ensure_ascii=False),
                            args_hint=ARGS_HINTS[getattr(tool, "args_format", "json")])


def react_prompt(question: str, tools: Sequence, compact: bool = False) -> str:
    """The user turn that asks ``question`` with ``tools`` available, in Qwen's ReAct format
    (``compact``: :data:`COMPACT_PROMPT`, only the tool names, for a short context window)."""
    if compact:
        return COMPACT_PROMPT.format(tool_names=",".join(t.name for t in tools), question=question)
    return PROMPT.format(tool_descs="\n\n".join(tool_description(t) for t in tools),
                         tool_names=",".join(t.name for t in tools), question=question)


def step_text(thought: str, action: str, action_input: str) -> str:
    """What the model writes for one tool call, up to (not including) ``Observation:``."""
    return f"Thought: {thought}\nAction: {action}\nAction Input: {action_input}\n"


def observation_text(observation: str) -> str:
    """What the harness writes after the model's ``Observation:`` (the model continues the thought)."""
    return f" {observation}\nThought:"


def final_text(thought: str, answer: str) -> str:
    """The closing thought and answer; ``thought`` continues a ``Thought:`` already written."""
    return f" {thought}\nFinal Answer: {answer}"


def _field(obj: dict, key: str, where: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}'{key}' must be a string" if key in obj else f"{where}missing '{key}'")
    return value


def _tool(entry, i: int) -> ToolSpec:
    if isinstance(entry, str):
        if entry not in TOOL_SPECS:
            raise ValueError(f"tools[{i}]: unknown tool {entry!r} (shipped: {', '.join(TOOL_SPECS)}; "
                             "or give {name, description, parameters})")
        return TOOL_SPECS[entry]
    if not isinstance(entry, dict):
        raise ValueError(f"tools[{i}] must be a tool name or an object")
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ValueError(f"tools[{i}]: 'parameters' must be a JSON schema object")
    args_format = entry.get("args_format", "json")
    if args_format not in ARGS_HINTS:
        raise ValueError(f"tools[{i}]: 'args_format' must be one of {', '.join(ARGS_HINTS)}")
    where = f"tools[{i}]: "
    return ToolSpec(_field(entry, "name", where), _field(entry, "description", where), parameters,
                    _field(entry, "human_name", where, ""), args_format)


def record_tools(record: dict) -> list[ToolSpec]:
    """The tools a record's prompt lists (see the module docstring for the default)."""
    steps = record.get("steps")
    if "tools" in record:
        if not isinstance(record["tools"], list) or not record["tools"]:
            raise ValueError("'tools' must be a non-empty list")
        return [_tool(entry, i) for i, entry in enumerate(record["tools"])]
    used = list(dict.fromkeys(s.get("action") for s in steps if isinstance(s, dict)))
    if not used:
        raise ValueError("a record without steps needs 'tools' (the tools the model could have called)")
    return [_tool(name, i) for i, name in enumerate(used)]


def from_react(record: dict) -> list[dict]:
    """A ReAct record as ChatML messages; the assistant turn's observations are ``unsupervised`` spans."""
    steps = record.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise ValueError("'steps' must be a list of {thought, action, action_input, observation} objects")
    tools = record_tools(record)
    names = [t.name for t in tools]
    compact = record.get("compact", False)
    if not isinstance(compact, bool):
        raise ValueError("'compact' must be true or false")
    content, unsupervised = "", []
    for i, step in enumerate(steps):
        where = f"steps[{i}]: "
        action = _field(step, "action", where)
        if action not in names:
            raise ValueError(f"{where}action {action!r} is not among the prompt's tools ({', '.join(names)})")
        written = step_text(_field(step, "thought", where), action, _field(step, "action_input", where))
        content += (written if i == 0 else written.removeprefix("Thought:")) + OBSERVATION
        harness = observation_text(_field(step, "observation", where))
        observed = harness[: -len("\nThought:")]
        unsupervised.append((len(content), len(content) + len(observed)))
        content += harness
    closing = final_text(_field(record, "final_thought", "", FINAL_THOUGHT), _field(record, "final_answer", ""))
    content += closing if steps else "Thought:" + closing
    system = [{"role": "system", "content": _field(record, "system", "")}] if "system" in record else []
    return [*system, {"role": "user", "content": react_prompt(_field(record, "question", ""), tools, compact)},
            {"role": "assistant", "content": content, "unsupervised": unsupervised}]


def span_mask(tokenizer, text: str, ids: Sequence[int], unsupervised: Sequence[Sequence[int]]) -> list[bool]:
    """Per token of ``ids`` (= ``tokenizer.encode(text)``): False when the token starts inside one of the
    ``unsupervised`` ``(start, end)`` character spans of ``text``, else True.

    Offsets are compared in bytes of the text as the tokenizer sees it (after its normalisation), so
    the tokens are those of the whole text, exactly what the model reads at inference.
    """
    def offset(chars: int) -> int:
        return len(tokenizer.decode_bytes(tokenizer.encode(text[:chars])))

    spans = [(offset(start), offset(end)) for start, end in unsupervised]
    mask, position = [], 0
    for token in ids:
        mask.append(not any(start <= position < end for start, end in spans))
        position += len(tokenizer.token_bytes(token))
    return mask
