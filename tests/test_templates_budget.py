"""Chat templates are untrusted: each render runs in a worker process with a time and memory budget.

Jinja's sandbox blocks attribute access, not CPU or memory: nested ``range`` loops hang, ``'a' * 10**10``
asks for 10 GB, a self-recursive macro overflows the stack. Here each such template must come back as
one ``UserError`` line naming the tokenizer, within about its budget, without growing this process, and
the next render must work again (the worker is restarted). The common path stays fast.
"""

from __future__ import annotations

import resource
import time

import pytest

from qwen_cli.errors import UserError
from qwen_cli.tokenizer import chat_jinja
from qwen_cli.tokenizer.chat_jinja import TemplateRefused, check_template, render_chat

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MESSAGES = [{"role": "user", "content": "hello " * 50}, {"role": "assistant", "content": "ok"}] * 4
WHERE = "models/hostile"

# (template, what the one-line error says)
HOSTILE = {
    "nested range loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                           "ran past its budget (0.5 s"),
    "string times 10**10": ("{{ 'a' * 10000000000 }}", "needs more than 1024 MiB of memory"),
    "list times 10**9": ("{{ [1] * 1000000000 }}", "needs more than 1024 MiB of memory"),
    "center filter 10**10": ("{{ 'x'|center(10000000000) }}", "needs more than 1024 MiB of memory"),
    "namespace doubling": ("{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                           "{% endfor %}{{ ns.s|length }}", "ran past its budget"),
    "self-recursive macro": ("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", "recurses too deeply"),
    "huge output": ("{% for i in range(100000) %}{{ 'a' * 100 }}{% endfor %}", "renders more than 8,388,608"),
    "does not parse": ("{% for m in messages %}", "does not parse (line 1"),
    "too long a source": ("x" * (chat_jinja.MAX_TEMPLATE_CHARS + 1), "longer than 1,048,576 characters"),
}


@pytest.fixture
def short_budget(monkeypatch):
    monkeypatch.setattr(chat_jinja, "TIME_BUDGET_S", 0.5)


def kib_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_template_is_one_line_within_its_budget(name, short_budget):
    template, message = HOSTILE[name]
    render_chat(CHATML, MESSAGES, True, {}, WHERE)  # the worker is up: only the render is timed
    rss, start = kib_rss(), time.monotonic()
    with pytest.raises(UserError) as error:
        render_chat(template, MESSAGES, True, {}, WHERE)
    text = str(error.value)
    assert text.startswith(f"{WHERE}: chat_template ") and message in text and "\n" not in text, text
    assert not isinstance(error.value, TemplateRefused)  # a broken template, not a refused conversation
    # the wall-clock budget, not the worker's RLIMIT_CPU backstop (which allows it 2 s more)
    assert time.monotonic() - start < chat_jinja.TIME_BUDGET_S + 1.2
    assert kib_rss() - rss < 100_000  # this process did not grow: the worker held the memory
    assert render_chat(CHATML, MESSAGES[:1], True, {}, WHERE).endswith("<|im_start|>assistant\n")


def test_a_template_that_refuses_the_conversation_is_template_refused():
    with pytest.raises(TemplateRefused, match=f"^{WHERE}: chat_template refused the conversation: roles!$"):
        render_chat("{{ raise_exception('roles!') }}", MESSAGES, True, {}, WHERE)
    with pytest.raises(TemplateRefused, match="unsafe"):
        render_chat("{{ messages.__class__.__mro__ }}", MESSAGES, True, {}, WHERE)


def test_render_matches_jinja_in_process_and_sees_the_special_tokens():
    text = render_chat(CHATML + "{{ eos_token }}", MESSAGES, True, {"eos_token": "<|im_end|>"}, WHERE)
    expected = chat_jinja.compile_template(CHATML + "{{ eos_token }}").render(
        messages=MESSAGES, add_generation_prompt=True, eos_token="<|im_end|>")
    assert text == expected and text.count("<|im_start|>") == len(MESSAGES) + 1


def test_the_common_path_stays_fast():
    render_chat(CHATML, MESSAGES, True, {}, WHERE)  # the worker is started by the first render
    start = time.perf_counter()
    for _ in range(200):
        render_chat(CHATML, MESSAGES, True, {}, WHERE)
    per_render = (time.perf_counter() - start) / 200
    assert per_render < 0.005, f"{per_render * 1000:.2f} ms per render"  # measured: about 0.1 ms


def test_a_killed_worker_is_replaced(short_budget):
    render_chat(CHATML, MESSAGES, True, {}, WHERE)
    chat_jinja._WORKER.proc.kill()
    chat_jinja._WORKER.proc.wait()
    with pytest.raises(UserError, match="ran past its budget"):  # the reply never came
        render_chat(CHATML, MESSAGES, True, {}, WHERE)
    assert render_chat(CHATML, MESSAGES[:1], False, {}, WHERE) == "<|im_start|>user\n" + "hello " * 50 + "<|im_end|>\n"


def test_check_template_renders_one_user_turn():
    check_template(CHATML, {}, WHERE)
    with pytest.raises(TemplateRefused, match="no user turns"):
        check_template("{% if messages[0].role == 'user' %}{{ raise_exception('no user turns') }}{% endif %}",
                       {}, WHERE)
