"""shape_trace: the U-Net's sizes level by level, as chapter 3 prints them."""

import pytest
import torch

from colorlab.models import Unet, build_generator, shape_trace


def _by_step(trace):
    return dict(trace)


def test_trace_at_256_goes_down_to_1x1_and_back_with_skips_doubling_channels():
    net = Unet(n_down=8, num_filters=4)  # the pix2pix layout with narrow layers: fast
    trace = shape_trace(net, 256)
    steps = _by_step(trace)

    assert len(steps) == len(trace) == 1 + 8 + 8 + 7  # input, 8 downs, 8 ups, 7 skips (none at the outermost)
    assert [step for step, _ in trace[:10]] == ["input"] + [f"down {k}" for k in range(1, 9)] + ["up 8"]
    assert steps["input"] == (1, 256, 256)
    assert steps["down 8"] == (32, 1, 1)  # the bottleneck: one pixel
    assert trace[-1] == ("up 1", (2, 256, 256))  # ab out, same size as the input
    for k in range(1, 9):
        assert steps[f"down {k}"][1:] == (256 // 2**k, 256 // 2**k)
        assert steps[f"up {k}"][1:] == (256 // 2 ** (k - 1),) * 2  # each up-conv undoes its level's down-conv
    for k in range(2, 9):
        assert steps[f"skip {k}"] == (2 * steps[f"up {k}"][0], *steps[f"up {k}"][1:])
        assert steps[f"skip {k}"][1:] == steps[f"down {k - 1}"][1:]  # concatenated with the level's input


def test_trace_follows_the_depth_of_the_built_generator():
    net = build_generator("baseline", 64)  # unet_depth(64) = 6 levels
    steps = _by_step(shape_trace(net, 64))
    assert steps["down 6"] == (512, 1, 1) and "down 7" not in steps
    assert steps["down 1"] == (64, 32, 32) and steps["skip 2"] == (128, 32, 32)


def test_trace_removes_its_hooks_and_restores_the_mode():
    net = Unet(n_down=5, num_filters=4).train()
    shape_trace(net, 32)
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())
    net.eval()
    shape_trace(net, 32)
    assert not net.training


def test_trace_rejects_a_size_the_unet_cannot_halve_down_to_1x1():
    with pytest.raises(ValueError, match="multiples of 32"):
        shape_trace(Unet(n_down=5, num_filters=4), 48)


def test_trace_does_not_change_the_weights_or_batchnorm_statistics():
    net = Unet(n_down=5, num_filters=4).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    shape_trace(net, 32)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
