"""`qwen specialize`: ordered stages with their own schedules, context growth that keeps the base's
logits, decontamination in the run's manifest, math SFT masking at 1024, resume mid-stage, errors."""

from __future__ import annotations

import json
import shutil
import signal
import sysconfig
from pathlib import Path

import pytest
import torch
from test_sft import byte_tokenizer

from qwen_cli.checkpoint import load_model, save_model
from qwen_cli.data.shards import BatchLayout
from qwen_cli.errors import UserError
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.recipe import read_toml
from qwen_cli.stages.sft import SFTStage
from qwen_cli.stages.specialize import STAGE_CLASSES, specialize
from qwen_cli.stages.specialize.recipe import grown_config
from qwen_cli.train.optim import lr_at

pytestmark = pytest.mark.usefixtures("one_thread")
STDLIB = Path(sysconfig.get_paths()["stdlib"])
CODE_FILES = ("textwrap.py", "glob.py", "fnmatch.py", "shlex.py", "bisect.py", "heapq.py")
LRS = {"cpt": 2e-3, "sft-a": 1e-3, "sft-b": 5e-4}
STEPS = {"cpt": 34, "sft-a": 17, "sft-b": 50}  # 3% warm-up: 1, 1 and 2 steps


def base_model(root: Path) -> Path:
    """A random tiny model (byte tokenizer) trained at 64 tokens."""
    torch.manual_seed(0)
    tok = byte_tokenizer()
    config = ModelConfig(vocab_size=tok.padded_vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                         intermediate_size=64, max_position_embeddings=64)
    return save_model(root / "base", QwenModel(config), tok)


def planted_benchmarks(root: Path) -> Path:
    """A --data-dir style folder whose one HumanEval 'test item' is textwrap.dedent, re-indented."""
    source = (STDLIB / "textwrap.py").read_text()
    start = source.index("def dedent(")
    item = "\n".join("  " + line for line in source[start : source.index("\ndef ", start + 1)].splitlines())
    folder = root / "bench" / "humaneval"
    folder.mkdir(parents=True)
    row = {"prompt": item, "canonical_solution": "", "test": "", "entry_point": "dedent"}
    (folder / "test.jsonl").write_text(json.dumps(row) + "\n")
    return root / "bench"


def code_recipe(root: Path, base: Path) -> Path:
    corpus = root / "corpus"
    corpus.mkdir(exist_ok=True)
    for name in CODE_FILES:
        shutil.copy(STDLIB / name, corpus / name)
    stages = "".join(f"""
[[stage]]
name = "{name}"
kind = "{'pretrain' if name == 'cpt' else 'sft'}"
[stage.data]
{'sources = [{ shards = "@code", weight = 1.0 }]' if name == 'cpt' else f'train = "@{"explain" if name == "sft-a" else "implement"}"'}
seq_len = {128 if name == 'cpt' else 384}
[stage.optim]
lr = {lr}
[stage.train]
steps = {STEPS[name]}
batch_tokens = {256 if name == 'cpt' else 768}
[stage.sample]
max_new_tokens = 0
""" for name, lr in LRS.items())
    text = f"""
[specialize]
kind = "code"
base = "{base}"
[code]
inputs = ["{corpus}"]
heldout_fraction = 0.3
val_fraction = 0.1
max_instruction_chars = 200
[decontaminate]
benchmarks = ["humaneval"]
data_dir = "{planted_benchmarks(root) if not (root / 'bench').exists() else root / 'bench'}"
[evaluate]
lengths = [64, 128]
code_windows = 2
[defaults.schedule]
warmup_ratio = 0.03
decay = "constant"
[defaults.train]
micro_batch_size = 2
dtype = "float32"
device = "cpu"
peak_flops = 1.0e9
val_batches = 1
[defaults.checkpoint]
every = 40
[defaults.logging]
progress = "none"
{stages}"""
    path = root / "code.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def code_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture (function-scoped) does
    try:
        result = specialize("code", code_recipe(root, base_model(root)), [], root / "run")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0
    return root, result


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_stages_run_in_order_each_from_the_previous_final(code_run):
    root, result = code_run
    stages = result.manifest["stages"]
    assert [s["name"] for s in stages] == list(LRS)
    inits = [read_toml(Path(s["run_dir"]) / "recipe.toml")["init"]["checkpoint"] for s in stages]
    init = root / "run" / "init"
    assert inits == [str(init / "cpt"), str(init / "sft-a"), stages[1]["final"]]  # sft-a grows 128 -> 384
    assert (init / "sft-a" / "model.safetensors").read_bytes() == \
        (Path(stages[0]["final"]) / "model.safetensors").read_bytes()
    assert result.manifest["final"] == stages[2]["final"]


