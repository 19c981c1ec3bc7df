"""Fixtures shared across test files: running ``qwen`` in-process, and the training tests' data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import make_shards


@pytest.fixture()
def one_thread():
    """Training tests run single-threaded: on 2 shared cores two threads were ~8x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("data"))


@pytest.fixture()
def run_qwen(monkeypatch, capsys):
    """``run_qwen(*args) -> (exit code, stdout, stderr)``: the ``qwen`` command, in-process."""
    from qwen_cli.cli import main

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["qwen", *map(str, args)])
        capsys.readouterr()  # drop anything printed while preparing the input
        with pytest.raises(SystemExit) as exit_info:
            main()
        out = capsys.readouterr()
        return exit_info.value.code, out.out, out.err

    return run
