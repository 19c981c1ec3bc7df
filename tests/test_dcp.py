"""Sharded checkpoints (``checkpoint.dcp``) and the streaming writers around them.

Oracles: the model exported tensor by tensor from DCP shards is byte-identical to ``save_model`` of
the same model, and a model directory read back lazily gives the model's own tensors; the streamed
safetensors writer's files read back through the ``safetensors`` library; an asynchronous save has copied the tensors when it returns (training goes on mutating
them); a ``step_N`` directory appears only once complete and a damaged one is skipped by
``--resume`` naming the file; DCP's pickled index is read with an allow-list. The slow test measures
peak memory of the export, ``load_model`` and both resumes in fresh processes (printed with ``-s``).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen_cli.checkpoint import dcp, load_model, save_model
from qwen_cli.checkpoint import train_state as ts
from qwen_cli.checkpoint.export import ModelDirTensors, write_model_state
from qwen_cli.checkpoint.files import INDEX_FILE, WEIGHTS_FILE, write_safetensors
from qwen_cli.errors import UserError
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.train import checkpointing as ckpt
from qwen_cli.train import distributed

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _model(**overrides) -> QwenModel:
    torch.manual_seed(0)
    fields = {"vocab_size": 256, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
              "intermediate_size": 96, **overrides}
    return QwenModel(ModelConfig(**fields)).eval()


def test_export_from_shards_is_byte_identical_to_a_direct_save(tmp_path):
    model = _model()
    save_model(tmp_path / "direct", model)
    dcp.save(tmp_path / "shards", {dcp.MODEL: model.state_dict()})
    shards = dcp.ShardedTensors(tmp_path / "shards")
    assert shards.specs == {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    for name in ("direct", "exported"):
        (tmp_path / name).mkdir(exist_ok=True)
    write_model_state(tmp_path / "exported", shards, model.config)
    for name in (WEIGHTS_FILE, "config.json"):
        assert (tmp_path / "exported" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name
    (tmp_path / "split").mkdir()
    write_model_state(tmp_path / "split", shards, model.config, shard_bytes=40_000)
    assert len(set(json.loads((tmp_path / "split" / INDEX_FILE).read_text())["weight_map"].values())) > 1
    loaded = load_model(tmp_path / "split")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize("tied", [False, True])
def test_a_model_directory_read_lazily_gives_our_tensors(tmp_path, tied):
    model = _model(tie_word_embeddings=tied)
    save_model(tmp_path / "m", model)
    lazy = ModelDirTensors(tmp_path / "m", model.config)
    assert set(lazy) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(lazy[name], tensor), name
    tensors = load_file(tmp_path / "m" / WEIGHTS_FILE)
    del tensors["model.layers.1.self_attn.k_proj.bias"]
    save_file(tensors, tmp_path / "m" / WEIGHTS_FILE)
    with pytest.raises(UserError, match=r"m: tensor model.layers.1.self_attn.k_proj.bias missing"):
        ModelDirTensors(tmp_path / "m", model.config)


def test_streamed_safetensors_read_back_through_the_library(tmp_path):
    tensors = {"bf16": torch.randn(3, 5).bfloat16(), "i64": torch.arange(7), "flag": torch.tensor([True, False]),
               "scalar": torch.tensor(2.5), "f32": torch.randn(2, 2, 2)}
    specs = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    seen = []
    write_safetensors(tmp_path / "a.safetensors", specs, tensors.__getitem__, seen.append)
    assert seen == list(tensors)
    back = load_file(tmp_path / "a.safetensors")
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], v) for k, v in tensors.items())
    with pytest.raises(ValueError, match=r"tensor bf16: produced \(3, 5\) torch.float64, announced"):
        write_safetensors(tmp_path / "b.safetensors", specs, lambda name: tensors[name].double())


def test_async_save_copies_the_tensors_before_it_returns(tmp_path):
    weight = torch.zeros(4096)
    future = dcp.save(tmp_path / "ck", {dcp.MODEL: {"w": weight}}, asynchronous=True)
    weight.fill_(1.0)  # the next optimizer step, while the checkpoint is being written
    future.result()
    assert torch.equal(dcp.ShardedTensors(tmp_path / "ck")["w"], torch.zeros(4096))


def _sharded_checkpoint(run_dir: Path, step: int, asynchronous: bool = False) -> ckpt.ShardedSave:
    weight = torch.arange(64.0).reshape(8, 8)
    state = ts.TrainState(step, 10, 100 * step, {"sequences": 4 * step, "seed": 0})
    tensors = {dcp.MODEL: {"w": weight}, dcp.OPTIM: {"state": {"model.w": {"exp_avg": weight * 2}}}}
    groups = [{"lr": 0.1, "betas": (0.9, 0.95), "params": ["model.w"]}]
    return ckpt.start_sharded(run_dir, state, tensors, groups, "[train]\nsteps = 10\n", keep_last=2, main=True,
                              asynchronous=asynchronous)


def test_a_sharded_checkpoint_appears_only_when_complete(tmp_path):
    pending = _sharded_checkpoint(tmp_path, 2, asynchronous=True)
    assert ts.list_checkpoints(tmp_path) == [] and pending.tmp.is_dir()
    path = pending.wait()
    assert ts.list_checkpoints(tmp_path) == [(2, path)] and not pending.tmp.exists()
    assert ts.latest_valid_checkpoint(tmp_path) == (path, [])
    state, optim, payload = ts.read_train_state(path)
    assert (state.step, payload["layout"], optim["param_groups"][0]["betas"]) == (2, "sharded", (0.9, 0.95))
    sums = json.loads((path / "checksums.json").read_text())
    assert dcp.METADATA_FILE in sums and not any(name.endswith(dcp.SHARD_SUFFIX) for name in sums)
    for step in (4, 6):
        _sharded_checkpoint(tmp_path, step).wait()
    assert [s for s, _ in ts.list_checkpoints(tmp_path)] == [4, 6]  # keep_last = 2


def test_damaged_sharded_checkpoints_are_skipped_naming_the_file(tmp_path):
    for step in (2, 4):
        _sharded_checkpoint(tmp_path, step).wait()
    newest = ts.checkpoint_dir(tmp_path, 4)
    shard, = dcp.shard_files(newest)
    shard.write_bytes(shard.read_bytes()[:-10])
    path, skipped = ts.latest_valid_checkpoint(tmp_path)
    assert path == ts.checkpoint_dir(tmp_path, 2) and f"{shard}: truncated" in skipped[0]
    (path / dcp.METADATA_FILE).write_bytes(b"garbage")
    assert ts.latest_valid_checkpoint(tmp_path)[0] is None


def test_the_dcp_index_is_read_with_an_allow_list(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / dcp.METADATA_FILE).write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match=r"\.metadata: unreadable DCP index .*system is not allowed"):
        dcp.read_index(tmp_path)
    assert not marker.exists()


_PEAK = """
import sys, torch
from pathlib import Path
from qwen_cli.checkpoint import dcp, load_model
from qwen_cli.checkpoint.export import ModelDirTensors, write_model_state
from qwen_cli.checkpoint import train_state as ts
from qwen_cli.checkpoint.export import ModelDirTensors
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.train import distributed
torch.set_num_threads(1)
kind, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
config = ModelConfig(**{CONFIG})
if kind.startswith("resume"):  # what the trainer holds before it restores: the model and AdamW's moments
    model = QwenModel(config)
    optimizer = torch.optim.AdamW(model.parameters())
    tensors, state, groups = distributed.sharded_state(model, optimizer)
