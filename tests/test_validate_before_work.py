"""Bad input, tried as an attacker would: every case must end before any work with one line on stderr
naming the file, key or line, exit code 2, and nothing written.

The cases (issue 25): hostile or broken chat templates in a model directory and in GGUF metadata,
GGUF tokenizer metadata that is garbage, NaN/Inf weights, special ids outside the vocabulary,
``extend-context`` option lists that are empty or lengths and windows far outside any context,
JSONL lines nested deeper than the readers allow, held-out files of ``rlhf dpo``/``reward`` that used
to be read only after training, a ``specialize`` base whose weights are damaged, and usage errors.
Each runs ``qwen`` in-process (``run_qwen``); the template budget is cut to half a second.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import pytest
from llama_fixtures import save_llama_dir, tiny_llama, tiny_tokenizer, write_gguf
from rlhf_fixtures import separable_pairs, tiny_checkpoint, write_toml
from safetensors.torch import load_file, save_file
from test_rlhf_reward import REWARD_RECIPE
from test_specialize import code_recipe

from qwen_cli.checkpoint.files import write_checksums
from qwen_cli.data.chat_format import read_chat_jsonl
from qwen_cli.data.jsonl import MAX_DEPTH, read_jsonl, too_deep
from qwen_cli.data.preference import read_prompts
from qwen_cli.errors import UserError
from qwen_cli.tokenizer import chat_jinja

HANG = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
HUGE = "{{ 'a' * 10000000000 }}"
RECURSIVE = "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}"
DEEP = "[" * 5000 + "]" * 5000  # Python's json raises RecursionError on this
E20 = "100000000000000000000"

DPO_RECIPE = """
[init]
checkpoint = "{base}"
[data]
train = ["{train}"]
test = ["{test}"]
eval_prompts = "{prompts}"
seq_len = 64
[optim]
lr = 3e-3
[train]
batch_tokens = 512
micro_batch_size = 8
steps = 4
dtype = "float32"
device = "cpu"
peak_flops = 1e9
[logging]
progress = "none"
"""


@dataclass
class Env:
    """What a case builds its input from: a fresh folder, shared models, and helpers."""

    tmp: Path
    shared: dict
    monkeypatch: pytest.MonkeyPatch

    def copy(self, name: str) -> Path:
        return Path(shutil.copytree(self.shared[name], self.tmp / name))

    def file(self, name: str, text: str) -> Path:
        (self.tmp / name).write_text(text)
        return self.tmp / name

    def gguf(self, **change: Callable) -> Path:
        """A GGUF written with ``change[method](value)`` passed to those ``GGUFWriter`` methods."""
        for method, transform in change.items():
            original = getattr(gguf.GGUFWriter, method)
            self.monkeypatch.setattr(gguf.GGUFWriter, method,
                                     lambda writer, value, _o=original, _t=transform: _o(writer, _t(value)))
        return write_gguf(self.shared["llama_model"], self.shared["tok"], self.tmp / "model.gguf")

    def llama_template(self, template: str) -> Path:
        directory = self.copy("llama")
        (directory / "chat_template.jinja").write_text(template)
        return directory

    def nonfinite(self, value: float) -> Path:
        directory = self.copy("ckpt")
        state = load_file(directory / "model.safetensors")
        name = sorted(state)[0]
        state[name].view(-1)[3] = value
        save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
        (directory / "checksums.json").unlink()
        write_checksums(directory)
        return directory

    def pairs(self) -> Path:
        return separable_pairs(self.tmp / "pairs.jsonl", 40, seed=1)

    def reward(self, train: Path, test: Path, pmp: Path | None = None) -> Path:
        return write_toml(self.tmp / "reward.toml", REWARD_RECIPE.format(
            base=self.shared["ckpt"], test=test, train=train, pmp=f'"{pmp}"' if pmp else "", pmp_steps=2))

    def dpo(self, test: Path, prompts: Path | None = None) -> Path:
        prompts = prompts or self.file("prompts.jsonl", '{"prompt": "Say hi", "answer": "hi"}\n')
        return write_toml(self.tmp / "dpo.toml", DPO_RECIPE.format(base=self.shared["ckpt"], train=self.pairs(),
                                                                    test=test, prompts=prompts))


def extend(env: Env, *options: str) -> tuple[list, list[Path]]:
    out = env.tmp / "extended"
    corpus = env.file("corpus.txt", "def f(x):\n    return x\n" * 20)
    return ["extend-context", env.shared["ckpt"], "--out", out, "--corpus", corpus, *options], [out]


def convert(source: Path, env: Env, *options: str) -> tuple[list, list[Path]]:
    return ["convert", source, env.tmp / "converted", *options], [env.tmp / "converted"]


def twin_test_sets(env: Env) -> str:
    """Two test files both shown as ``pairs``, in the recipe's one-item ``test`` list."""
    paths = []
    for folder in ("a", "b"):
        (env.tmp / folder).mkdir()
        paths.append(separable_pairs(env.tmp / folder / "pairs.jsonl", 4, seed=2))
    return '", "'.join(map(str, paths))


