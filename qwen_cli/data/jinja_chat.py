"""A model's own chat template (``tokenizer_config.json``) for generation prompts, and which template to use.

:func:`chat_template_for` gives :class:`JinjaChatTemplate` when the tokenizer carries a Jinja
``chat_template`` (a foreign model: SmolLM2, Llama-3, Qwen2.5), else our ChatML
:class:`~qwen_cli.data.chat_template.ChatTemplate`. Both offer ``prompt(messages, max_len)``,
``stop_ids`` and ``default_system`` (None here: the template supplies its own default system
prompt, if any), which is all ``qwen chat`` and generative evaluation need. Training data stays
ChatML (it needs loss masks, which a free-form template does not give).

Prompt ids are transformers' ``apply_chat_template(messages, add_generation_prompt=True,
tokenize=True)``: the rendered text encoded with the tokenizer's specials recognised. One
deliberate difference: a message whose content spells a special token (a user typing
``<|im_end|>``) cannot inject it; that content is found in the rendered text and encoded as
plain text. Stop ids: ``generation_config.json``'s ``eos_token_id``, the template's end-of-turn
token (the special token it writes right after an assistant reply) and the tokenizer's eos.
"""

from __future__ import annotations

from collections.abc import Sequence

from qwen_cli.data.chat_format import Message
from qwen_cli.data.chat_template import DEFAULT_SYSTEM, ChatTemplate
from qwen_cli.tokenizer.chat_jinja import TemplateRefused, render_chat

PROBE = "qwen-cli probe reply"


class JinjaChatTemplate:
    """Generation prompts under the tokenizer's own Jinja chat template (see the module docstring)."""

    default_system = None

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.specials = set(tokenizer.special_ids)
        self.stop_ids = self._stop_ids()

    def text(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The rendered conversation, as transformers' ``apply_chat_template(..., tokenize=False)``."""
        tok = self.tokenizer
        return render_chat(tok.chat_template, messages, add_generation_prompt, tok.template_tokens, tok.source)

    def ids(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered conversation; message contents never become special tokens."""
        text = self.text(messages, add_generation_prompt)
        encode, plain = self.tokenizer.encode_with_specials, self.tokenizer.encode
        risky = [m["content"] for m in messages if any(s in m["content"] for s in self.specials)]
        if not risky:
            return encode(text, self.specials)
        ids, position = [], 0
        for content in risky:
            at = text.find(content, position)
            if at < 0:
                content = content.strip()
                at = text.find(content, position)
            if at >= 0:
                ids += encode(text[position:at], self.specials) + plain(content)
                position = at + len(content)
        return ids + encode(text[position:], self.specials)

    def prompt(self, messages: Sequence[Message], max_len: int | None = None) -> list[int]:
        """Generation prompt for a history ending with a user turn; with ``max_len``, the oldest
        exchanges are left out while it is longer (a system message and the newest user turn stay)."""
        head = list(messages[:1]) if messages and messages[0]["role"] == "system" else []
        turns = list(messages[len(head):])
        if not turns or turns[-1]["role"] != "user":
            raise ValueError("a generation prompt must end with a user turn")
        ids = self.ids(head + turns)
        while max_len is not None and len(ids) > max_len and len(turns) > 2:
            turns = turns[2:]
            ids = self.ids(head + turns)
        return ids

    def _end_of_turn(self) -> list[int]:
        """The special token the template writes right after an assistant reply (none if it refuses both
        probes; a template that does not parse or runs past its budget is an error here, at load)."""
        for head in ([], [{"role": "system", "content": DEFAULT_SYSTEM}]):
            exchange = [*head, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": PROBE}]
            try:
                text = self.text(exchange, add_generation_prompt=False)
            except TemplateRefused:
                continue
            after = text[text.find(PROBE) + len(PROBE):] if PROBE in text else ""
            ids = self.tokenizer.encode_with_specials(after, self.specials)[:1]
            return [i for i in ids if i in self.tokenizer.special_ids.values()]
        return []

    def _stop_ids(self) -> tuple[int, ...]:
        tok = self.tokenizer
        ids = [*tok.generation_eos_ids, *self._end_of_turn(), tok.eot_id]
        return tuple(i for i in dict.fromkeys(ids) if 0 <= i < tok.vocab_size)


def chat_template_for(tokenizer, default_system: str = DEFAULT_SYSTEM) -> ChatTemplate | JinjaChatTemplate:
    """The tokenizer's own chat template when it has one, else ChatML (which needs <|im_start|>/<|im_end|>)."""
    if getattr(tokenizer, "chat_template", None):
        return JinjaChatTemplate(tokenizer)
    return ChatTemplate(tokenizer, default_system)
