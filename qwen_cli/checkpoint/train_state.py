"""Trainer state for exact resume: optimizer, step, data position, RNG streams — no pickle.

A checkpoint has one of two layouts (``layout`` in ``trainer_state.json``). **full** (one process):
a model directory (``qwen_cli.checkpoint.model_dir``: config.json, weights, tokenizer, recipe.toml)
plus three files, all covered by ``checksums.json``:

    optimizer.safetensors   AdamW moments and step counters, named ``state/<param name>/<key>``
    rng.safetensors         per process (rank ``r``): the torch CPU generator (``rank_<r>/torch_cpu``) and
                            that rank's CUDA device's (``rank_<r>/cuda``, when it trains on one), uint8
    trainer_state.json      format, step, total_steps, tokens_seen, the data iterator's position,
                            the optimizer's param groups (hyper-parameters + parameter names),
                            Python's and NumPy's global RNG states (``rng``: one entry per rank)

**sharded** (several processes, ``qwen_cli.checkpoint.dcp``): the model and AdamW tensors as
DCP shards (``.metadata`` + one ``__R_0.distcp`` per rank R, each rank writing its own), plus
``trainer_state.json`` (the param groups included), ``rng.safetensors`` and ``recipe.toml``;
``checksums.json`` covers those small files and the index, and the shard files are checked against
the sizes the index records (hashing terabytes on one rank would take longer than the save). No
model directory: the final model is exported from the shards (``OUT/final`` is a model directory).

Both layouts are keyed by parameter *name* (DCP records each tensor's global shape and its chunks),
so a checkpoint from N processes resumes in M. Every rank's random streams are saved and each rank gets its own
back (ranks draw different numbers: dropout on different data, sampling); ranks beyond the N saved
keep the streams they were seeded with. Checkpoints of format 1 (one set of streams, restored on
every rank) still resume. Only safetensors and JSON are read back (and DCP's index, through an
allow-list: ``dcp.read_index``).

Run directory layout (``OUT`` = ``--out``):

    OUT/recipe.toml                     resolved recipe of the run
    OUT/metrics.jsonl                   one JSON object per logged step / validation
    OUT/checkpoints/step_000100/        full or sharded layout, above (keep-last-k of these)
    OUT/final/                          the finished model (model directory only)
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from qwen_cli.checkpoint import dcp
from qwen_cli.checkpoint.files import verify_checksums
from qwen_cli.errors import UserError
from qwen_cli.fsutil import make_shareable

FORMAT = "qwen_cli.train_state/3"
READABLE = ("qwen_cli.train_state/1", "qwen_cli.train_state/2", FORMAT)  # 1: one set of RNG streams for
# every rank; 2: always the full layout; 3: ``layout`` full or sharded
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
STATE_FILES = (STATE_FILE, OPTIMIZER_FILE, RNG_FILE)  # what a checkpoint holds beyond its model directory
CHECKPOINTS = "checkpoints"
STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class RngState:
    """One process's random streams: torch generators (uint8 tensors) and Python's / NumPy's (JSON)."""

    tensors: dict[str, torch.Tensor]
    json: dict


@dataclass
class TrainState:
    """Scalars of a run at a step boundary, and every rank's RNG streams (None: this process's, as rank 0)."""

    step: int
    total_steps: int
    tokens_seen: int
    data: dict
    rng: list[RngState] | None = None


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step_{step:06d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every ``checkpoints/step_N`` in ascending step order."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints and leftovers of interrupted saves."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return
    for leftover in root.glob(".step_*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if keep_last > 0:
        for _, path in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(path, ignore_errors=True)


def latest_valid_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """Newest checkpoint whose checksums verify, plus one line per newer one that did not."""
    skipped = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checksums(path)
            if not (path / STATE_FILE).is_file():
                raise UserError(f"{path}: no {STATE_FILE}")
            if dcp.is_sharded(path):
                dcp.verify(path)
        except UserError as exc:
            skipped.append(str(exc))
            continue
        return path, skipped
    return None, skipped


def capture_rng(device: torch.device | None = None) -> RngState:
    """This process's streams: torch CPU, ``device``'s CUDA generator (when a CUDA device), Python, NumPy."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return RngState(tensors, {
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
    })


def _set_rng_json(data: dict) -> None:
    py = data["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = data["numpy"]
    np.random.set_state((npy["kind"], np.array(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))


def write_train_state(directory: Path, state: TrainState, optimizer_state: dict, sharded: bool = False) -> None:
    """Write optimizer, RNG and scalar state into a (temporary) checkpoint directory; ``sharded``: the
    optimizer's tensors are in the DCP shards and only its ``param_groups`` are written here."""
    tensors, groups = {}, []
    for name, entries in optimizer_state["state"].items():
        for key, value in entries.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state/{name}/{key}"] = tensor.detach().cpu().contiguous()
    for group in optimizer_state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    if not sharded:
        save_file(tensors, directory / OPTIMIZER_FILE)
        make_shareable(directory / OPTIMIZER_FILE)
    ranks = state.rng if state.rng is not None else [capture_rng()]
    save_file({f"rank_{r}/{key}": tensor.contiguous() for r, rng in enumerate(ranks) for key, tensor in rng.tensors.items()},
              directory / RNG_FILE)
    make_shareable(directory / RNG_FILE)  # safetensors writes 0600; every other file is 0644
    payload = {
        "format": FORMAT,
        "layout": "sharded" if sharded else "full",
        "step": state.step,
        "total_steps": state.total_steps,
        "tokens_seen": state.tokens_seen,
        "data": state.data,
        "param_groups": groups,
        "rng": [rng.json for rng in ranks],
    }
    (directory / STATE_FILE).write_text(json.dumps(payload, indent=1))


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def read_train_state(directory: Path) -> tuple[TrainState, dict, dict]:
    """(scalars, optimizer state dict by parameter name, raw JSON) of a verified checkpoint; the optimizer's
    ``state`` is empty in a sharded checkpoint (its tensors are loaded from the shards)."""
    path = directory / STATE_FILE
    try:
        payload = json.loads(path.read_text())
        if payload.get("format") not in READABLE:
            raise UserError(f"{path}: unsupported format {payload.get('format')!r} (expected {FORMAT})")
        state = TrainState(payload["step"], payload["total_steps"], payload["tokens_seen"], payload["data"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: invalid trainer state ({exc})") from None
    nested: dict[str, dict] = {}
    tensors = {} if payload.get("layout") == "sharded" else _load_safetensors(directory / OPTIMIZER_FILE)
    for key, tensor in tensors.items():
        _, name, field = key.split("/", 2)
        nested.setdefault(name, {})[field] = tensor
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in payload["param_groups"]]
    return state, {"state": nested, "param_groups": groups}, payload


def restore_rng(directory: Path, payload: dict, rank: int = 0, device: torch.device | None = None) -> bool:
    """Put rank ``rank``'s streams back where the checkpoint left them (its CUDA generator on ``device``);
    False when the checkpoint holds no streams for that rank (it was written by fewer processes)."""
    tensors = _load_safetensors(directory / RNG_FILE)
    saved = payload["rng"]
    if isinstance(saved, dict):  # format 1: one set of streams (rank 0's) for every rank
        torch.set_rng_state(tensors["torch_cpu"])
        if torch.cuda.is_available():
            cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
        _set_rng_json(saved)
        return True
    if rank >= len(saved):
        return False
    torch.set_rng_state(tensors[f"rank_{rank}/torch_cpu"])
    cuda = tensors.get(f"rank_{rank}/cuda")
    if cuda is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    _set_rng_json(saved[rank])
    return True