def peak():  # VmHWM: this process's peak resident memory (ru_maxrss would carry the parent's over fork + exec)
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024
Path("/proc/self/clear_refs").write_text("5")  # the peak so far (AdamW's set-up allocates gradients) is forgotten
before = peak()
if kind == "export":
    out.mkdir()
    write_model_state(out, dcp.ShardedTensors(src), config)
elif kind == "resume":  # the trainer's restore of a sharded checkpoint: read into the live tensors
    dcp.load(src, {dcp.MODEL: tensors, dcp.OPTIM: {"state": state}})
    distributed.load_sharded_state(model, optimizer, tensors, state, groups)
    assert torch.equal(model.norm.weight, torch.full_like(model.norm.weight, 0.5))
elif kind == "resume-full":  # the trainer's restore of a single-process checkpoint (model directory + AdamW)
    _, optim_state, _ = ts.read_train_state(src)
    distributed.copy_model_state(model, ModelDirTensors(src, config), src)
    distributed.load_full_optimizer_state(model, optimizer, optim_state)
    assert torch.equal(model.norm.weight, torch.full_like(model.norm.weight, 0.5))
else:
    model = load_model(src)
print(peak() - before)
"""


@pytest.mark.slow
def test_peak_memory_of_the_export_and_of_load_model(tmp_path):
    """A ~330 MiB model (fp32): exporting it from DCP shards holds a few of its largest tensor (DCP reads a
    chunk's bytes, unpickles them and copies them into the target), never the model; ``load_model``
    holds about one copy; restoring a checkpoint (model + AdamW; sharded, or a single process's model
    directory read tensor by tensor) adds a few tensors to what the trainer already holds."""
    fields = {"vocab_size": 4096, "hidden_size": 1024, "num_layers": 6, "num_heads": 8, "num_kv_heads": 8,
              "intermediate_size": 2816}
    with torch.device("meta"):
        size = sum(p.numel() * 4 for p in QwenModel(ModelConfig(**fields)).parameters())
    model = QwenModel(ModelConfig(**fields))
    largest = max(p.numel() * 4 for p in model.parameters())
    with torch.no_grad():
        model.norm.weight.fill_(0.5)
    optimizer = torch.optim.AdamW(model.parameters())
    tensors, state, _ = distributed.sharded_state(model, optimizer)
    dcp.save(tmp_path / "shards", {dcp.MODEL: tensors, dcp.OPTIM: {"state": state}})
    save_model(tmp_path / "direct", model)
    ts.write_train_state(tmp_path / "direct", ts.TrainState(1, 2, 0, {}), distributed.full_optimizer_state(model, optimizer))
    del model, optimizer, tensors, state
    script = _PEAK.replace("{CONFIG}", repr(fields))
    peaks = {}
    kinds = {"export": "shards", "load": "direct", "resume": "shards", "resume-full": "direct"}
    for kind, src in ((kind, tmp_path / name) for kind, name in kinds.items()):
        proc = subprocess.run([sys.executable, "-c", script, kind, str(src), str(tmp_path / f"out-{kind}")],
                              cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        peaks[kind] = int(proc.stdout.split()[-1])
    print(f"\nmodel {size / 2**20:.0f} MiB, largest tensor {largest / 2**20:.0f} MiB; peak RSS added: "
          f"export {peaks['export'] / 2**20:.0f} MiB ({peaks['export'] / size:.2f}x), "
          f"load_model {peaks['load'] / 2**20:.0f} MiB ({peaks['load'] / size:.2f}x), sharded resume (model + "
          f"AdamW, {3 * size / 2**20:.0f} MiB) {peaks['resume'] / 2**20:.0f} MiB ({peaks['resume'] / size:.2f}x), "
          f"full-layout resume {peaks['resume-full'] / 2**20:.0f} MiB ({peaks['resume-full'] / size:.2f}x)")
    assert (tmp_path / "out-export" / WEIGHTS_FILE).read_bytes() == (tmp_path / "direct" / WEIGHTS_FILE).read_bytes()
    assert peaks["export"] < 6 * largest < size / 2
    assert peaks["load"] < 1.25 * size
    assert peaks["resume"] < 6 * largest and peaks["resume-full"] < 6 * largest
