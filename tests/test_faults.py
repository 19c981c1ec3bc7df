"""Failed writes (a full disk, a directory in the way): one line naming the output, nothing half-written.

A full disk is simulated: the write (a file object's write, or ``safetensors``' ``save_file``, which
raises ``SafetensorError('… (os error 28)')`` on a real full disk) is made to fail with ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from train_fixtures import TINY_OVERRIDES, TINY_RECIPE

from qwen_cli.errors import UserError
from qwen_cli.fsutil import WriteError, atomic_dir, atomic_file, check_writable
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.tokenizer import Tokenizer

FULL = os.strerror(errno.ENOSPC)  # "No space left on device"
RUST_FULL = f"Error while serializing: I/O error: {FULL} (os error 28)"  # safetensors' message


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, FULL)


def safetensors_disk_full(*args, **kwargs):
    raise SafetensorError(RUST_FULL)


def open_disk_full(path, mode="r", *args, **kwargs):
    """``open`` where every file opened for writing fails as on a full disk (reads go through)."""
    if "w" in mode:
        raise OSError(errno.ENOSPC, FULL, str(path))
    return open(path, mode, *args, **kwargs)


def leftovers(directory: Path) -> list[str]:
    """Temporary names our atomic writes would have left behind."""
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def tiny_model_dir(path: Path) -> Path:
    from qwen_cli.checkpoint import save_model

    config = ModelConfig(vocab_size=512, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                         max_position_embeddings=64)
    torch.manual_seed(0)
    return save_model(path, QwenModel(config), Tokenizer({bytes([i]): i for i in range(256)}, name="bytes"))


# ----- fsutil ------------------------------------------------------------------------------------

def test_atomic_file_full_disk_names_the_target_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(WriteError) as info, atomic_file(target) as handle:
        handle.write("new, half")
        disk_full()
    assert str(info.value) == f"{target}: cannot write ({FULL})" and info.value.exit_code == 2
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_atomic_file_onto_a_directory_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match=r"cannot write \(Is a directory\)"), atomic_file(tmp_path):
        pytest.fail("the block must not run")
    assert leftovers(tmp_path.parent) == []


def test_atomic_dir_rust_writer_full_disk(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "kept").write_text("previous version")
    with pytest.raises(WriteError) as info, atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        safetensors_disk_full()
    assert str(info.value) == f"{target}: cannot write ({FULL})"
    assert [p.name for p in target.iterdir()] == ["kept"] and leftovers(tmp_path) == []


def test_a_file_failing_inside_a_directory_names_the_directory(tmp_path: Path) -> None:
    """tokenize train: the tokenizer's files are atomic files inside the atomic output directory."""
    target = tmp_path / "tok"
    with pytest.raises(WriteError) as info, atomic_dir(target) as tmp, atomic_file(tmp / "qwen.tiktoken") as handle:
        handle.write("x")
        disk_full()
    assert str(info.value) == f"{target}: cannot write ({FULL})"
    assert not target.exists() and leftovers(tmp_path) == []


def test_other_errors_in_the_block_pass_through(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="^no documents$"), atomic_dir(tmp_path / "a"):
        raise UserError("no documents")
    with pytest.raises(ValueError), atomic_file(tmp_path / "b"):
        raise ValueError("a bug")
    missing = tmp_path / "missing.txt"
    with pytest.raises(WriteError, match=f"No such file or directory: {missing}"), atomic_dir(tmp_path / "c"):
        missing.read_text()  # a read that failed: the file it names is shown
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_rename_puts_the_previous_directory_back(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "final"
    target.mkdir()
    (target / "weights").write_text("previous")
    real_replace = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(WriteError, match=r"cannot write \(Input/output error\)"), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "previous" and leftovers(tmp_path) == []


def test_check_writable_creates_nothing(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper" / "out.json")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WriteError, match=r"cannot write \(Is a directory\)"):
        check_writable(tmp_path)
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    with pytest.raises(WriteError, match=f"cannot write \\({blocker} is not a directory\\)"):
        check_writable(blocker / "out.json")


# ----- the commands ------------------------------------------------------------------------------

def test_pretrain_full_disk_at_a_checkpoint_is_one_line(shards: Path, tmp_path: Path, run_qwen, monkeypatch,
                                                        one_thread) -> None:
    import qwen_cli.checkpoint.train_state as train_state

    monkeypatch.setattr(train_state, "save_file", safetensors_disk_full)  # the optimizer state
    out = tmp_path / "run"
    sets = [arg for item in (*TINY_OVERRIDES, f"data.shards={shards}", "train.steps=4") for arg in ("--set", item)]
    code, _, err = run_qwen("pretrain", TINY_RECIPE, *sets, "--out", out)
    assert code == 2
    assert err.strip().splitlines()[-1] == f"error: {out}/checkpoints/step_000002: cannot write ({FULL})"
    assert "Traceback" not in err and list((out / "checkpoints").iterdir()) == []


def test_convert_full_disk_is_one_line(tmp_path: Path, run_qwen, monkeypatch) -> None:
    import qwen_cli.checkpoint.files as files

    src = tiny_model_dir(tmp_path / "src")
    monkeypatch.setattr(files, "open", open_disk_full, raising=False)  # the streamed safetensors writer
    code, _, err = run_qwen("convert", src, tmp_path / "dst")
    assert (code, err) == (2, f"error: {tmp_path / 'dst'}: cannot write ({FULL})\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_chat_save_failures_are_reported_and_the_session_goes_on(tmp_path: Path, capsys, monkeypatch) -> None:
    from rich.console import Console

    from qwen_cli.checkpoint import load
    from qwen_cli.inference.chat_session import REPLY_SEPARATOR, ChatSession, run_loop

    session = ChatSession(*load(tiny_model_dir(tmp_path / "model")), max_new_tokens=3)
    full = tmp_path / "full.json"
    lines = iter([f"/save {tmp_path}", "hi", f"/save {full}", "again", f"/save {tmp_path / 'ok.json'}"])
    real_dump, calls = json.dump, []

    def dump(obj, handle, **kwargs):  # the first save that gets as far as writing finds the disk full
        calls.append(1)
        if len(calls) == 1:
            disk_full()
        real_dump(obj, handle, **kwargs)

    monkeypatch.setattr(json, "dump", dump)
    run_loop(session, lines, Console(stderr=True, width=400), json_lines=False, interactive=False)
    out, err = capsys.readouterr()
    assert err.splitlines()[:2] == [f"error: {tmp_path}: cannot write (Is a directory)",
                                    f"error: {full}: cannot write ({FULL})"]
    assert len(out.split(f"{REPLY_SEPARATOR}\n")) == 2, "both replies came"
    assert len(json.loads((tmp_path / "ok.json").read_text())["messages"]) == 5
    assert not full.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["directory", "under a file"])
def test_eval_out_is_checked_before_the_run(tmp_path: Path, run_qwen, where: str) -> None:
    out = tmp_path if where == "directory" else tmp_path / "file.txt" / "scores.json"
    (tmp_path / "file.txt").write_text("")
    # the checkpoint does not exist: the run would fail on it, so --out was checked first
    code, _, err = run_qwen("eval", tmp_path / "no-checkpoint", "--tasks", "gsm8k", "--out", out)
    assert code == 2 and err.startswith(f"error: {out}: cannot write (") and len(err.splitlines()) == 1
