"""colorlab.scaling: the FLOP count of a training step, and the wall-clock arithmetic of the appendix."""

import pytest

from colorlab.scaling import Assumptions, step_flops, wallclock_hours


def test_the_meta_device_counts_the_flops_a_real_device_does_and_the_gan_step_costs_more():
    on_meta = {gan: step_flops(32, gan=gan) for gan in (False, True)}
    assert on_meta[False] == step_flops(32, gan=False, device="cpu")
    assert on_meta[True] > on_meta[False] > 0  # the GAN step adds D's two steps and a pass through D


def test_wallclock_divides_the_total_flops_by_the_assumed_throughput():
    assumed = Assumptions(gpu="a test GPU", peak_flops=1e12, utilisation=0.5, efficiency={1: 1.0, 2: 0.5})
    rows = wallclock_hours({"pretrain": 1e12, "gan": 2e12}, {"pretrain": 1, "gan": 2}, 10, assumed)
    # total = 10 images x (1 x 1e12 + 2 x 2e12) = 5e13 FLOP; 1 GPU: 5e11 FLOP/s -> 100 s; 2 GPUs at 50%: the same
    assert [row["GPUs"] for row in rows] == [1, 2]
    assert [row["hours"] for row in rows] == pytest.approx([100 / 3600, 100 / 3600])
    assert rows[0]["PFLOP in total"] == pytest.approx(0.05)
