"""How good is a colorization? Numbers and pictures.

Colorization has no single right answer (a red car could have been blue), so pixel
metrics (PSNR, SSIM) reward safe, greyish guesses. Colourfulness (Hasler & Suesstrunk,
2003) and saturation show the other side: how vivid the result is compared with the
truth (dCF = predicted minus true colourfulness). Read them together, and look at grids.
All functions take RGB batches (B, 3, H, W) with values in [0, 1], except the two that
diagnose over-saturation, which read the network's normalised ab (B, 2, H, W): the
fraction of pixels whose raw ab left [-1, 1] (the clamp in `denormalize_lab` then shows
the most saturated colour there), and the fraction above a chroma threshold, against the
truth's fraction (a model that paints "red blotches" has many more than the photos).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from .color import AB_SCALE, L_ab_to_rgb


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (data range 1); higher is closer."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image, averaged over RGB channels.

    Gaussian window (11x11, sigma 1.5), as `skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`.
    """
    pred, target = pred.float(), target.float()
    channels = pred.shape[1]
    window = _gaussian_window().to(pred.device).expand(channels, 1, 11, 11)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)  # "valid" region, like skimage's crop

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk's colourfulness per image (0 = grey; ~100+ = very colourful), on a 0..255 scale."""
    r, g, b = (rgb.float() * 255.0).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return std + 0.3 * mean


def saturation(rgb: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation per image, (max - min) / max, in [0, 1]."""
    high, low = rgb.float().amax(1), rgb.float().amin(1)
    return ((high - low) / high.clamp_min(1e-6)).flatten(1).mean(1)


def chroma(ab: torch.Tensor) -> torch.Tensor:
    """Per-pixel chroma sqrt(a^2 + b^2) in Lab units of a normalised ab batch (B, 2, H, W) -> (B, H, W).

    0 is grey; the distance from the grey axis is how vivid a colour is, whatever its hue, so
    comparing predicted with true chroma shows a desaturated model directly. ab is clamped
    to [-1, 1] first, as `denormalize_lab` does, so this is the chroma of the picture shown.
    """
    _check_ab(ab)
    a, b = (ab.float().clamp(-1.0, 1.0) * AB_SCALE).unbind(1)
    return torch.hypot(a, b)


# Lab units: the chroma results/blotches measures over-saturation with. In the shared validation photos 0.87% of the pixels
# exceed it (results/blotches/metrics.json, high_chroma_true), so a model far above that over-saturates.
HIGH_CHROMA = 66.0


def out_of_range_mask(ab: torch.Tensor) -> torch.Tensor:
    """(B, H, W) booleans: True where the raw (unclamped) a or b is outside [-1, 1].

    Only a generator without a bounded output can have such pixels; they are shown at the
    gamut's edge, whatever the network meant. Plotted, the mask shows where a model overshoots.
    """
    _check_ab(ab)
    return (ab.float().abs() > 1.0).any(1)


def out_of_range(ab: torch.Tensor) -> torch.Tensor:
    """Per image, the fraction of pixels of `out_of_range_mask`."""
    return out_of_range_mask(ab).flatten(1).float().mean(1)


def high_chroma(ab: torch.Tensor, threshold: float = HIGH_CHROMA) -> torch.Tensor:
    """Per image, the fraction of pixels whose chroma (of the picture shown, see `chroma`) exceeds `threshold`."""
    return (chroma(ab) > threshold).flatten(1).float().mean(1)


def ab_histogram(ab: torch.Tensor, bins: int = 60, limit: float = 3.0) -> dict[str, list[float]]:
    """Histograms of the raw normalised a and b values of a batch, as fractions of its pixels.

    The range (-limit, limit) extends past the [-1, 1] that the clamp keeps, so what a linear
    output layer predicts beyond the gamut stays visible (values past `limit` fall in the end
    bins). Plain lists: small enough to commit in a results file and plot without the model.
    """
    _check_ab(ab)
    edges = torch.linspace(-limit, limit, bins + 1)
    values = ab.detach().float().cpu().clamp(-limit, limit)
    hist = {"edges": [round(e, 4) for e in edges.tolist()]}
    for name, channel in zip("ab", values.unbind(1)):
        counts = torch.histc(channel, bins=bins, min=-limit, max=limit)
        hist[name] = [round(c, 6) for c in (counts / channel.numel()).tolist()]
    return hist


def ab_histogram_figure(histograms: dict[str, dict[str, list[float]]]):
    """Two panels (a, b) of `ab_histogram`s, one line per entry, log scale; outside [-1, 1] shaded grey.

    Log scale because what matters is the tail: a fraction of a percent of pixels beyond the
    gamut is invisible on a linear axis, and shows as a shelf where the truth has none.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, channel in zip(axes, "ab"):
        for label, histogram in histograms.items():
            ax.stairs(histogram[channel], histogram["edges"], label=label, linewidth=1.5)
            edges = histogram["edges"]
        for band in ((edges[0], -1.0), (1.0, edges[-1])):
            ax.axvspan(*band, color="grey", alpha=0.2)
        ax.set(title=f"predicted {channel} (raw, / {AB_SCALE:g})", xlabel=f"{channel} / {AB_SCALE:g}", yscale="log")
    axes[0].set_ylabel("fraction of pixels")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def _check_ab(ab: torch.Tensor) -> None:
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"expected a normalised ab batch (B, 2, H, W), got shape {tuple(ab.shape)}")