def agent_eval(env: Env, task: str) -> tuple[list, list[Path]]:
    out = env.tmp / "scores.json"
    return ["eval", env.shared["ckpt"], "--tasks", task, "--data", env.file("deep.jsonl", DEEP), "--out", out], [out]


def specialize_damaged(env: Env) -> tuple[list, list[Path]]:
    base = env.copy("ckpt")
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + bytes(64))  # the last values overwritten
    return ["specialize", "code", code_recipe(env.tmp, base), "--out", env.tmp / "run"], [env.tmp / "run"]


# name -> (build(env) -> (args, paths that must not exist), what the one line must say)
CASES: dict[str, tuple[Callable[[Env], tuple[list, list[Path]]], str]] = {
    "convert: template with nested range loops": (
        lambda e: convert(e.llama_template(HANG), e), "chat_template ran past its budget (0.5 s"),
    "convert: template asking for 10 GB": (
        lambda e: convert(e.llama_template(HUGE), e), "needs more than 1024 MiB of memory"),
    "convert: self-recursive macro": (lambda e: convert(e.llama_template(RECURSIVE), e), "recurses too deeply"),
    "convert: template that does not parse": (
        lambda e: convert(e.llama_template("{% if %}"), e), "chat_template does not parse (line 1"),
    "convert: template refusing one user turn": (
        lambda e: convert(e.llama_template("{{ raise_exception('no chat') }}"), e),
        "chat_template refused the conversation: no chat"),
    "convert: GGUF template with nested range loops": (
        lambda e: convert(e.gguf(add_chat_template=lambda _: HANG), e),
        "(metadata tokenizer.chat_template): chat_template ran past its budget"),
    "convert: GGUF garbage merges": (
        lambda e: convert(e.gguf(add_token_merges=lambda m: ["zzqq xxyy", *m]), e),
        "metadata tokenizer.ggml.merges[0] 'zzqq xxyy' is not two tokens"),
    "convert: GGUF merge without a space": (
        lambda e: convert(e.gguf(add_token_merges=lambda m: ["Ġt", *m]), e), "tokenizer.ggml.merges[0] 'Ġt'"),
    "convert: GGUF short token list": (
        lambda e: convert(e.gguf(add_token_list=lambda t: t[:100]), e), "metadata tokenizer.ggml.merges["),
    "convert: GGUF bos id past the tokens": (
        lambda e: convert(e.gguf(add_bos_token_id=lambda _: 10**6), e),
        "metadata tokenizer.ggml.bos_token_id 1000000 is not an index into tokenizer.ggml.tokens (384 tokens)"),
    "convert: config.json bos_token_id past the embedding": (
        lambda e: convert(edit_json(e.copy("llama") / "config.json", bos_token_id=10**6), e),
        "config.json: bos_token_id 1000000 is not a token id of the model (0 to 383)"),
    "convert: NaN weight": (lambda e: convert(e.nonfinite(float("nan")), e), "holds NaN or Inf values"),
    "convert: Inf weight": (lambda e: convert(e.nonfinite(float("inf")), e), "(pass --allow-nonfinite"),
    "extend-context: --lengths ''": (lambda e: extend(e, "--lengths", ""), "--lengths '': empty"),
    "extend-context: --methods ''": (lambda e: extend(e, "--methods", ""), "--methods '': empty"),
    "extend-context: --windows ''": (lambda e: extend(e, "--windows", " ; "), "--windows ' ; ': empty"),
    "extend-context: --lengths 10^9": (
        lambda e: extend(e, "--lengths", "16,1000000000"), "1,000,000,000 tokens is outside 0 to 1,048,576"),
    "extend-context: --lengths not numbers": (lambda e: extend(e, "--lengths", "a,b"), "a comma list of token"),
    "extend-context: --window 10^20": (lambda e: extend(e, "--window", f"{E20}@1"), f"--window '{E20}'"),
    "extend-context: --windows 10^20": (lambda e: extend(e, "--windows", f"T@1;{E20}@1"), "tokens is outside"),
    "extend-context: --train-length 10^20": (
        lambda e: extend(e, "--train-length", E20), "--train-length 100000000000000000000"),
    "extend-context: --max-length 10^9": (lambda e: extend(e, "--max-length", "1000000000"), "--max-length"),
    "rlhf score: a deeply nested line": (
        lambda e: (["rlhf", "score", e.shared["ckpt"], "--pairs", e.file("deep.jsonl", DEEP)], []),
        f"deep.jsonl:1: not a JSON object (nested deeper than {MAX_DEPTH} levels)"),
    "eval tool-use: a deeply nested --data line": (lambda e: agent_eval(e, "tool-use"), "deep.jsonl:1: not a JSON"),
    "eval code-interpreter: a deeply nested --data line": (
        lambda e: agent_eval(e, "code-interpreter"), "deep.jsonl:1: not a JSON object (nested deeper"),
    "rlhf reward: a deeply nested training line": (
        lambda e: (["rlhf", "reward", e.reward(e.file("deep.jsonl", DEEP), e.pairs()), "--out", e.tmp / "run"],
                   [e.tmp / "run"]), "deep.jsonl:1: not a JSON object (nested deeper"),
    "rlhf reward: bad data.test": (
        lambda e: (["rlhf", "reward", e.reward(e.pairs(), e.file("test.jsonl", '{"prompt": "x"}\n')), "--out",
                    e.tmp / "run"], [e.tmp / "run"]), "test.jsonl:1: missing field 'chosen', 'rejected'"),
    "rlhf reward: bad rm.train after a good pmp phase": (
        lambda e: (["rlhf", "reward", e.reward(e.file("rm.jsonl", "{\n"), e.pairs(), pmp=e.pairs()), "--out",
                    e.tmp / "run"], [e.tmp / "run"]), "rm.jsonl:1: not a JSON object"),
    "rlhf dpo: bad data.test": (
        lambda e: (["rlhf", "dpo", e.dpo(e.file("test.jsonl", '{"prompt": "x", "chosen": "a"}\n')), "--out",
                    e.tmp / "run"], [e.tmp / "run"]), "test.jsonl:1: missing field 'rejected'"),
    "rlhf dpo: deeply nested data.test": (
        lambda e: (["rlhf", "dpo", e.dpo(e.file("deep.jsonl", DEEP)), "--out", e.tmp / "run"], [e.tmp / "run"]),
        "deep.jsonl:1: not a JSON object (nested deeper"),
    "rlhf dpo: two test sets with one name": (
        lambda e: (["rlhf", "dpo", e.dpo(twin_test_sets(e)), "--out", e.tmp / "run"], [e.tmp / "run"]),
        "two test sets are named 'pairs'"),
    "rlhf dpo: missing data.eval_prompts": (
        lambda e: (["rlhf", "dpo", e.dpo(e.pairs(), e.tmp / "absent.jsonl"), "--out", e.tmp / "run"],
                   [e.tmp / "run"]), "absent.jsonl: unreadable"),
    "specialize: base weights overwritten": (specialize_damaged, "model.safetensors: checksum mismatch"),
    "usage: unknown option": (lambda e: (["tokenize", "train", "--bogus"], []), "No such option: --bogus"),
    "usage: missing argument": (lambda e: (["extend-context"], []), "Missing argument 'checkpoint'. (see 'qwen extend-context --help')"),
    "usage: option without its value": (lambda e: (["convert", "a", "b", "--dtype"], []), "--dtype"),
}


