"""Colorization as classification: each piece against an independent computation (numpy, skimage, by hand)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import colorconv, rgb2lab

from colorlab import classify
from colorlab.checkpoint import load_checkpoint, save_checkpoint
from colorlab.classify import (
    ClassColorizer,
    ClassificationObjective,
    ab_accuracy_auc,
    bin_counts,
    build_classifier,
    colour_prior,
    decode,
    gamut_bins,
    init_from,
    load_classifier,
    rebalanced_cross_entropy,
    rebalancing_weights,
    smooth_prior,
    soft_encode,
    soft_target,
)
from colorlab.color import AB_SCALE
from colorlab.data import make_loader
from colorlab.models import build_generator
from colorlab.stages import ObjectiveStage, TrainConfig, build_stage
from colorlab.train import fit

from test_train import Photos


def random_ab(shape=(2, 2, 6, 5), seed=0) -> torch.Tensor:
    """Normalised ab spread over the sRGB range (about +-100 Lab units)."""
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * 0.9


def numpy_nearest(ab: torch.Tensor, bins: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: every pixel's distances to every bin, sorted with numpy. (pixels, k) distances and indices."""
    points = ab.double().numpy().transpose(0, 2, 3, 1).reshape(-1, 2) * AB_SCALE
    distances = np.sqrt(((points[:, None, :] - bins.double().numpy()[None]) ** 2).sum(-1))
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, 1), order


def flat(x: torch.Tensor) -> np.ndarray:
    """(B, k, H, W) -> (B*H*W, k), the pixel order of numpy_nearest."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double().numpy()


# --- the bins ---------------------------------------------------------------------------------------


def srgb_surface(levels: int = 256) -> np.ndarray:
    """All 8-bit colours on the six faces of the RGB cube, (N, 3) in [0, 1]."""
    v = np.linspace(0.0, 1.0, levels)
    u, w = np.meshgrid(v, v, indexing="ij")
    faces = []
    for axis in range(3):
        for value in (0.0, 1.0):
            channels = [u.ravel(), w.ravel()]
            channels.insert(axis, np.full(u.size, value))
            faces.append(np.stack(channels, 1))
    return np.concatenate(faces)


def cells_of(ab: np.ndarray) -> set[tuple[int, int]]:
    return {(int(x), int(y)) for x, y in np.round(ab / 10).astype(int) * 10}


def test_bins_are_the_cells_of_all_srgb_colours_by_skimage():
    """skimage's rgb2lab (float64, numpy) on the sRGB cube's surface gives the same cells as colorlab's torch."""
    ab = rgb2lab(srgb_surface()[None])[0, :, 1:]
    ours = {(int(x), int(y)) for x, y in gamut_bins().tolist()}
    assert len(ours) == len(gamut_bins()) and ours == cells_of(ab)


def test_converting_lab_back_to_srgb_finds_no_bin_we_lack():
    """The other direction: Lab points every unit of a and b (offset, so none lies on a cell edge) and every
    2 of L, converted back with skimage's Lab -> XYZ and XYZ -> linear RGB matrix. Every cell holding a point
    inside [0, 1]^3 is a bin; a bin this grid misses must be a sliver, within 1.5 units of a found point."""
    bins = gamut_bins()
    a = np.arange(-114.5, 115.0, 1.0)
    A, B = np.meshgrid(a, a, indexing="ij")
    found = np.zeros_like(A, dtype=bool)
    for L in np.arange(0.0, 100.01, 2.0):
        lab = np.stack([np.full_like(A, L), A, B], -1)
        real = B <= 200 * L / 116  # else Z < 0 (no colour), which lab2xyz would clip to 0 with a warning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            linear = colorconv.lab2xyz(lab) @ colorconv.rgb_from_xyz.T
        found |= real & np.all((linear >= -1e-9) & (linear <= 1 + 1e-9), axis=-1)
    points = np.stack([A[found], B[found]], 1)
    ours = {(int(x), int(y)) for x, y in bins.tolist()}
    assert cells_of(points) <= ours
    for centre in ours - cells_of(points):
        gap = np.abs(points - np.array(centre)).max(1) - 5  # distance outside the cell (max norm)
        assert gap.min() <= 1.5, (centre, gap.min())


def test_every_bin_centre_is_a_multiple_of_the_grid_and_the_neutral_axis_is_a_bin():
    bins = gamut_bins()
    assert torch.equal(bins, torch.round(bins / 10) * 10)
    assert bins.abs().max() <= 110  # inside the range that colorlab.color clamps ab to
    assert (0.0, 0.0) in {tuple(b) for b in bins.tolist()}


# --- soft encoding ---------------------------------------------------------------------------------


