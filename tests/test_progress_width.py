"""The training progress line at terminal widths: at 80 columns the bar, the step count and the ETA
stay, and the metrics give way (cut with "…"); piped output is one plain line per logged step."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from qwen_cli.train.progress import RunProgress

METRICS = {"loss": 4.5261, "lr": 3e-4, "grad_norm": 0.595, "tok_per_s": 14009.0, "mfu": 0.397}


def last_frame(width: int) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    with RunProgress(300, "pretrain", console=console) as progress:
        progress.update(120, METRICS)
    return console.file.getvalue().split("\r")[-1]


@pytest.mark.parametrize("width", [80, 120])
def test_bar_step_and_eta_survive_the_width(width):
    line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last_frame(width)).rstrip("\n")
    assert len(line) <= width
    assert line.startswith("pretrain ━") and "120/300" in line and "eta" in line, line
    assert "loss 4.5261" in line


def test_at_80_columns_the_metrics_are_cut_not_the_bar():
    line = last_frame(80)
    assert "…" in line and "mfu" not in line


def test_a_pipe_gets_one_plain_line_per_step():
    console = Console(file=io.StringIO(), width=40)  # not a terminal: never wrapped, whatever the width
    with RunProgress(300, "pretrain", console=console) as progress:
        progress.update(120, METRICS)
    assert console.file.getvalue() == ("pretrain 120/300  loss 4.5261  lr 3.00e-04  grad_norm 0.595  "
                                       "tok_per_s 14,009  mfu 39.7%\n")