def edit_json(path: Path, **change) -> Path:
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    return path.parent


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shared")
    tok = tiny_tokenizer()
    model = tiny_llama(False, seed=21)
    return {"ckpt": tiny_checkpoint(root / "ckpt"), "tok": tok, "llama_model": model,
            "llama": save_llama_dir(model, tok, root / "llama")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(name, shared, tmp_path, monkeypatch, run_qwen, one_thread):
    monkeypatch.setattr(chat_jinja, "TIME_BUDGET_S", 0.5)
    build, message = CASES[name]
    args, outputs = build(Env(tmp_path, shared, monkeypatch))
    code, _, err = run_qwen(*args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert [path for path in outputs if path.exists()] == []


def test_nonfinite_weights_convert_when_allowed(shared, tmp_path, monkeypatch, run_qwen):
    source = Env(tmp_path, shared, monkeypatch).nonfinite(float("nan"))
    code, _, err = run_qwen("convert", source, tmp_path / "out", "--allow-nonfinite")
    assert code == 0, err
    assert load_file(tmp_path / "out" / "model.safetensors")[sorted(load_file(source / "model.safetensors"))[0]].isnan().any()


def test_a_good_template_and_ids_still_convert(shared, tmp_path, run_qwen):
    """The checks refuse only what is wrong: the released directory and GGUF convert as before."""
    code, _, err = run_qwen("convert", shared["llama"], tmp_path / "out")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "config.json").read_text())["bos_token_id"] == 1