def test_soft_encoding_picks_the_five_nearest_bins_with_gaussian_weights():
    bins, ab = gamut_bins(), random_ab()
    indices, weights = soft_encode(ab, bins)
    assert indices.shape == weights.shape == (2, 5, 6, 5)
    distances, _ = numpy_nearest(ab, bins, 5)
    ours = np.linalg.norm(flat(ab)[:, None, :] * AB_SCALE - bins.double().numpy()[flat(indices).astype(int)], axis=-1)
    np.testing.assert_allclose(ours, distances, atol=1e-3)  # the same neighbours (ties may swap equal ones)
    gauss = np.exp(-distances**2 / (2 * 5.0**2))
    np.testing.assert_allclose(flat(weights), gauss / gauss.sum(1, keepdims=True), atol=1e-5)


def test_a_colour_on_a_bin_centre_keeps_most_weight_there_by_hand():
    bins = gamut_bins()
    ab = torch.tensor([20.0, -30.0]).view(1, 2, 1, 1) / AB_SCALE  # an interior bin: 4 neighbours at 10, then 14.1
    indices, weights = soft_encode(ab, bins)
    assert bins[indices[0, 0, 0, 0]].tolist() == [20.0, -30.0]
    near = math.exp(-100 / 50)  # distance 10, sigma 5
    assert weights[0, 0, 0, 0].item() == pytest.approx(1 / (1 + 4 * near), abs=1e-5)
    target = soft_target(indices, weights, len(bins))
    assert target.shape == (1, len(bins), 1, 1) and target.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_soft_encoding_is_batched_in_chunks_without_changing_the_result(monkeypatch):
    # The docstring's promise is exact: a pixel's distances are element-wise float operations, so no
    # chunk shape (nor CPU, nor thread count) changes its bins or its weights by a single bit.
    bins, ab = gamut_bins(), random_ab((3, 2, 8, 8), seed=1)
    whole = soft_encode(ab, bins)
    for chunk in (7, 64, 191):  # many ragged chunks, and a chunk size a BLAS kernel would tile differently
        monkeypatch.setattr(classify, "_CHUNK", chunk)
        chunked = soft_encode(ab, bins)
        assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1]), chunk


def test_soft_encoding_matches_a_float64_brute_force_reference():
    bins, ab = gamut_bins(), random_ab((2, 2, 5, 6), seed=3)
    indices, weights = soft_encode(ab, bins)
    points = (ab.double() * 110).permute(0, 2, 3, 1).reshape(-1, 2)
    d2 = ((points[:, None, :] - bins.double()[None]) ** 2).sum(-1)  # (N, Q, 2): fine for a few pixels
    nearest, index = d2.topk(5, dim=1, largest=False)
    expected = torch.softmax(-nearest / (2 * 5.0**2), dim=1)
    assert torch.equal(indices.permute(0, 2, 3, 1).reshape(-1, 5), index)
    # float32 distances of Lab values up to ~110: relative error ~1e-7, so weights agree to ~1e-5
    assert torch.allclose(weights.permute(0, 2, 3, 1).reshape(-1, 5).double(), expected, rtol=0, atol=1e-5)


# --- prior and weights -----------------------------------------------------------------------------


def test_bin_counts_match_brute_force_nearest_bins():
    bins, ab = gamut_bins(), random_ab((2, 2, 9, 7), seed=2)
    _, order = numpy_nearest(ab, bins, 1)
    expected = np.bincount(order[:, 0], minlength=len(bins))
    np.testing.assert_array_equal(bin_counts([ab[:1], ab[1:]], bins).numpy(), expected)


def test_smoothing_spreads_one_bin_as_a_gaussian_of_sigma_5():
    bins = gamut_bins()
    counts = torch.zeros(len(bins))
    centre = next(i for i, b in enumerate(bins.tolist()) if b == [0.0, 0.0])
    counts[centre] = 1000
    prior = smooth_prior(counts, bins)
    # Bin 0,0 is interior: its Gaussian over the other bins is not cut off by the gamut edge.
    gauss = np.exp(-((bins.double().numpy() - 0.0) ** 2).sum(1) / 50)
    np.testing.assert_allclose(prior.numpy(), gauss / gauss.sum(), atol=1e-9)
    assert prior.sum().item() == pytest.approx(1.0)