@torch.no_grad()
def predict_rgb(generator: nn.Module, L: torch.Tensor) -> torch.Tensor:
    """Colorize a batch of normalised L: the generator's ab, combined with L, as RGB."""
    return L_ab_to_rgb(L, predict_ab(generator, L))


class Grey(nn.Module):
    """The yardstick every colorizer must beat: predicts ab = 0, i.e. shows the grey input as it is.

    PSNR and SSIM reward cautious greyish guesses, so a model that scores below this has made the
    photos worse than leaving them grey.
    """

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return L.new_zeros(L.shape[0], 2, *L.shape[2:])


@torch.no_grad()
def predict_ab(generator: nn.Module, L: torch.Tensor) -> torch.Tensor:
    """The generator's raw ab for a batch of normalised L, before any clamp (float32)."""
    generator.eval()
    return generator(L).float()


@torch.no_grad()
def evaluate(generator: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Mean metrics of `generator` over (L, ab) batches.

    psnr, ssim, colourfulness (pred and true), dCF, saturation (pred and true), and the two
    over-saturation diagnostics, as fractions of pixels: ab_out_of_range (raw ab outside
    [-1, 1], measured before the clamp) and high_chroma / high_chroma_true (chroma above
    HIGH_CHROMA in the prediction shown / in the truth).
    """
    totals: dict[str, float] = {}
    count = 0
    for L, ab in batches:
        raw = predict_ab(generator, L)
        pred, true = L_ab_to_rgb(L, raw), L_ab_to_rgb(L, ab)
        scores = {
            "psnr": psnr(pred, true), "ssim": ssim(pred, true),
            "colourfulness": colourfulness(pred), "colourfulness_true": colourfulness(true),
            "saturation": saturation(pred), "saturation_true": saturation(true),
            "ab_out_of_range": out_of_range(raw),
            "high_chroma": high_chroma(raw), "high_chroma_true": high_chroma(ab),
        }
        scores["dCF"] = scores["colourfulness"] - scores["colourfulness_true"]
        for key, value in scores.items():
            totals[key] = totals.get(key, 0.0) + value.sum().item()
        count += L.shape[0]
    if count == 0:
        raise ValueError("evaluate() got no images")
    return {key: value / count for key, value in totals.items()}


def comparison_grid(columns: dict[str, torch.Tensor], max_rows: int = 8, cell_inches: float = 2.0):
    """A matplotlib figure: one row per image, one column per entry of `columns` (RGB batches).

    The usual columns are {"grayscale": ..., "prediction": ..., "truth": ...}; more
    predictions (baseline, L1-pretrained, +GAN) simply add columns.
    """
    import matplotlib.pyplot as plt

    names = list(columns)
    rows = min(max_rows, min(len(v) for v in columns.values()))
    fig, axes = plt.subplots(rows, len(names), figsize=(cell_inches * len(names), cell_inches * rows), squeeze=False)
    for col, name in enumerate(names):
        for row in range(rows):
            image = columns[name][row].detach().float().cpu().clamp(0, 1).permute(1, 2, 0)
            ax = axes[row][col]
            ax.imshow(image.numpy(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
    fig.tight_layout()
    return fig


def grayscale_rgb(L: torch.Tensor) -> torch.Tensor:
    """Normalised L as a 3-channel grey image: the network's input, as a person sees it."""
    return L_ab_to_rgb(L, torch.zeros_like(L).expand(-1, 2, -1, -1))


def sample_grid(generator: nn.Module, L: torch.Tensor, ab: torch.Tensor, max_rows: int = 8):
    """The standard side-by-side: grayscale | prediction | truth."""
    return comparison_grid(
        {"grayscale": grayscale_rgb(L), "prediction": predict_rgb(generator, L), "truth": L_ab_to_rgb(L, ab)},
        max_rows=max_rows,
    )