@pytest.mark.parametrize("line, deep", [
    ("[" * MAX_DEPTH + "]" * MAX_DEPTH, False), ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), True),
    ("[" + "[], " * 100 + "[]]", False),  # many brackets, depth 2
    ('["' + "[" * 100 + '"]', False),  # brackets inside a string
    ('["\\"' + "[" * 100 + '"]', False),  # ... after an escaped quote
    ("[" * (MAX_DEPTH - 1) + '{"a": [1]}' + "]" * (MAX_DEPTH - 1), True),  # objects count too
])
def test_too_deep_counts_arrays_and_objects_not_strings(line, deep):
    assert too_deep(line) is deep


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1])
def test_every_jsonl_reader_stops_at_the_depth_limit(depth, tmp_path):
    """The shared reader, the chat-data reader and the prompt reader: depth 64 reads, 65 is one line."""
    value = "[" * (depth - 1) + "]" * (depth - 1)
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "p", "messages": [{"role": "user", "content": "x"},
                                                                {"role": "assistant", "content": "y"}]})[:-1]
                    + f', "deep": {value}}}\n')
    readers = [read_jsonl, read_prompts, read_chat_jsonl]
    for reader in readers:
        if depth <= MAX_DEPTH:
            reader(path)
        else:
            with pytest.raises(UserError, match=f"{path}:1: .*nested deeper than {MAX_DEPTH} levels"):
                reader(path)


def test_chat_refuses_a_template_past_its_budget_at_load(shared, tmp_path, monkeypatch):
    """A template that hangs fails when the chat loads it (probing its end-of-turn token); one that only
    refuses the probe conversations loads, and refuses a real conversation with one line."""
    from qwen_cli.data.jinja_chat import chat_template_for
    from qwen_cli.tokenizer import load_tokenizer
    from qwen_cli.tokenizer.chat_jinja import TemplateRefused

    monkeypatch.setattr(chat_jinja, "TIME_BUDGET_S", 0.5)
    env = Env(tmp_path, shared, monkeypatch)
    with pytest.raises(UserError, match="chat_template ran past its budget"):
        chat_template_for(load_tokenizer(env.llama_template(HANG)))
    shutil.rmtree(tmp_path / "llama")
    template = chat_template_for(load_tokenizer(env.llama_template("{{ raise_exception('no chat') }}")))
    with pytest.raises(TemplateRefused, match="refused the conversation: no chat$"):
        template.prompt([{"role": "user", "content": "hi"}])
