"""colorlab.evaluate.chroma: the per-pixel distance from grey that chapter 6 plots."""

import pytest
import torch
from skimage.color import lab2lch, rgb2lab

from colorlab.color import AB_SCALE, rgb_to_L_ab
from colorlab.evaluate import chroma


def test_chroma_matches_skimage_lch():
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    _, ab = rgb_to_L_ab(rgb)
    ours = chroma(ab)
    assert ours.shape == (2, 8, 8)
    for i in range(2):
        reference = lab2lch(rgb2lab(rgb[i].permute(1, 2, 0).double().numpy()))[..., 1]
        assert torch.allclose(ours[i].double(), torch.from_numpy(reference), atol=0.05)


def test_grey_has_no_chroma_and_hue_does_not_matter():
    assert chroma(torch.zeros(1, 2, 4, 4)).abs().max().item() == 0.0
    angles = torch.linspace(0, 6.28, 16)
    ring = 0.5 * torch.stack((angles.cos(), angles.sin())).reshape(1, 2, 4, 4)  # 16 hues, one radius
    assert torch.allclose(chroma(ring), torch.full((1, 4, 4), 0.5 * AB_SCALE), atol=1e-4)


def test_chroma_is_that_of_the_displayed_colour():
    overshoot = torch.tensor([3.0, 0.0]).reshape(1, 2, 1, 1)  # a generator without tanh may overshoot
    assert chroma(overshoot).item() == pytest.approx(AB_SCALE)


@pytest.mark.parametrize("shape", [(2, 8, 8), (1, 3, 8, 8), (1, 1, 8, 8)])
def test_chroma_rejects_anything_but_an_ab_batch(shape):
    with pytest.raises(ValueError, match="ab batch"):
        chroma(torch.zeros(shape))
