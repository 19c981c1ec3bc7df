"""ChatML for one tokenizer: rendering with loss masks, truncation, generation prompts (SFT and chat).

Rendering (token for token what Qwen's ``make_context`` builds)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n{a}<|im_end|>

The role names, ``\\n`` and message contents are encoded with the ordinary ``encode`` (a
``<|im_end|>`` typed by a user is plain text); ``<|im_start|>``/``<|im_end|>`` are inserted by id.

Loss mask (which tokens are prediction targets): the assistant's content and its closing
``<|im_end|>``, less any ``unsupervised`` character spans the message carries (ReAct observations,
:mod:`qwen_cli.data.react`). Not supervised: system and user turns, the assistant header
``<|im_start|>assistant\\n`` (the prompt always supplies it) and the ``\\n`` between turns (the
model stops at ``<|im_end|>``, so it never generates them). Qwen's released finetune script
supervises headers and newlines too; learning to emit ``<|im_start|>`` after ``<|im_end|>``
is what users linked to replies that run on into a new turn.

Truncation to ``max_len`` tokens: whole exchanges (a user turn and its answer) are dropped from
the oldest end, keeping the system prompt; if the last exchange alone is still too long, the
sequence is cut at ``max_len``; a conversation left with no supervised token is dropped. Each
case is counted in :class:`ChatStats`.

Any tokenizer with ``<|im_start|>``/``<|im_end|>`` (ours, Qwen2's, SmolLM2's at their own ids) gets
ChatML; one without them is a one-line ``UserError`` naming its directory. Generation prompts under
a model's own Jinja template are :mod:`qwen_cli.data.jinja_chat`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qwen_cli.data.chat_format import ROLES, Message
from qwen_cli.data.react import span_mask
from qwen_cli.errors import UserError

DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass
class Sample:
    """One rendered conversation: token ids and, per token, whether it is a prediction target."""

    ids: list[int]
    supervised: list[bool]


@dataclass
class ChatStats:
    """What encoding did to the data set (reported by ``qwen sft``)."""

    conversations: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    truncated_turns: int = 0  # conversations that lost their oldest exchanges
    truncated_tail: int = 0  # conversations cut at max_len inside the last exchange
    dropped: int = 0  # conversations with no supervised token left after truncation
    skipped_lines: int = 0


class ChatTemplate:
    """ChatML rendering for one tokenizer (see the module docstring for the exact layout)."""

    def __init__(self, tokenizer, default_system: str = DEFAULT_SYSTEM) -> None:
        if getattr(tokenizer, "im_start_id", None) is None or getattr(tokenizer, "im_end_id", None) is None:
            raise UserError(f"{tokenizer.source}: the tokenizer has no <|im_start|>/<|im_end|> tokens for ChatML "
                            "(training on conversations needs them; chat needs them or a chat_template in "
                            "tokenizer_config.json)")
        self.tokenizer = tokenizer
        self.default_system = default_system
        self.newline = tokenizer.encode("\n")
        self.role_ids = {role: tokenizer.encode(role) for role in ROLES}
        self.stop_ids = (tokenizer.im_end_id, tokenizer.im_start_id, tokenizer.eot_id)

    def header(self, role: str) -> list[int]:
        """``<|im_start|>{role}\\n``."""
        return [self.tokenizer.im_start_id, *self.role_ids[role], *self.newline]

    def turn(self, message: Message) -> Sample:
        """One ``<|im_start|>{role}\\n{content}<|im_end|>`` block; only assistant content + ``<|im_end|>`` supervised."""
        head = self.header(message["role"])
        content = self.tokenizer.encode(message["content"])
        target = message["role"] == "assistant"
        supervised = [target] * len(content)
        if target and message.get("unsupervised"):  # ReAct observations: read, never written by the model
            supervised = span_mask(self.tokenizer, message["content"], content, message["unsupervised"])
        return Sample(head + content + [self.tokenizer.im_end_id], [False] * len(head) + supervised + [target])

    def _split(self, messages: Sequence[Message]) -> tuple[Message, list[Message]]:
        if messages and messages[0]["role"] == "system":
            return messages[0], list(messages[1:])
        return {"role": "system", "content": self.default_system}, list(messages)

    def _blocks(self, messages: Sequence[Message]) -> tuple[Sample, list[Sample]]:
        """The system turn, then one Sample per exchange (``\\n`` + user turn + ``\\n`` + assistant turn)."""
        system, turns = self._split(messages)
        blocks = []
        for i in range(0, len(turns), 2):
            ids, sup = [], []
            for message in turns[i : i + 2]:
                rendered = self.turn(message)
                ids += self.newline + rendered.ids
                sup += [False] * len(self.newline) + rendered.supervised
            blocks.append(Sample(ids, sup))
        return self.turn(system), blocks

    def render(self, messages: Sequence[Message]) -> Sample:
        """The whole conversation with its loss mask, untruncated."""
        system, blocks = self._blocks(messages)
        return Sample(system.ids + [t for b in blocks for t in b.ids],
                      system.supervised + [s for b in blocks for s in b.supervised])

    def encode(self, messages: Sequence[Message], max_len: int, stats: ChatStats) -> Sample | None:
        """Render and truncate to ``max_len`` by the policy in the module docstring; None if dropped."""
        system, blocks = self._blocks(messages)
        total = len(system.ids) + sum(len(b.ids) for b in blocks)
        if total > max_len and len(blocks) > 1:
            stats.truncated_turns += 1
            while total > max_len and len(blocks) > 1:
                total -= len(blocks.pop(0).ids)
        sample = Sample(system.ids + [t for b in blocks for t in b.ids],
                        system.supervised + [s for b in blocks for s in b.supervised])
        if len(sample.ids) > max_len:
            stats.truncated_tail += 1
            sample = Sample(sample.ids[:max_len], sample.supervised[:max_len])
        if not any(sample.supervised):
            stats.dropped += 1
            return None
        stats.conversations += 1
        stats.tokens += len(sample.ids)
        stats.supervised_tokens += sum(sample.supervised)
        return sample

    def prompt(self, messages: Sequence[Message], max_len: int | None = None) -> list[int]:
        """Generation prompt: the history (ending with a user turn) + ``\\n<|im_start|>assistant\\n``.

        With ``max_len``, the oldest exchanges are left out while the prompt is longer (the
        system prompt and the newest user turn always stay), as Qwen's ``make_context`` does.
        """
        system, turns = self._split(messages)
        if not turns or turns[-1]["role"] != "user":
            raise ValueError("a generation prompt must end with a user turn")
        tail = self.newline + self.turn(turns[-1]).ids + self.newline + self.header("assistant")
        history = [self.newline + self.turn(m).ids for m in turns[:-1]]
        exchanges = [history[i] + history[i + 1] for i in range(0, len(history) - 1, 2)]
        head = self.turn(system).ids
        while max_len is not None and exchanges and len(head) + sum(map(len, exchanges)) + len(tail) > max_len:
            exchanges.pop(0)
        return head + [t for e in exchanges for t in e] + tail


def encode_conversations(template: ChatTemplate, conversations: Iterable[Sequence[Message]],
                         max_len: int, stats: ChatStats) -> list[Sample]:
    """Render and truncate every conversation, counting into ``stats``."""
    samples = (template.encode(c, max_len, stats) for c in conversations)
    return [s for s in samples if s is not None]
