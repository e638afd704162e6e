import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colorlab.evaluate import (ab_histogram, ab_histogram_figure, colourfulness, comparison_grid, evaluate,
                               grayscale_rgb, high_chroma, out_of_range, psnr, sample_grid, saturation)
from colorlab.models import build_generator


def test_psnr_matches_skimage():
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    ours = psnr(a, b)
    for i in range(2):
        ref = peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, rel=1e-4)


def test_ssim_matches_skimage():
    rng = np.random.default_rng(0)
    a = rng.random((48, 48, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    ours = ssim_of(a, b)
    assert ours == pytest.approx(ref, abs=2e-3)
    assert ssim_of(a, a) == pytest.approx(1.0, abs=1e-5)


def ssim_of(a, b):
    from colorlab.evaluate import ssim

    to_t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None]
    return ssim(to_t(a), to_t(b)).item()


def test_colourfulness_known_values():
    grey = torch.full((1, 3, 8, 8), 0.5)
    assert colourfulness(grey).item() == pytest.approx(0.0, abs=1e-4)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0  # rg = 255, yb = 127.5, no spread: C = 0.3 * sqrt(255^2 + 127.5^2)
    assert colourfulness(red).item() == pytest.approx(0.3 * np.hypot(255, 127.5), rel=1e-4)
    # Hasler & Suesstrunk: a half red / half green image is more colourful than flat red
    half = red.clone()
    half[..., 4:] = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    assert colourfulness(half) > colourfulness(red)


def test_saturation():
    assert saturation(torch.full((1, 3, 4, 4), 0.7)).item() == pytest.approx(0.0)
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 0.8
    assert saturation(red).item() == pytest.approx(1.0)


def test_evaluate_perfect_and_grey_predictions():
    class Oracle(torch.nn.Module):  # predicts the true ab: perfect scores
        def __init__(self, ab):
            super().__init__()
            self.ab = ab

        def forward(self, L):
            return self.ab

    rgb = torch.rand(2, 3, 32, 32)
    from colorlab.color import rgb_to_L_ab

    L, ab = rgb_to_L_ab(rgb)
    perfect = evaluate(Oracle(ab), [(L, ab)])
    assert perfect["psnr"] > 40 and perfect["ssim"] > 0.99 and abs(perfect["dCF"]) < 0.5
    grey = evaluate(Oracle(torch.zeros_like(ab)), [(L, ab)])
    assert grey["colourfulness"] < 1.0 and grey["dCF"] < -10 and grey["psnr"] < perfect["psnr"]


def test_grids_have_one_column_per_entry():
    L = torch.rand(3, 1, 32, 32) * 2 - 1
    fig = sample_grid(build_generator("baseline", 32), L, torch.zeros(3, 2, 32, 32))
    assert len(fig.axes) == 9
    assert [ax.get_title() for ax in fig.axes[:3]] == ["grayscale", "prediction", "truth"]
    fig = comparison_grid({"a": grayscale_rgb(L), "b": grayscale_rgb(L)}, max_rows=2)
    assert len(fig.axes) == 4
    assert torch.allclose(grayscale_rgb(L)[:, 0], grayscale_rgb(L)[:, 1], atol=1e-3)  # grey: R == G


class _Constant(torch.nn.Module):
    """A 'generator' that predicts the given raw ab, whatever L is."""

    def __init__(self, ab):
        super().__init__()
        self.ab = ab

    def forward(self, L):
        return self.ab


def _ab_with(pixels: dict[tuple[int, int], tuple[float, float]], side: int = 4) -> torch.Tensor:
    ab = torch.zeros(1, 2, side, side)
    for (y, x), (a, b) in pixels.items():
        ab[0, :, y, x] = torch.tensor([a, b])
    return ab


def test_out_of_range_counts_pixels_with_a_or_b_beyond_one():
    ab = _ab_with({(0, 0): (1.5, 0.0), (0, 1): (0.0, -2.0), (0, 2): (3.0, 3.0), (0, 3): (1.0, -1.0)})
    assert out_of_range(ab).item() == pytest.approx(3 / 16)  # both-out counts once; exactly 1 is in range


def test_high_chroma_uses_lab_units_of_the_clamped_picture():
    # chroma 77 (above 66), 64.1 (below), and a raw a of 2.0 shown as a = 110 (above)
    ab = _ab_with({(0, 0): (0.7, 0.0), (0, 1): (0.5, 0.3), (1, 1): (2.0, 0.0)})
    assert high_chroma(ab).item() == pytest.approx(2 / 16)
    assert high_chroma(ab, threshold=60.0).item() == pytest.approx(3 / 16)


def test_evaluate_measures_out_of_range_before_the_clamp():
    """The clamp would hide every overshoot: evaluate must read the generator's raw ab."""
    L = torch.zeros(1, 1, 16, 16)  # SSIM's window needs 11 x 11 pixels
    raw = _ab_with({(0, 0): (1.8, 0.0), (2, 2): (0.0, -1.3)}, side=16)
    truth = _ab_with({(1, 1): (0.0, 0.8)}, side=16)
    scores = evaluate(_Constant(raw), [(L, truth)])
    assert scores["ab_out_of_range"] == pytest.approx(2 / 256)
    assert scores["high_chroma"] == pytest.approx(2 / 256)  # both shown at the gamut's edge
    assert scores["high_chroma_true"] == pytest.approx(1 / 256)  # 88 Lab units


def test_ab_histogram_keeps_overshoots_visible():
    ab = _ab_with({(0, 0): (2.5, 0.0), (0, 1): (10.0, -0.5)}, side=2)
    hist = ab_histogram(ab, bins=6, limit=3.0)  # bins of width 1 from -3 to 3
    assert hist["edges"] == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert hist["a"] == [0.0, 0.0, 0.0, 0.5, 0.0, 0.5]  # 2.5 and 10 (clipped to 3) in the last bin
    assert hist["b"] == [0.0, 0.0, 0.25, 0.75, 0.0, 0.0]


def test_ab_histogram_figure_draws_one_line_per_entry_in_each_channel():
    histograms = {"truth": ab_histogram(torch.zeros(1, 2, 4, 4)), "model": ab_histogram(torch.full((1, 2, 4, 4), 1.5))}
    fig = ab_histogram_figure(histograms)
    assert [ax.get_title() for ax in fig.axes] == ["predicted a (raw, / 110)", "predicted b (raw, / 110)"]
    for ax in fig.axes:
        assert [line.get_label() for line in ax.patches if line.get_label() in histograms] == ["truth", "model"]
