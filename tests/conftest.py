"""Fixtures shared by the training tests (pretrain, resume, distributed)."""

from __future__ import annotations

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
