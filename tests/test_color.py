import numpy as np
import pytest
import torch
from skimage import color as skcolor
from skimage import data as skdata

from colorlab.color import L_ab_to_rgb, lab_to_rgb, normalize_lab, rgb_to_L_ab, rgb_to_lab


def delta_e(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    return np.sqrt(((lab1 - lab2) ** 2).sum(-1))


def to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_rgb_to_lab_matches_skimage_on_real_photos(name):
    image = getattr(skdata, name)()
    ours = rgb_to_lab(to_chw(image)).permute(1, 2, 0).numpy()
    assert delta_e(ours, skcolor.rgb2lab(image)).max() < 0.5


def test_rgb_to_lab_matches_skimage_on_random_batch():
    rgb = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert delta_e(ours, skcolor.rgb2lab(rgb)).max() < 0.5


def test_lab_to_rgb_matches_skimage():
    lab = skcolor.rgb2lab(skdata.coffee()[::4, ::4])
    ours = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    assert np.abs(ours - skcolor.lab2rgb(lab)).max() < 1e-3


def test_round_trip_error_below_one_level():
    rgb = torch.rand(8, 3, 32, 32)
    assert (lab_to_rgb(rgb_to_lab(rgb)) - rgb).abs().max() < 1 / 255
    L, ab = rgb_to_L_ab(rgb)
    assert (L_ab_to_rgb(L, ab) - rgb).abs().max() < 1 / 255


def test_primaries_have_known_lab_values():
    # pure red in Lab (skimage / CIE D65): L=53.24, a=80.09, b=67.20
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert torch.allclose(rgb_to_lab(red).flatten(), torch.tensor([53.24, 80.09, 67.20]), atol=0.05)


def test_normalisation_ranges():
    L, ab = rgb_to_L_ab(torch.rand(4, 3, 16, 16))
    assert L.shape == (4, 1, 16, 16) and ab.shape == (4, 2, 16, 16)
    assert L.min() >= -1 and L.max() <= 1 and ab.abs().max() <= 1
    white, _ = normalize_lab(rgb_to_lab(torch.ones(1, 3, 2, 2)))
    black, _ = normalize_lab(rgb_to_lab(torch.zeros(1, 3, 2, 2)))
    assert torch.allclose(white, torch.ones(1)) and torch.allclose(black, -torch.ones(1))


def test_bfloat16_input_keeps_dtype_and_accuracy():
    rgb = torch.rand(2, 3, 8, 8).bfloat16()
    lab16 = rgb_to_lab(rgb)
    assert lab16.dtype == torch.bfloat16
    for image, lab in zip(rgb, lab16):  # scikit-image in float64 on the same (bf16-rounded) input
        reference = skcolor.rgb2lab(image.float().permute(1, 2, 0).numpy().astype(np.float64))
        # bf16 values between 64 and 128 are 0.5 apart: rounding the output moves each channel by <= 0.25
        assert delta_e(lab.float().permute(1, 2, 0).numpy(), reference).max() < 1.0


def test_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        rgb_to_lab(torch.rand(4, 16, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu():
    rgb = torch.rand(2, 3, 16, 16)
    assert torch.allclose(rgb_to_lab(rgb.cuda()).cpu(), rgb_to_lab(rgb), atol=1e-3)