def test_each_stage_warms_up_over_3_percent_then_stays_constant(code_run):
    _, result = code_run
    for stage in result.manifest["stages"]:
        lrs = [m["lr"] for m in metrics(Path(stage["run_dir"])) if "lr" in m]
        peak = LRS[stage["name"]]
        warmup = round(0.03 * STEPS[stage["name"]])
        assert lrs == pytest.approx([peak * (s + 1) / warmup for s in range(warmup)]
                                    + [peak] * (STEPS[stage["name"]] - warmup))  # 3% warm-up, then constant
    schedule = read_toml(Path(result.manifest["stages"][0]["run_dir"]) / "recipe.toml")["schedule"]
    from qwen_cli.recipe import ScheduleSection

    cfg = ScheduleSection(warmup_ratio=schedule["warmup_ratio"], decay=schedule["decay"])
    assert [lr_at(s, 1.0, 100, cfg) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    assert lr_at(99, 1.0, 100, cfg) == 1.0


def test_context_grows_and_keeps_the_base_logits(code_run):
    root, _ = code_run
    base, grown = load_model(root / "base"), load_model(root / "run" / "init" / "cpt")
    assert (grown.config.max_position_embeddings, grown.config.train_length) == (128, 128)
    assert grown.config.rope_theta == base.config.rope_theta
    ids = torch.randint(0, 256, (2, 48))
    with torch.no_grad():
        assert torch.equal(base(ids), grown(ids))


def test_growth_moves_dynamic_ntk_past_the_new_training_length():
    """With dynamic NTK on, the base (trained at 64) rescales RoPE at 100 tokens in eval mode; the grown
    model, trained at 128, must see plain RoPE there, as training (and validation) does."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                         max_position_embeddings=64, rope_ntk="dynamic")
    base = QwenModel(config).eval()
    grown = QwenModel(grown_config(config, 128)).eval()
    grown.load_state_dict(base.state_dict())
    ids = torch.randint(0, 64, (1, 100))
    with torch.no_grad():
        plain = base.train()(ids)
        base.eval()
        assert not torch.allclose(base(ids), plain)
        assert torch.equal(grown(ids), plain)
        assert torch.equal(grown(ids[:, :40]), base(ids[:, :40]))
    assert grown_config(config, 32) is None


def test_decontamination_removes_the_planted_item_and_keeps_the_rest(code_run):
    _, result = code_run
    decon, data = result.manifest["decontamination"], result.manifest["data"]
    assert (decon["checked"], decon["removed"], decon["removed_by_benchmark"]) == (6, 1, {"humaneval": 1})
    assert decon["test_items"] == {"humaneval": 1}
    assert data["train_documents"] + data["heldout_documents"] == 5
    corpus = (Path(result.run_dir) / "data" / "corpus.jsonl").read_text()
    assert "def dedent(" not in corpus and "def translate(" in corpus  # textwrap gone, fnmatch kept
    pairs = [json.loads(line) for line in (Path(result.run_dir) / "data" / "implement.jsonl").read_text().splitlines()]
    assert len(pairs) == data["instruction_pairs"]["implement"] > 0
    scores = result.manifest["evaluation"]["scores"]
    assert set(scores) == {"base", "cpt", "sft-b"} and set(scores["base"]) == {"64", "128"}


class InterruptingSFT(SFTStage):
    """Sends itself SIGINT during the 12th loss computation (mid-stage)."""

    def __init__(self, recipe):
        super().__init__(recipe)
        self.calls = 0

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == 12:
            signal.raise_signal(signal.SIGINT)
        return super().loss(model, batch)


@pytest.mark.slow
def test_resume_mid_stage_is_bit_exact(code_run, tmp_path):
    root, reference = code_run
    recipe, out = root / "code.toml", tmp_path / "run"
    stopped = specialize("code", recipe, [], out, stage_classes={**STAGE_CLASSES, "sft": InterruptingSFT})
    assert stopped.exit_code == 130
    assert [s["exit_code"] for s in stopped.manifest["stages"]] == [0, 130]
    with pytest.raises(UserError, match="already holds a specialisation"):
        specialize("code", recipe, [], out)
    resumed = specialize("code", recipe, [], out, resume=True)
    assert resumed.exit_code == 0
    for name in ("cpt", "sft-a", "sft-b"):
        ours = (out / "stages" / name / "final" / "model.safetensors").read_bytes()
        assert ours == (reference.run_dir / "stages" / name / "final" / "model.safetensors").read_bytes()


def test_math_sft_masks_system_and_user_at_1024(tmp_path):
    pytest.importorskip("mathematics_dataset")
    base = base_model(tmp_path)
    bench = tmp_path / "bench" / "gsm8k"
    bench.mkdir(parents=True)
    (bench / "test.jsonl").write_text(json.dumps({"question": "Is 1 prime?", "answer": "#### False"}) + "\n")
    recipe = tmp_path / "math.toml"
    recipe.write_text(f"""
[specialize]
kind = "math"
base = "{base}"
[math]
modules = ["comparison__pair", "numbers__place_value"]
per_module = 40
[decontaminate]
benchmarks = ["gsm8k"]
data_dir = "{tmp_path / 'bench'}"
[evaluate]
math_items = 4
max_new_tokens = 4
[[stage]]
name = "math-sft"
kind = "sft"
[stage.data]
train = "@math"
seq_len = 1024
[stage.train]
batch_tokens = 4096
micro_batch_size = 4
steps = 1
dtype = "float32"
device = "cpu"
peak_flops = 1.0e9
[stage.logging]
progress = "none"
[stage.sample]
max_new_tokens = 0
""")
    result = specialize("math", recipe, [], tmp_path / "run")
    assert result.exit_code == 0
    assert result.manifest["evaluation"]["scores"]["math-sft"]["items"] == 4
    heldout = (tmp_path / "run" / "data" / "math_heldout" / "test.jsonl").read_text().splitlines()
    train = [json.loads(line) for line in (tmp_path / "run" / "data" / "math_train.jsonl").read_text().splitlines()]
    assert {json.loads(h)["question"] for h in heldout}.isdisjoint(r["messages"][0]["content"] for r in train)
    stage = SFTStage(_stage_recipe(tmp_path / "run"))
    batch = next(iter(stage.train_batches(BatchLayout(0, 1, 4, 1))))
    tok = stage.tokenizer
    assert batch["input_ids"].shape[1] <= 1024 and batch["segment_ids"].max() > 1  # packed rows of 1024
    answers = {r["messages"][1]["content"] for r in train}
    for row in range(batch["labels"].shape[0]):
        labels = batch["labels"][row]
        supervised = tok.decode([int(t) for t in labels[labels != -100]])
        replies = supervised.split("<|im_end|>")[:-1]
        assert replies and all(reply in answers for reply in replies)  # nothing of system or user turns
        assert int(batch["segment_ids"][row].max()) == len(replies)


def _stage_recipe(run_dir: Path):
    from qwen_cli.recipe import load_recipe
    from qwen_cli.stages.sft import SECTIONS

    return load_recipe(run_dir / "stages" / "math-sft" / "recipe.toml", sections=SECTIONS)


def test_recipe_errors_are_one_line(code_run, tmp_path, run_qwen):
    root, _ = code_run
    recipe = root / "code.toml"
    cases = [
        (["math", recipe], "specialize.kind = 'code' but this is 'qwen specialize math'"),
        (["code", recipe, "--set", "nope.train.lr=1"], "no stage named 'nope'"),
        (["code", recipe, "--set", "cpt.optim.lr=-1"], "--set cpt.optim.lr=-1: 'optim.lr' must be > 0"),
        (["code", recipe, "--set", "sft-a.data.train=@nothing"], "names no data set this run builds"),
    ]
    for args, message in cases:
        code, _, err = run_qwen("specialize", *args, "--out", tmp_path / "x")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
    text = recipe.read_text().replace('[stage.optim]\nlr = 0.002', '[stage.init]\ncheckpoint = "x"\n[stage.optim]\nlr = 0.002')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    code, _, err = run_qwen("specialize", "code", bad, "--out", tmp_path / "x")
    assert code == 2 and "init.checkpoint is set by the plan" in err
