import pytest
import torch

from colorlab.checkpoint import CheckpointError, load_checkpoint, load_generator, save_checkpoint
from colorlab.models import (PatchDiscriminator, Unet, UnetBlock, build_discriminator, build_generator, count_parameters,
                             generator_spec, receptive_field, unet_depth)


def test_unet_at_256_goes_down_to_1x1_and_back():
    net = build_generator("baseline", 256).eval()
    seen = []
    blocks = [m for m in net.modules() if isinstance(m, UnetBlock)]
    assert len(blocks) == 8  # one per downsampling
    innermost = next(b for b in blocks if not any(isinstance(m, UnetBlock) for m in b.model))
    innermost.model[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        out = net(torch.randn(1, 1, 256, 256))
    assert out.shape == (1, 2, 256, 256)
    assert seen == [torch.Size([1, 512, 1, 1])]
    assert out.abs().max() <= 1  # tanh
    assert count_parameters(net) == 54_409_858  # the pix2pix U-Net (unet_256), 1 -> 2 channels


@pytest.mark.parametrize("size, n_down", [(32, 5), (64, 6), (128, 7), (256, 8), (512, 8)])
def test_unet_output_size_equals_input_and_depth_follows_the_size(size, n_down):
    assert unet_depth(size) == n_down  # log2(size) downsamplings, at most 8 (pix2pix's unet_256)
    if size > 128:
        return  # building these is slow; the depth is what matters for them
    net = build_generator("baseline", size)
    assert net(torch.randn(2, 1, size, size)).shape == (2, 2, size, size)
    assert net.spec == {"arch": "baseline", "size": size, "n_down": n_down}
    strided = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == n_down  # the network built really has that many downsamplings


def test_unet_has_dropout_only_in_inner_blocks_and_rejects_bad_sides():
    net = Unet(n_down=8)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 3
    with pytest.raises(ValueError, match="multiples of 256"):
        net(torch.randn(1, 1, 64, 64))


def test_patchgan_outputs_30x30_logits_at_256():
    D = build_discriminator()
    assert D(torch.randn(2, 3, 256, 256)).shape == (2, 1, 30, 30)
    assert receptive_field(3) == 70


def test_patchgan_sees_only_its_patch():
    D = PatchDiscriminator().eval()
    x = torch.randn(1, 3, 256, 256)
    y = x.clone()
    y[..., :, 200:] = 0  # change only the right part of the image
    with torch.no_grad():
        a, b = D(x), D(y)
    assert torch.equal(a[..., :, :5], b[..., :, :5])  # left patches cannot see it
    assert not torch.equal(a[..., :, -5:], b[..., :, -5:])


def test_resnet18_unet_shapes_offline():
    net = build_generator("resnet18", 64, weights=None)
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 2, 64, 64)
    assert net.spec == {"arch": "resnet18", "size": 64, "output": "tanh", "pretrained": False}
    first_conv = net[0][0]
    assert first_conv.in_channels == 1


def test_resnet18_weights_from_local_file(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    net = build_generator("resnet18", 64, weights=tmp_path / "r18.pth")
    # n_in=1 with pretrained weights: the first conv is the sum over the RGB filters
    # two sums of the same three floats, maybe in another order: a few float32 ulps apart at most
    assert torch.allclose(net[0][0].weight, reference.conv1.weight.sum(1, keepdim=True), rtol=1e-6, atol=1e-7)


def test_imagenet_weights_offline_fail_clearly(monkeypatch):
    import torchvision.models

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1, "get_state_dict", offline)
    from colorlab.models import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match="weights=None"):
        build_generator("resnet18", 64, weights="imagenet")


@pytest.mark.parametrize("size", [0, 48, 100, 2048, "256", True])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match="power of two"):
        generator_spec("baseline", size)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="baseline, resnet18"):
        build_generator("vgg")


def _push_last_bias(net, value: float):
    """Add `value` to the last convolution's bias: its raw outputs then lie far outside [-1, 1]."""
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias += value
    return net.eval()


def test_new_resnet18_generators_are_bounded_and_linear_ones_are_not():
    x = torch.randn(2, 1, 32, 32)
    bounded = _push_last_bias(build_generator("resnet18", 32), 10.0)
    assert bounded(x).abs().max() <= 1.0
    linear = _push_last_bias(build_generator("resnet18", 32, output="linear"), 10.0)
    assert linear.spec == {"arch": "resnet18", "size": 32, "pretrained": False}  # the old spec, unchanged
    assert linear(x).max() > 5.0


def test_a_spec_without_output_loads_as_the_old_linear_network(tmp_path):
    """The published checkpoints have no 'output' key: they must load as the linear net they were trained as."""
    torch.manual_seed(0)
    old = _push_last_bias(build_generator("resnet18", 32, output="linear"), 3.0)
    save_checkpoint(tmp_path / "old.pt", {"spec": {"arch": "resnet18", "size": 32, "pretrained": False},
                                          "generator": old.state_dict()})
    loaded, spec = load_generator(tmp_path / "old.pt")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert loaded(x).max() > 1.5 and torch.allclose(loaded(x), old(x), atol=1e-5)
    assert "output" not in spec


def test_a_tanh_checkpoint_loads_bounded_and_refuses_to_resume_into_a_linear_net(tmp_path):
    new = _push_last_bias(build_generator("resnet18", 32, output="tanh"), 3.0)
    save_checkpoint(tmp_path / "new.pt", {"spec": new.spec, "generator": new.state_dict()})
    loaded, spec = load_generator(tmp_path / "new.pt")
    assert spec["output"] == "tanh"
    with torch.no_grad():
        assert loaded(torch.randn(1, 1, 32, 32)).abs().max() <= 1.0
    with pytest.raises(CheckpointError, match="output: checkpoint has 'tanh', expected None"):
        load_checkpoint(tmp_path / "new.pt", expected_spec=build_generator("resnet18", 32, output="linear").spec)


def test_linear_weights_fine_tune_from_the_same_start_with_tanh():
    """tanh has no parameters and is ~identity near 0: an L1 model's weights start the bounded net where it was."""
    linear = build_generator("resnet18", 32, output="linear").eval()
    bounded = build_generator("resnet18", 32, output="tanh").eval()
    bounded.load_state_dict(linear.state_dict())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bounded(x), torch.tanh(linear(x)), atol=1e-6)


def test_bad_outputs_are_refused():
    with pytest.raises(ValueError, match="linear, tanh"):
        build_generator("resnet18", 32, output="sigmoid")
    with pytest.raises(ValueError, match="resnet18' only"):
        generator_spec("baseline", 32, output="tanh")
