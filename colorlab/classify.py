"""Colorization as classification (Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016).

A regression loss (L1, L2) answers "which colour?" with the average of the plausible ones,
and the average of red and blue is grey. Zhang et al. instead quantise the ab plane into
bins, let the network predict a probability per bin and pixel, train it with a
cross-entropy that up-weights rare (vivid) colours, and turn the distribution back into
one colour with an "annealed mean" between the mode (vivid, patchy) and the mean (smooth,
greyish). This module holds every piece, batched on the device:

- `gamut_bins`: the centres of the ab grid cells (spacing 10) that hold an sRGB colour;
- `soft_encode`: a true ab map -> its 5 nearest bins with Gaussian weights (sigma 5);
- `colour_prior` / `rebalancing_weights`: the smoothed bin frequencies of a photo set and
  the class-rebalancing weights w ~ ((1 - lambda) p + lambda / Q)^-1;
- `ClassificationObjective`: the rebalanced cross-entropy, the objective of the "classify" stage
  (`colorlab.stages.ObjectiveStage`; `new_classifier` and `objective_for` are what the recipe trains);
- `decode`: annealed mean (T = 0.38), mode (T = 0) and mean (T = 1);
- `build_classifier` / `ClassColorizer`: either generator with Q output channels, wrapped so
  that it outputs ab like the regression generators (evaluation, grids, colorize unchanged).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .cache import cache_key
from .checkpoint import CheckpointError, check_spec, load_checkpoint
from .color import AB_SCALE, L_ab_to_rgb, rgb_to_lab
from .data import CACHE_DIR, ImageDataset, to_model_batch
from .evaluate import comparison_grid, evaluate, grayscale_rgb

PRIOR_CACHE = CACHE_DIR / "priors"  # colour priors of training sets, keyed by their files (cache_key)
GRID = 10  # ab bin spacing (Lab units), as in the paper
SIGMA = 5.0  # Gaussian kernel of the soft encoding and of the prior's smoothing
NEIGHBOURS = 5  # bins per pixel in the soft encoding
LAMBDA = 0.5  # mix of prior and uniform distribution in the rebalancing weights
TEMPERATURE = 0.38  # the paper's annealed-mean temperature
AUC_MAX_THRESHOLD = 150  # Lab units: the paper's accuracy curve runs from 0 to 150
PRIOR_FORMAT = "colorlab-prior-v1"  # part of the prior cache key: bump when the computation changes
_CHUNK = 1 << 14  # pixels per distance matrix: a few (chunk, Q) float tensors bound the memory of soft_encode


@functools.lru_cache(maxsize=None)
def _gamut_cells(grid: int, levels: int) -> tuple[tuple[float, float], ...]:
    # The ab projection of the sRGB solid equals the projection of its surface (every vertical
    # line through the solid meets the surface), so the cube's six faces are enough.
    v = torch.linspace(0.0, 1.0, levels)
    u, w = torch.meshgrid(v, v, indexing="ij")
    faces = []
    for axis in range(3):
        for value in (0.0, 1.0):
            channels = [u, w]
            channels.insert(axis, torch.full_like(u, value))
            faces.append(torch.stack(channels))
    ab = rgb_to_lab(torch.stack(faces))[:, 1:].permute(1, 0, 2, 3).reshape(2, -1)
    cells = torch.unique(torch.round(ab / grid).to(torch.int64).T, dim=0)
    return tuple((float(a) * grid, float(b) * grid) for a, b in cells.tolist())


def gamut_bins(grid: int = GRID, levels: int = 256) -> torch.Tensor:
    """(Q, 2) ab centres (Lab units) of the grid cells that hold at least one sRGB colour at some L.

    Derived, not tabulated: every colour on the surface of the sRGB cube (`levels` steps per
    edge; 256 = all 8-bit colours) is converted to Lab and the cells its ab falls in are kept.
    """
    return torch.tensor(_gamut_cells(grid, levels), dtype=torch.float32)


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, k: int = NEIGHBOURS,
                sigma: float = SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ab (B, 2, H, W) -> (bin indices, weights), each (B, k, H, W), nearest bin first.

    The weights are a Gaussian (sigma in Lab units) of the distance to each of the k nearest
    bins, normalised to sum to 1: a soft one-hot target that says "this colour, or one next to it".
    """
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"expected a normalised ab batch (B, 2, H, W), got shape {tuple(ab.shape)}")
    batch, _, height, width = ab.shape
    points = (ab.float() * AB_SCALE).permute(0, 2, 3, 1).reshape(-1, 2)
    bins = bins.to(points.device, torch.float32)
    indices, weights = [], []
    for chunk in points.split(_CHUNK):
        # The explicit differences, element by element: each pixel's distances are computed by the same
        # float operations whatever the chunk's shape or the CPU. (The expansion |x|^2 - 2 x.c + |c|^2 goes
        # through a matrix product whose BLAS kernel, and so whose rounding, depends on both.)
        da, db = chunk[:, :1] - bins[:, 0], chunk[:, 1:] - bins[:, 1]
        d2 = da * da + db * db
        nearest, index = d2.topk(k, dim=1, largest=False)  # sorted: nearest first
        indices.append(index)
        weights.append(torch.softmax(-nearest / (2 * sigma**2), dim=1))

    def shaped(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts).reshape(batch, height, width, k).permute(0, 3, 1, 2)

    return shaped(indices), shaped(weights)


