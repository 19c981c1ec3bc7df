"""Chat templates from ``tokenizer_config.json``, rendered as transformers' ``apply_chat_template`` does.

The template runs in Jinja's ``ImmutableSandboxedEnvironment`` (no attribute access to Python
internals, no mutation of the inputs) with ``trim_blocks``/``lstrip_blocks``, the
``loopcontrols`` extension, the ``{% generation %}`` tag and transformers' helpers: ``raise_exception(msg)``, a ``tojson``
that does not HTML-escape, ``strftime_now(fmt)``. It sees ``messages``, ``add_generation_prompt``,
``tools``/``documents`` (None) and the tokenizer's special-token strings (``bos_token``, ``eos_token``, ...). A template that
raises, or does not parse, is a :class:`~qwen_cli.errors.UserError` naming the tokenizer directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qwen_cli.errors import UserError


class GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers marks assistant tokens with it): the body as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    @staticmethod
    def _body(caller) -> str:
        return caller()


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """The template compiled in the sandbox (cached: a chat renders the same template every turn)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def render_chat(source: str, messages: Sequence[dict], add_generation_prompt: bool,
                special_tokens: dict[str, str], where: str) -> str:
    """The text of ``messages`` under the template ``source``; ``where`` (the tokenizer directory)
    names the template in errors."""
    try:
        template = compile_template(source)
        return template.render(messages=[dict(m) for m in messages], tools=None, documents=None,
                               add_generation_prompt=add_generation_prompt, **special_tokens)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{where}: chat_template does not parse (line {exc.lineno}: {exc.message})") from None
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise UserError(f"{where}: chat_template refused the conversation: {exc}") from None
