"""One line per epoch: a chapter in Colab (bars off) is never silent for longer than an epoch."""

from __future__ import annotations

import re

import torch

from colorlab.models import build_generator
from colorlab.stages import L1Stage, stage_config
from colorlab.train import epoch_line, fit
from tests.test_train import loader

LINE = re.compile(r"^pretrain epoch (\d)/2: loss_G \d\.\d{4}, loss_G_L1 \d\.\d{4}; (\d+\.\d) images/s; \d+ s, "
                  r"about (\d+) s left$")


def test_fit_prints_one_line_per_epoch_with_losses_speed_and_time_left(capsys):
    torch.manual_seed(0)
    history = fit(L1Stage(build_generator("baseline", 32), stage_config("pretrain", 2)), loader(n=4, batch_size=2),
                  device="cpu", progress=False)
    lines = capsys.readouterr().out.splitlines()
    matches = [LINE.match(line) for line in lines if line.startswith("pretrain epoch")]
    assert len(matches) == 2 and all(matches), lines
    assert [int(m[1]) for m in matches] == [1, 2]
    for m, seconds in zip(matches, history["seconds"]):
        assert abs(float(m[2]) - 4 / seconds) <= 0.05 + 1e-3 * 4 / seconds  # 4 images in the epoch, rounded to 0.1
    assert int(matches[-1][3]) == 0  # nothing left after the last epoch


def test_epoch_line_estimates_the_time_left_from_the_epoch_just_done():
    assert epoch_line("gan", 2, 10, {"loss_G": 1.23456, "loss_D": 0.5}, images=640, seconds=32.0) == \
        "gan epoch 2/10: loss_G 1.2346, loss_D 0.5000; 20.0 images/s; 32 s, about 256 s left"


def test_no_lines_when_asked_for_none(capsys):
    fit(L1Stage(build_generator("baseline", 32), stage_config("pretrain", 1)), loader(n=4, batch_size=4),
        device="cpu", progress=False, epoch_lines=False)
    assert "epoch 1/1" not in capsys.readouterr().out