def soft_target(indices: torch.Tensor, weights: torch.Tensor, n_bins: int) -> torch.Tensor:
    """The dense (B, Q, H, W) target distribution of `soft_encode`'s sparse output (for figures and checks)."""
    target = torch.zeros(indices.shape[0], n_bins, *indices.shape[2:], device=weights.device, dtype=weights.dtype)
    return target.scatter_add_(1, indices, weights)


def bin_counts(ab_batches: Iterable[torch.Tensor], bins: torch.Tensor) -> torch.Tensor:
    """How many pixels of the normalised ab batches fall nearest to each bin: (Q,) float64."""
    counts = torch.zeros(len(bins), dtype=torch.float64)
    for ab in ab_batches:
        nearest = soft_encode(ab, bins, k=1)[0].flatten()
        counts += torch.bincount(nearest, minlength=len(bins)).cpu().double()
    return counts


def smooth_prior(counts: torch.Tensor, bins: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """Bin counts -> probabilities, smoothed over the ab plane with a Gaussian (sigma in Lab units)."""
    bins = bins.double()
    kernel = torch.exp(-torch.cdist(bins, bins).pow(2) / (2 * sigma**2))
    kernel = kernel / kernel.sum(0, keepdim=True)  # each bin spreads its mass, none is created or lost
    smoothed = kernel @ counts.double().to(bins.device)
    return smoothed / smoothed.sum()


def colour_prior(files: list[str | Path], size: int, bins: torch.Tensor | None = None, device: str = "cpu",
                 cache_dir: str | Path | None = None, batch_size: int = 64) -> torch.Tensor:
    """The smoothed colour prior p (Q,) of photos at `size` px, computed once and cached on disk.

    The cache file is named by the photos (paths, sizes, modification times), the size and
    the bins, so another photo set or grid gets its own; it is written atomically.
    """
    bins = gamut_bins() if bins is None else bins
    grid_key = hashlib.sha256(bins.detach().cpu().float().numpy().tobytes()).hexdigest()[:12]
    folder = Path(cache_dir) if cache_dir is not None else PRIOR_CACHE
    path = folder / f"{PRIOR_FORMAT}-{cache_key(files, size)}-{size}px-{grid_key}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path))
    loader = DataLoader(ImageDataset([Path(f) for f in files], size), batch_size=batch_size, num_workers=0)
    counts = bin_counts((to_model_batch(rgb, device)[1] for rgb in loader), bins)
    prior = smooth_prior(counts, bins)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    np.save(tmp, prior.numpy())
    os.replace(tmp, path)
    return prior


def rebalancing_weights(prior: torch.Tensor, lam: float = LAMBDA) -> torch.Tensor:
    """w proportional to ((1 - lam) p + lam / Q)^-1, scaled so that the prior's expectation sum(p w) is 1.

    lam = 0 would equalise the classes completely (rare colours weigh 1/p); lam = 1 leaves
    plain cross-entropy; the paper's lam = 0.5 sits between.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be between 0 and 1, got {lam}")
    prior = prior.double() / prior.sum()
    weights = 1.0 / ((1.0 - lam) * prior + lam / len(prior))
    return (weights / (prior * weights).sum()).float()


def rebalanced_cross_entropy(logits: torch.Tensor, indices: torch.Tensor, targets: torch.Tensor,
                             class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pixels of v(pixel) * -sum_q Z_q log softmax(logits)_q, Z = the soft-encoded target.

    v is the weight of the pixel's nearest bin (the paper's v(Z)); without class weights this
    is the plain multinomial cross-entropy.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    per_pixel = -(targets * log_p.gather(1, indices)).sum(1)
    if class_weights is not None:
        per_pixel = per_pixel * class_weights.to(per_pixel.device)[indices[:, 0]]
    return per_pixel.mean()


class ClassificationObjective:
    """The \"classify\" stage's objective for a Q-logit generator: (logits, true ab) -> losses.

    "loss_G" (what is minimised) is the rebalanced cross-entropy; "loss_CE" the plain one, for
    the curves. The bins and weights are copied to the logits' device once, not every step.
    """

    def __init__(self, bins: torch.Tensor, class_weights: torch.Tensor) -> None:
        if len(bins) != len(class_weights):
            raise ValueError(f"{len(bins)} bins but {len(class_weights)} class weights")
        self.bins, self.class_weights = bins, class_weights
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, logits: torch.Tensor, ab: torch.Tensor) -> dict[str, torch.Tensor]:
        if logits.shape[1] != len(self.bins):
            raise ValueError(f"the generator gives {logits.shape[1]} channels, the objective has {len(self.bins)} bins")
        if logits.device not in self._on:
            self._on[logits.device] = (self.bins.to(logits.device), self.class_weights.to(logits.device))
        bins, class_weights = self._on[logits.device]
        indices, targets = soft_encode(ab, bins)
        return {"loss_G": rebalanced_cross_entropy(logits, indices, targets, class_weights),
                "loss_CE": rebalanced_cross_entropy(logits.detach(), indices, targets)}


def decode(logits: torch.Tensor, bins: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Q logits per pixel -> normalised ab (B, 2, H, W): the annealed mean of the bins at `temperature`.

    T = 1 is the mean of the predicted distribution, T -> 0 its mode (T = 0 takes the mode
    exactly); the paper's T = 0.38 keeps most of the mode's vividness without its speckle.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    bins = bins.to(logits.device, torch.float32)
    logits = logits.float()
    if temperature == 0:
        ab = bins[logits.argmax(1)].permute(0, 3, 1, 2)
    else:
        ab = torch.einsum("bqhw,qc->bchw", torch.softmax(logits / temperature, dim=1), bins)
    return ab / AB_SCALE


def build_classifier(arch: str = "resnet18", size: int = 256, weights: str | Path | None = None,
                     bins: torch.Tensor | None = None) -> nn.Module:
    """A generator of `colorlab.models` with one output channel per bin (logits: no tanh).

    The bins are stored in the network (buffer `ab_bins`), so a checkpoint carries the
    classes its channels mean; the spec records `head="classification"` and their number.
    """
    from .models import Unet, generator_spec, init_weights, resnet18_unet

    bins = gamut_bins() if bins is None else bins
    spec = generator_spec(arch, size) | {"head": "classification", "bins": len(bins)}
    if arch == "baseline":
        net = init_weights(Unet(in_channels=1, out_channels=len(bins), n_down=spec["n_down"]))
        net.model.model[-1] = nn.Identity()  # the regression U-Net's tanh would cap the logits at +-1
    else:
        net = resnet18_unet(size=size, weights=weights, out_channels=len(bins))
        spec["pretrained"] = net.pretrained
    net.register_buffer("ab_bins", bins.clone().float())
    net.spec = spec
    return net


def init_from(net: nn.Module, checkpoint_path: str | Path) -> int:
    """Copy every weight of a regression checkpoint of the same architecture whose shape fits (all but the head).

    Starting from a trained L1 generator the encoder and decoder already see the photos;
    only the last layer must learn bins instead of ab. Returns how many tensors were copied.
    """
    state = load_checkpoint(checkpoint_path)
    check_spec({k: state["spec"].get(k) for k in ("arch", "size")}, {k: net.spec[k] for k in ("arch", "size")},
               checkpoint_path)
    own = net.state_dict()
    fitting = {k: v for k, v in state["generator"].items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise CheckpointError(f"{checkpoint_path}: no weight fits the classifier")
    net.load_state_dict(fitting, strict=False)
    net.spec = net.spec | {"init": Path(checkpoint_path).name}
    return len(fitting)


class ClassColorizer(nn.Module):
    """A Q-logit network that outputs ab like a regression generator: decoding is part of forward.

    `colorlab.evaluate`, the grids and colorize work on it unchanged; `temperature` can be
    changed at any time (0 = mode, 1 = mean).
    """

    def __init__(self, net: nn.Module, temperature: float = TEMPERATURE) -> None:
        super().__init__()
        self.net, self.temperature, self.spec = net, temperature, net.spec

    def logits(self, L: torch.Tensor) -> torch.Tensor:
        return self.net(L).float()

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return decode(self.logits(L), self.net.ab_bins, self.temperature)


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> ClassColorizer:
    """Rebuild a classifier saved by the classification recipe (e.g. the classification recipe's classify.pt)."""
    state = load_checkpoint(path, map_location=map_location)
    spec = state["spec"]
    if spec.get("head") != "classification":
        raise CheckpointError(f"{path}: not a classification checkpoint (use colorlab.checkpoint.load_generator)")
    net = build_classifier(spec["arch"], spec["size"], bins=state["generator"]["ab_bins"].float())
    net.load_state_dict(state["generator"])
    net.spec = spec
    return ClassColorizer(net.to(map_location)).eval()


@torch.no_grad()
def ab_accuracy_auc(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    max_threshold: int = AUC_MAX_THRESHOLD) -> float:
    """Zhang et al.'s raw accuracy AuC: the share of pixels whose predicted ab lies within t of the truth
    (Euclidean, Lab units, ab clamped as shown), averaged over t = 0, 1, ..., max_threshold (area under
    the curve normalised to 1)."""
    thresholds = torch.arange(max_threshold + 1, dtype=torch.float32)
    hits, pixels = torch.zeros(len(thresholds), dtype=torch.float64), 0
    model.eval()
    for L, ab in batches:
        pred = model(L).float().clamp(-1, 1)
        distance = ((pred - ab.float().clamp(-1, 1)) * AB_SCALE).norm(dim=1).flatten().cpu()
        hits += torch.searchsorted(distance.sort().values, thresholds, right=True).double()
        pixels += distance.numel()
    if pixels == 0:
        raise ValueError("ab_accuracy_auc() got no images")
    return float(torch.trapezoid(hits / pixels, dx=1.0) / max_threshold)


def scores(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """`colorlab.evaluate.evaluate`'s metrics plus the accuracy AuC: one row of the chapter's table, any model."""
    return evaluate(model, batches) | {"auc": ab_accuracy_auc(model, batches)}


def recorded_comparison(folder: str | Path | None = None) -> dict | None:
    """The committed 64 px comparison (comparison.json: command, device, date, metrics per model) of `folder`,
    by default results/cpu64-classification beside the book (`book.recorded_results`); None where it is not
    at hand (e.g. a pip install)."""
    from .book import recorded_results

    folder = folder or recorded_results("cpu64-classification")
    path = Path(folder or "") / "comparison.json"
    return json.loads(path.read_text()) if folder and path.is_file() else None


@torch.no_grad()
def decoding_grid(model: ClassColorizer, L: torch.Tensor, ab: torch.Tensor,
                  temperatures: tuple[float, ...] = (0.0, TEMPERATURE, 1.0), max_rows: int = 8):
    """grayscale | one column per decoding temperature | truth: how T trades vividness for smoothness."""
    model.eval()
    logits = model.logits(L)
    columns = {"grayscale": grayscale_rgb(L)}
    for t in temperatures:
        name = {0.0: "mode (T=0)", 1.0: "mean (T=1)"}.get(t, f"annealed T={t:g}")
        columns[name] = L_ab_to_rgb(L, decode(logits, model.net.ab_bins, t))
    columns["truth"] = L_ab_to_rgb(L, ab)
    return comparison_grid(columns, max_rows=max_rows)


def new_classifier(size: int, weights: str | Path | None = None, init: str | Path | None = None) -> nn.Module:
    """The classification recipe's network: ResNet18-DynamicUnet with one output per bin, started from `init`
    (a regression checkpoint of the same size: every weight but the head) when given."""
    net = build_classifier("resnet18", size, weights=weights, bins=gamut_bins())
    if init:
        init_from(net, init)
    return net


def objective_for(net: nn.Module, train_files: list[Path], size: int) -> ClassificationObjective:
    """The rebalanced cross-entropy of `net`'s bins, weighted by the colour prior of the training photos."""
    bins = net.ab_bins.cpu()
    return ClassificationObjective(bins, rebalancing_weights(colour_prior(train_files, size, bins)))