def write_solid_photos(folder, colours, side=16):
    folder.mkdir(exist_ok=True)
    paths = []
    for i, rgb in enumerate(colours):
        path = folder / f"solid_{i}.png"
        Image.fromarray(np.full((side, side, 3), rgb, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_colour_prior_is_computed_once_and_cached_by_the_photos(tmp_path, monkeypatch):
    bins = gamut_bins()
    files = write_solid_photos(tmp_path / "photos", [(200, 30, 30), (200, 30, 30), (128, 128, 128)])
    prior = colour_prior(files, 16, bins, cache_dir=tmp_path / "cache")
    red_ab = rgb2lab(np.array([[[200, 30, 30]]]) / 255.0)[0, 0, 1:]  # two of the three photos
    _, order = numpy_nearest(torch.from_numpy(red_ab / AB_SCALE).view(1, 2, 1, 1), bins, 1)
    assert prior.argmax().item() == order[0, 0]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1

    def no_recount(*args, **kwargs):
        raise AssertionError("the prior was recomputed instead of read from its cache")

    monkeypatch.setattr(classify, "bin_counts", no_recount)
    assert torch.equal(colour_prior(files, 16, bins, cache_dir=tmp_path / "cache"), prior)
    with pytest.raises(AssertionError, match="recomputed"):  # other photos: another cache entry
        colour_prior(files[:2], 16, bins, cache_dir=tmp_path / "cache")


def test_colour_prior_of_red_photos_peaks_at_their_colour():
    bins = gamut_bins()
    red = torch.tensor([53.0, 60.0, 40.0])  # a red in Lab: ab (60, 40) is a bin centre
    ab = (red[1:] / AB_SCALE).view(1, 2, 1, 1).expand(4, 2, 8, 8)
    prior = smooth_prior(bin_counts([ab], bins), bins)
    assert bins[prior.argmax()].tolist() == [60.0, 40.0]


def test_weights_with_lambda_0_equalise_the_prior():
    prior = torch.tensor([0.5, 0.3, 0.15, 0.05])
    weights = rebalancing_weights(prior, lam=0.0)
    assert torch.allclose(prior * weights, torch.full((4,), 0.25))  # every class contributes the same


def test_weights_with_lambda_one_half_by_hand():
    # p = (1/2, 1/4, 1/4, 0), Q = 4: 1 / (p/2 + 1/8) = (8/3, 4, 4, 8); expectation under p = 10/3.
    weights = rebalancing_weights(torch.tensor([0.5, 0.25, 0.25, 0.0]), lam=0.5)
    assert torch.allclose(weights, torch.tensor([0.8, 1.2, 1.2, 2.4]))
    with pytest.raises(ValueError, match="lambda"):
        rebalancing_weights(torch.tensor([1.0]), lam=1.5)


# --- the loss ------------------------------------------------------------------------------------------


def test_cross_entropy_without_weights_is_torchs_soft_target_cross_entropy():
    bins, ab = gamut_bins(), random_ab()
    logits = torch.randn(2, len(bins), 6, 5, generator=torch.Generator().manual_seed(3))
    indices, targets = soft_encode(ab, bins)
    expected = torch.nn.functional.cross_entropy(logits, soft_target(indices, targets, len(bins)))
    assert rebalanced_cross_entropy(logits, indices, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_rebalanced_cross_entropy_weights_each_pixel_by_its_nearest_bin_in_numpy():
    bins, ab = gamut_bins(), random_ab()
    logits = torch.randn(2, len(bins), 6, 5, generator=torch.Generator().manual_seed(4))
    class_weights = torch.rand(len(bins), generator=torch.Generator().manual_seed(5)) + 0.5
    loss = ClassificationObjective(bins, class_weights)(logits, ab)

    distances, order = numpy_nearest(ab, bins, 5)
    z = np.exp(-distances**2 / 50)
    z /= z.sum(1, keepdims=True)
    flat_logits = flat(logits)
    log_p = flat_logits - np.log(np.exp(flat_logits).sum(1, keepdims=True))
    ce = -(z * np.take_along_axis(log_p, order, 1)).sum(1)
    v = class_weights.double().numpy()[order[:, 0]]
    assert loss["loss_G"].item() == pytest.approx((v * ce).mean(), rel=1e-4)
    assert loss["loss_CE"].item() == pytest.approx(ce.mean(), rel=1e-4)


# --- decoding -------------------------------------------------------------------------------------------


def test_decoding_mode_mean_and_annealed_mean_against_numpy():
    bins = gamut_bins()
    logits = torch.randn(1, len(bins), 3, 2, generator=torch.Generator().manual_seed(6)) * 3
    z = flat(logits)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)

    def ab_at(temperature):
        return flat(decode(logits, bins, temperature)) * AB_SCALE

    np.testing.assert_allclose(ab_at(1.0), p @ bins.double().numpy(), atol=1e-3)
    annealed = p ** (1 / 0.38) / (p ** (1 / 0.38)).sum(1, keepdims=True)
    np.testing.assert_allclose(ab_at(0.38), annealed @ bins.double().numpy(), atol=1e-3)
    np.testing.assert_allclose(ab_at(0.0), bins.double().numpy()[z.argmax(1)], atol=1e-4)
    np.testing.assert_allclose(ab_at(1e-3), ab_at(0.0), atol=1e-2)  # T -> 0 tends to the mode
    with pytest.raises(ValueError, match="temperature"):
        decode(logits, bins, -1.0)


# --- generators, training loop, checkpoints, metric, recipe ----------------------------------------------------


@pytest.mark.parametrize("arch", ["baseline", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_either_generator_gets_one_unbounded_output_per_bin(arch):
    torch.manual_seed(0)
    bins = gamut_bins()
    net = build_classifier(arch, 32, bins=bins)
    assert net.spec["head"] == "classification" and net.spec["bins"] == len(bins)
    last_conv = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    with torch.no_grad():
        last_conv.weight.mul_(1000)  # a tanh (the regression head) would still cap the outputs at 1
        logits = net.eval()(torch.rand(1, 1, 32, 32) * 2 - 1)
    assert logits.shape == (1, len(bins), 32, 32) and logits.abs().max() > 1
    ab = ClassColorizer(net)(torch.zeros(1, 1, 32, 32))
    assert ab.shape == (1, 2, 32, 32) and ab.abs().max() <= 1


def test_the_training_loop_takes_the_objective_and_the_checkpoint_reloads(tmp_path):
    torch.manual_seed(0)
    bins = gamut_bins()
    net = build_classifier("baseline", 32, bins=bins)
    loader = make_loader(Photos(4), batch_size=4, train=True, seed=0, num_workers=0)
    objective = ClassificationObjective(bins, torch.ones(len(bins)))
    stage = ObjectiveStage(net, TrainConfig(epochs=4, lr_g=2e-3, betas=(0.9, 0.999)), objective)
    history = fit(stage, loader, device="cpu", checkpoint_path=tmp_path / "classify.pt", progress=False)
    assert set(history.epochs) == {"loss_G", "loss_CE", "seconds"}
    assert history["loss_G"][-1] < 0.95 * history["loss_G"][0], history["loss_G"]  # it learns
    model = load_classifier(tmp_path / "classify.pt")
    L = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(L), ClassColorizer(net.eval())(L), atol=1e-5)
    assert load_checkpoint(tmp_path / "classify.pt")["stage"] == "classify"
    with pytest.raises(ValueError, match="needs an objective"):
        build_stage("classify", net, TrainConfig(epochs=1))


def test_init_from_a_regression_checkpoint_copies_all_but_the_head(tmp_path):
    torch.manual_seed(0)
    regression = build_generator("baseline", 32)
    save_checkpoint(tmp_path / "l1.pt", {"spec": regression.spec, "generator": regression.state_dict()})
    net = build_classifier("baseline", 32)
    copied = init_from(net, tmp_path / "l1.pt")
    own, theirs = net.state_dict(), regression.state_dict()
    different = [k for k in theirs if not torch.equal(own[k], theirs[k])]
    assert copied == len(theirs) - 2 and len(different) == 2  # the last up-convolution's weight and bias
    assert net.spec["init"] == "l1.pt"
    other = build_classifier("baseline", 64)
    with pytest.raises(ValueError, match="size"):
        init_from(other, tmp_path / "l1.pt")


class Offset(torch.nn.Module):
    """A 'model' that returns the true ab moved by a fixed distance along a (test double for the AuC)."""

    def __init__(self, ab: torch.Tensor, shift: float) -> None:
        super().__init__()
        self.ab, self.shift = ab, shift

    def forward(self, L):
        return self.ab + torch.tensor([self.shift / AB_SCALE, 0.0]).view(1, 2, 1, 1)


def test_auc_of_predictions_a_fixed_distance_off_by_hand():
    ab = random_ab((2, 2, 4, 4)) * 0.4  # far from the clamp at +-1
    L = torch.zeros(2, 1, 4, 4)
    # 30.5 units off: accuracy 0 for t <= 30 and 1 for t >= 31; trapezoids: 0.5 + 119, over 150.
    assert ab_accuracy_auc(Offset(ab, 30.5), [(L, ab)]) == pytest.approx(119.5 / 150, abs=1e-6)
    assert ab_accuracy_auc(Offset(ab, 0.0), [(L, ab)]) == pytest.approx(1.0, abs=1e-6)  # within 0 of the truth: all


@pytest.mark.slow
def test_classification_recipe_trains_from_the_command_line(tmp_path):
    from colorlab.cli import main

    out = tmp_path / "run"
    argv = ["train", "--recipe", "classification", "--offline", "--size", "32", "--epochs", "1", "--n-images", "6",
            "--batch-size", "2", "--device", "cpu", "--num-workers", "0", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert 0 < summary["metrics"]["auc"] < 1 and np.isfinite(summary["metrics"]["psnr"])
    assert (out / "grid.png").is_file() and load_classifier(out / "classify.pt").spec["head"] == "classification"
