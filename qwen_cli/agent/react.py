"""The ReAct loop: ask, let the model think and call tools, feed each result back, until a final answer.

    episode = run_episode(complete, "What is 2**100 mod 7?", make_tools(["python"]), max_steps=5)
    episode.final_answer, episode.stop_reason, [s.observation.text for s in episode.steps]

``complete(messages, assistant_prefix) -> str`` is any function that continues the partial
assistant turn ``assistant_prefix`` (after the ChatML ``messages``) until the model writes
``Observation:`` or ends its turn, returning the new text without the stop string:
:func:`model_completer` builds one on the generation engine; tests pass scripted replies. The
user turn is :func:`~qwen_cli.data.react.react_prompt`; the transcript grows exactly as the
training data of :mod:`qwen_cli.data.react` spells it.

Each model reply is one of: a tool call (``Action:`` + ``Action Input:``; the tool runs and its
observation is appended), a ``Final Answer:`` (the episode ends: ``final_answer``), neither
(``no_action``: the reply is the model's plain answer), a tool that is not offered
(``unknown_tool``, not run), or a tool call after ``max_steps`` calls (``step_limit``, not run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from qwen_cli.agent.tools import Observation, Tool
from qwen_cli.data.chat_template import DEFAULT_SYSTEM
from qwen_cli.data.jinja_chat import chat_template_for
from qwen_cli.data.react import OBSERVATION, observation_text, react_prompt
from qwen_cli.inference.generate import generate

__all__ = ["Episode", "Step", "model_completer", "parse_reply", "react_prompt", "run_episode"]

Completer = Callable[[list[dict], str], str]
StopReason = Literal["final_answer", "step_limit", "no_action", "unknown_tool"]
ACTION, ACTION_INPUT, FINAL_ANSWER = "Action:", "Action Input:", "Final Answer:"


@dataclass
class Step:
    """One tool call: the model's thought, the tool and its input, and what the tool returned
    (``None`` when it was not run: an unknown tool or past the step limit)."""

    thought: str
    action: str
    action_input: str
    observation: Observation | None = None

    def to_json(self) -> dict:
        return {"thought": self.thought, "action": self.action, "action_input": self.action_input,
                "observation": None if self.observation is None else self.observation.to_json()}


@dataclass
class Episode:
    """A question's whole ReAct run; ``transcript`` is the assistant turn as the model saw it, ``reply``
    what to show the user (the final answer, else the model's last text)."""

    question: str
    steps: list[Step] = field(default_factory=list)
    final_answer: str | None = None
    stop_reason: StopReason = "no_action"
    transcript: str = ""
    reply: str = ""

    def to_json(self) -> dict:
        return {"question": self.question, "reply": self.reply, "final_answer": self.final_answer,
                "stop_reason": self.stop_reason, "steps": [s.to_json() for s in self.steps],
                "transcript": self.transcript}


def _strip_thought(text: str) -> str:
    text = text.strip()
    return text.removeprefix("Thought:").strip()


def parse_reply(text: str) -> tuple[str, str | None, str, str | None]:
    """(thought, action or None, action input, final answer or None) of one model reply.

    Whichever of ``Action:`` and ``Final Answer:`` comes first decides; the action is the rest of
    its line up to ``Action Input:``, the input everything after that.
    """
    text = text.partition(OBSERVATION)[0]
    action_at, final_at = _keyword(text, ACTION), _keyword(text, FINAL_ANSWER)
    if action_at >= 0 and (final_at < 0 or action_at < final_at):
        thought = _strip_thought(text[:action_at])
        rest = text[action_at + len(ACTION):]
        action, found, action_input = rest.partition(ACTION_INPUT)
        if not found:
            action, _, action_input = rest.partition("\n")
        return thought, action.strip(), action_input.strip(), None
    if final_at >= 0:
        return _strip_thought(text[:final_at]), None, "", text[final_at + len(FINAL_ANSWER):].strip()
    return _strip_thought(text), None, "", None


def _keyword(text: str, keyword: str) -> int:
    """Where ``keyword`` starts a line of ``text`` (-1: nowhere)."""
    if text.lstrip().startswith(keyword):
        return text.index(keyword)
    at = text.find("\n" + keyword)
    return at + 1 if at >= 0 else -1


def run_episode(complete: Completer, question: str, tools: Sequence[Tool], max_steps: int, *,
                history: Sequence[dict] = (), system: str | None = DEFAULT_SYSTEM,
                on_step: Callable[[Step], None] = lambda _: None, compact: bool = False) -> Episode:
    """Answer ``question`` with at most ``max_steps`` tool calls (see the module docstring).

    ``history``: earlier user/assistant turns; ``system``: None for none (a model's own chat template
    may supply its default); ``on_step`` sees each step once it has run; ``compact``: the short prompt
    (:data:`~qwen_cli.data.react.COMPACT_PROMPT`).
    """
    by_name = {tool.name: tool for tool in tools}
    head = [] if system is None else [{"role": "system", "content": system}]
    messages = [*head, *history, {"role": "user", "content": react_prompt(question, tools, compact)}]
    episode = Episode(question)
    prefix = ""
    while True:
        reply = complete(messages, prefix).partition(OBSERVATION)[0]
        thought, action, action_input, final = parse_reply(reply)
        episode.transcript, episode.reply = prefix + reply, final if final is not None else reply.strip()
        if action is None:
            episode.final_answer = final
            episode.stop_reason = "final_answer" if final is not None else "no_action"
            return episode
        step = Step(thought, action, action_input)
        episode.steps.append(step)
        if action not in by_name or len(episode.steps) > max_steps:
            episode.stop_reason = "unknown_tool" if action not in by_name else "step_limit"
            on_step(step)
            return episode
        step.observation = by_name[action].call(action_input)
        on_step(step)
        prefix += reply.rstrip() + "\n" + OBSERVATION + observation_text(step.observation.text)


def model_completer(model, tokenizer, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                    seed: int | None = None, window: int | None = None, compile: bool = False) -> Completer:
    """A ``complete`` function on the generation engine: the chat prompt (ChatML, or the model's own
    chat template; oldest exchanges left out when it is too long for ``window``, default the model's
    context) plus the assistant prefix, generated until ``Observation:`` (by text) or an end-of-turn
    token. A prompt that leaves no room to generate gives "". With ``seed``, call ``n`` samples
    with ``seed + n``, so a run is reproducible."""
    template = chat_template_for(tokenizer)
    window = window or model.config.max_position_embeddings
    calls = 0

    def complete(messages: list[dict], assistant_prefix: str) -> str:
        nonlocal calls
        calls += 1
        continued = tokenizer.encode(assistant_prefix)
        prompt = template.prompt(messages, max(window - max_new_tokens - len(continued), window // 2)) + continued
        budget = min(max_new_tokens, window - len(prompt))
        if budget <= 0:
            return ""
        out = generate(model, [prompt], budget, temperature=temperature, top_p=top_p, stop_ids=template.stop_ids,
                       stop_strings=(OBSERVATION,), tokenizer=tokenizer,
                       seed=None if seed is None else seed + calls - 1, compile=compile)[0]
        return tokenizer.decode(out).partition(OBSERVATION)[0]

    return complete
