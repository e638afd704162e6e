"""User-guided colorization (Zhang, Zhu, Isola, Geng, Lin, Yu and Efros, SIGGRAPH 2017): colour hints as input.

Automatic colorization cannot know that the car was red; a person often can. The network
gets, besides L, a few "hints": a 2-channel map of known ab and a 1-channel mask saying
where the map holds one. During training the hints are simulated from the true image, as in
the authors' code (richzhang/colorization-pytorch, `util/util.py`, `add_color_patches_rand_gt`,
MIT licence):

- the number of hints is geometric: keep adding one while a uniform draw is below 1 - p
  (training: p = 1/8, so 7 hints on average and no hint at all for 1 photo in 8);
- each hint is a square patch of side P drawn from 1..9 pixels, its corner placed around the
  centre (normal, mean (H - P + 1) / 2, sd (H - P + 1) / 4, clipped to the image, truncated
  to a pixel); its value is the patch's mean true ab; a later patch paints over an earlier one;
- near-grey photos (a + b ranges below 5 Lab units) are left out of training.

Here the draws are not taken from a random generator's stream but hashed from (seed, epoch,
the photo's position in the epoch, draw number), for a whole batch at once on its device: a
photo gets the same hints whichever batch or process holds it, and a resumed run simulates
exactly what the uninterrupted one did (`colorlab.data.flip_mask` does the same for flips).

The network (`HintGenerator`) is the ResNet18-DynamicUnet with 4 input channels (L, hint a,
hint b, mask), built from a trained 1-channel model: every weight the two share is copied and
every weight that reads a new input channel starts at zero, so that without hints it computes
exactly what the 1-channel model computes. Given only L it adds empty hints itself, so
`colorlab.evaluate`, the grids and `colorlab colorize` use it like any generator.

`evaluate_hints` measures any such model the same way: PSNR against the number of hints, with
fixed-size patches (Zhang et al.'s sweep used 6 x 6 patches at 256 px). A user's hints come
from a small JSON or CSV file (`read_hints`): x, y in the photo's pixels and an RGB or Lab colour.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import CheckpointError
from .color import AB_SCALE, L_ab_to_rgb, rgb_to_lab
from .data import _hash32
from .evaluate import psnr
from .models import LINEAR, build_discriminator, resnet18_unet
from .stages import GANStage, L1Stage, TrainConfig

TRAIN_P = 1 / 8  # probability of stopping after each hint while training (a geometric number of hints)
PATCH_SIDES = tuple(range(1, 10))  # the sides of a training hint's square patch (opt.sample_Ps)
GREY_AB_RANGE = 5 / AB_SCALE  # a photo whose a and b ranges add up to less (5 Lab units) is left out of training
HINT_CHANNELS = 3  # hint a, hint b (normalised like the target, ab / 110), mask (1 where a hint is)
HINT_COUNTS = (0, 1, 2, 5, 10, 20, 50, 100)  # the curve of chapter 11
ZHANG_PATCH, ZHANG_SIZE = 6, 256  # their sweep's hint patches (6 x 6) at their image size
# Zhang et al.'s measured PSNR (dB) against the number of hints: their SIGGRAPH 2017 model, 1000 ImageNet
# validation photos at 256 px, 6 x 6 hint patches; richzhang/colorization-pytorch, resources/psnrs_siggraph.npy
# (values at these counts as quoted in this project's issue 30). ImageNet-trained at 256 px: not our setting.
ZHANG_PSNR = {0: 24.43, 1: 25.37, 2: 26.20, 5: 27.39, 10: 28.42, 20: 29.34, 50: 30.42, 100: 31.13,
              200: 31.70, 501: 32.14}
_DRAWS_PER_HINT = 5  # patch side, two uniforms for the row, two for the column (Box-Muller)
_GOLDEN = 0x9E3779B9


# --- simulated hints ---------------------------------------------------------------------------------------------


def _uniform(base: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in (0, 1), one per (photo key in `base`, draw number in `draw`), broadcast together."""
    bits = _hash32((base ^ _hash32((draw * _GOLDEN) & 0xFFFFFFFF)) & 0xFFFFFFFF)
    return (bits.double() + 0.5) / 2**32


def _corner(u1: torch.Tensor, u2: torch.Tensor, extent: int, side: torch.Tensor) -> torch.Tensor:
    """A patch's first row (or column): normal around the centre, clipped to the image, truncated (Box-Muller)."""
    normal = torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
    room = (extent - side + 1).double()
    return torch.minimum((room / 2 + room / 4 * normal).clamp(min=0).long(), extent - side)


def simulate_hints(ab: torch.Tensor, seed: int, epoch: int, positions: torch.Tensor, count: int | None = None,
                   p: float = TRAIN_P, sides: Sequence[int] = PATCH_SIDES) -> torch.Tensor:
    """Hints (B, 3, H, W) for the true `ab` (B, 2, H, W): hint a, hint b and the mask, on `ab`'s device.

    The draws of photo i depend only on (seed, epoch, positions[i]). `count` gives every photo
    that many hints (evaluation; a photo's first n hints are the same whatever the count),
    otherwise the number is geometric with stopping probability `p` (training). Each patch's
    side is drawn from `sides`.
    """
    batch, _, height, width = ab.shape
    device = ab.device
    key = _hash32(_hash32(seed & 0xFFFFFFFF) ^ (epoch & 0xFFFFFFFF))
    base = _hash32(positions.to(device).long() ^ key)[:, None]  # (B, 1)
    if count is None:
        n = torch.floor(torch.log(_uniform(base[:, 0], torch.zeros((), dtype=torch.long, device=device)))
                        / math.log(1 - p)).long()
    else:
        n = torch.full((batch,), count, dtype=torch.long, device=device)
    hints = ab.new_zeros(batch, HINT_CHANNELS, height, width)
    most = int(n.max()) if batch else 0
    if most == 0:
        return hints
    first_draw = 1 + _DRAWS_PER_HINT * torch.arange(most, device=device)[None]  # (1, K)
    draw = [_uniform(base, first_draw + k) for k in range(_DRAWS_PER_HINT)]  # each (B, K)
    side_of = torch.tensor(list(sides), device=device)
    side = side_of[(draw[0] * len(sides)).long().clamp(max=len(sides) - 1)]
    top, left = _corner(draw[1], draw[2], height, side), _corner(draw[3], draw[4], width, side)
    used = torch.arange(most, device=device)[None] < n[:, None]  # (B, K): photo b's first n[b] hints
    # the patches' mean true ab: a mean filter per side, read at each patch's corner
    photo = torch.arange(batch, device=device)[:, None].expand(batch, most)
    values = ab.new_zeros(batch, most, 2)
    for s in side.unique().tolist():
        chosen = side == s
        means = F.avg_pool2d(ab.float(), s, stride=1).to(ab.dtype)  # (B, 2, H - s + 1, W - s + 1)
        values[chosen] = means[photo[chosen], :, top[chosen], left[chosen]]
    # paint in order, as one by one: a later patch paints over an earlier one
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    for k in range(most):
        t, l, s = (x[:, k, None, None] for x in (top, left, side))
        covers = used[:, k, None, None] & (rows >= t) & (rows < t + s) & (cols >= l) & (cols < l + s)  # (B, H, W)
        hints[:, :2] = torch.where(covers[:, None], values[:, k, :, None, None], hints[:, :2])
        hints[:, 2] = torch.where(covers, 1.0, hints[:, 2])
    return hints


def colourful(ab: torch.Tensor, threshold: float = GREY_AB_RANGE) -> torch.Tensor:
    """Which photos of a normalised ab batch are not near-grey (the sum of the a and b ranges reaches `threshold`)."""
    spread = ab.amax((2, 3)) - ab.amin((2, 3))
    return spread.sum(1) >= threshold


# --- the 4-channel generator ---------------------------------------------------------------------------------


class HintGenerator(nn.Module):
    """ResNet18-DynamicUnet on (L, hint a, hint b, mask); given L alone, it uses the hints of `given`, else none."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self._hints: torch.Tensor | None = None
        self.frozen_body = False  # set by freeze_all_but_hints: BatchNorm then stays in eval mode

    def train(self, mode: bool = True) -> "HintGenerator":
        super().train(mode)
        if self.frozen_body:
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            hints = self._hints if self._hints is not None else x.new_zeros(x.shape[0], HINT_CHANNELS, *x.shape[2:])
            x = torch.cat([x, hints.to(x.dtype)], 1)
        return self.net(x)

    @contextmanager
    def given(self, hints: torch.Tensor):
        """Within the block, a call with L alone sees these hints (how a stage written for L-only generators trains it)."""
        self._hints = hints
        try:
            yield self
        finally:
            self._hints = None


def hint_spec(init_spec: dict) -> dict:
    """The spec of the hint generator grown from a 1-channel resnet18 generator's spec."""
    if init_spec.get("arch") != "resnet18" or init_spec.get("hints"):
        raise CheckpointError(f"hints start from a 1-channel resnet18 generator, not {init_spec}")
    return {k: init_spec[k] for k in ("arch", "size", "output", "pretrained") if k in init_spec} | {"hints": True}


def hint_generator_from_spec(spec: dict) -> HintGenerator:
    """The untrained 4-channel generator a hint spec describes (its weights come from a checkpoint)."""
    net = resnet18_unet(spec["size"], weights=None, output=spec.get("output", LINEAR), in_channels=1 + HINT_CHANNELS)
    generator = HintGenerator(net)
    generator.spec = spec
    return generator


def widen(generator: nn.Module) -> HintGenerator:
    """A 4-channel `HintGenerator` that, without hints, computes what the 1-channel resnet18 `generator` computes.

    Every tensor of the wider network holds the old one in its leading block; every other entry
    is zero: those that read a new input channel (the first convolution's hint columns, and the
    decoder's last block, to which DynamicUnet feeds the input again) and those of the last
    block's 3 new channels, which its residual connection therefore fills with the hints
    themselves (what `hint_pathway` lets the final convolution learn from).
    """
    wide = hint_generator_from_spec(hint_spec(generator.spec))
    old, new = generator.state_dict(), wide.net.state_dict()
    if old.keys() != new.keys():
        raise CheckpointError("the 1-channel generator's layers do not match the 4-channel one's")
    for key, value in old.items():
        target = new[key]
        if target.shape != value.shape:
            target.zero_()
            target[tuple(slice(0, n) for n in value.shape)] = value
        else:
            target.copy_(value)
    wide.net.load_state_dict(new)
    return wide


def hints_start(init: str | Path, size: int, device: str | torch.device = "cpu") -> HintGenerator:
    """The hint generator widened from `init`: a 1-channel checkpoint file or a published model's name."""
    from . import hub
    from .checkpoint import load_generator

    if Path(init).is_file():
        generator, _ = load_generator(init)
    elif init in hub.MODELS:
        generator = hub.load_pretrained(str(init))  # found or downloaded, checked against its sha256
    else:
        raise FileNotFoundError(f"hints: init {init} is neither a checkpoint file nor a published model "
                                f"({', '.join(hub.MODELS)})")
    if generator.spec["size"] != size:
        raise ValueError(f"hints: init {init} is a {generator.spec['size']} px model, the run is {size} px")
    wide = widen(generator.cpu())
    wide.spec = wide.spec | {"init": Path(init).stem}
    return wide.to(device)


# --- training -------------------------------------------------------------------------------------------------


def hint_pathway(generator: HintGenerator) -> dict[str, torch.Tensor]:
    """Parameter name -> boolean mask of the entries that read the hints, and only the hints.

    Three places read them: the first convolution's hint columns; in DynamicUnet's last block
    (which concatenates the input with the decoder's features), the first convolution's hint
    columns into the 1-channel model's channels; and the final 1 x 1 convolution's columns for the
    block's 3 new channels, which `widen` made the hints themselves (ReLU of hint a, b and mask).
    Without hints every one of them multiplies a zero, so training them leaves the no-hint output as it was.
    """
    from fastai.layers import ResBlock

    net = generator.net
    layers = list(net.layers)
    block = next(layer for layer in reversed(layers) if isinstance(layer, ResBlock))
    final = layers[layers.index(block) + 1][0]
    rows = {net.layers[0][0].weight: None, block.convpath[0][0].weight: -HINT_CHANNELS, final.weight: None}
    masks = {}
    for name, parameter in net.named_parameters():
        if any(parameter is weight for weight in rows):
            mask = torch.zeros_like(parameter, dtype=torch.bool)
            mask[:next(v for k, v in rows.items() if k is parameter), -HINT_CHANNELS:] = True
            masks[name] = mask
    return masks


def freeze_all_but_hints(generator: HintGenerator) -> int:
    """Train only the hint pathway: without hints the generator stays exactly the 1-channel model it grew from.

    Why: trained as a whole, the widened network learns to lean on the hints and gets worse without
    them (results/hints64/README.md). As ControlNet does for image diffusion models, the automatic
    colorizer is kept as it is and only what reads the hints learns: every other parameter stops
    requiring a gradient, the other entries of the three tensors of `hint_pathway` get a zero
    gradient (Adam then never moves them: its step is 0 / (0 + eps)), and BatchNorm keeps its
    running statistics (`HintGenerator.train` leaves it in eval mode).
    Returns the number of trainable entries.
    """
    masks = hint_pathway(generator)
    for name, parameter in generator.net.named_parameters():
        if name in masks:
            parameter.register_hook(lambda grad, mask=masks[name]: grad * mask.to(grad.device))
        else:
            parameter.requires_grad_(False)
    generator.frozen_body = True
    generator.train(generator.training)
    return int(sum(int(mask.sum()) for mask in masks.values()))


class _HintMixin:
    """Simulate hints for each batch and train the hint pathway given them (`freeze_all_but_hints`); the
    rest is the stage it is mixed into."""

    generator: HintGenerator
    config: TrainConfig

    def __init__(self, generator: HintGenerator, *args, **kwargs) -> None:
        super().__init__(generator, *args, **kwargs)
        freeze_all_but_hints(generator)

    def at(self, epoch: int, positions: torch.Tensor) -> None:
        self._where = (epoch, positions)

    def step(self, L, ab, scaler=None):
        epoch, positions = self._where
        hints = simulate_hints(ab, self.config.seed, epoch, positions)
        keep = colourful(ab)
        if 2 <= int(keep.sum()) < len(keep):  # near-grey photos are dropped; BatchNorm needs two photos
            L, ab, hints = L[keep], ab[keep], hints[keep]
        with self.generator.given(hints):
            return super().step(L, ab, scaler)


class HintL1Stage(_HintMixin, L1Stage):
    """L1 regression of the true colours, given simulated hints (Zhang et al. 2017 trained with a smooth L1)."""

    name = "hints"


class HintGANStage(_HintMixin, GANStage):
    """cGAN + lambda * L1 given simulated hints; the PatchGAN judges (L, ab) as in pix2pix."""

    name = "hints-gan"


def build_hint_stage(name: str, generator: nn.Module, config: TrainConfig):
    """The hint stage `name`: "hints" (L1) or "hints-gan" (cGAN + lambda * L1)."""
    if not isinstance(generator, HintGenerator):
        raise ValueError("hint stages train a HintGenerator (colorlab.hints.hints_start)")
    if name == "hints":
        return HintL1Stage(generator, config)
    return HintGANStage(generator, config, build_discriminator())


# --- evaluation -------------------------------------------------------------------------------------------------


def hint_patch(size: int) -> int:
    """The evaluation patch side at `size` px: Zhang et al.'s 6 px at 256 px, scaled (2 px at 64 px)."""
    return max(1, round(ZHANG_PATCH * size / ZHANG_SIZE))


@torch.no_grad()
def evaluate_hints(model: nn.Module, photos: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   counts: Sequence[int] = HINT_COUNTS, seed: int = 0, patch: int | None = None) -> dict[int, float]:
    """Mean PSNR (dB, RGB) of `model` on `photos` ((L, ab) batches) given n hints, for each n in `counts`.

    Every photo gets `count` square patches of side `patch` (default `hint_patch`) of its true
    mean colour, placed as in training; photo i's hints depend only on (seed, i), and its first
    n are the same for every count. A 1-channel model can only be measured at 0 hints.
    """
    model.eval()
    device = next(model.parameters()).device
    totals, n_photos = dict.fromkeys(counts, 0.0), 0
    for L, ab in photos:
        L, ab = L.to(device), ab.to(device)
        positions = torch.arange(n_photos, n_photos + len(L))
        truth = L_ab_to_rgb(L, ab)
        for count in counts:
            if count and not isinstance(model, HintGenerator):
                raise ValueError(f"a 1-channel model takes no hints; evaluate it with counts=(0,), not {counts}")
            hints = simulate_hints(ab, seed, 0, positions, count=count, sides=(patch or hint_patch(L.shape[-1]),))
            x = torch.cat([L, hints], 1) if isinstance(model, HintGenerator) else L
            totals[count] += psnr(L_ab_to_rgb(L, model(x).float()), truth).sum().item()
        n_photos += len(L)
    return {count: total / n_photos for count, total in totals.items()}


def recorded_run(folder: str | Path | None = None) -> dict | None:
    """The committed 64 px run's measurements (metrics.json: command, machine, date, PSNR per number of hints)
    of `folder`, by default results/hints64 beside the book (`book.recorded_results`); None where it is not
    at hand (e.g. a pip install)."""
    from .book import recorded_results

    folder = folder or recorded_results("hints64")
    path = Path(folder or "") / "metrics.json"
    return json.loads(path.read_text()) if folder and path.is_file() else None


@torch.no_grad()
def hints_only_psnr(photos: Iterable[tuple[torch.Tensor, torch.Tensor]], counts: Sequence[int] = HINT_COUNTS,
                    seed: int = 0, patch: int | None = None) -> dict[int, float]:
    """The yardstick beside `evaluate_hints`: PSNR of the grey photo with only the hint patches coloured."""
    totals, n_photos = dict.fromkeys(counts, 0.0), 0
    for L, ab in photos:
        positions = torch.arange(n_photos, n_photos + len(L))
        truth = L_ab_to_rgb(L, ab)
        for count in counts:
            hints = simulate_hints(ab, seed, 0, positions, count=count, sides=(patch or hint_patch(L.shape[-1]),))
            totals[count] += psnr(L_ab_to_rgb(L, hints[:, :2]), truth).sum().item()
        n_photos += len(L)
    return {count: total / n_photos for count, total in totals.items()}


# --- figures ------------------------------------------------------------------------------------------------------


def curve_figure(curves: dict[str, dict[int, float]], zhang: bool = True, ax=None):
    """PSNR against the number of hints, one line per entry of `curves`, and Zhang et al.'s published curve."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4.2))[1]
    lines = dict(curves) | ({"Zhang et al. 2017 (ImageNet, 256 px, 6x6 patches)": ZHANG_PSNR} if zhang else {})
    for label, curve in lines.items():
        counts = sorted(int(n) for n in curve)
        ax.plot(counts, [curve[n] if n in curve else curve[str(n)] for n in counts], marker="o", label=label,
                linestyle="--" if label.startswith("Zhang") else "-")
    ax.set_xscale("symlog", linthresh=1)
    ax.set(xlabel="number of hints", ylabel="PSNR (dB)", title="PSNR against the number of hints")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


@torch.no_grad()
def hint_grid(model: HintGenerator, L: torch.Tensor, ab: torch.Tensor, counts: Sequence[int] = (0, 3, 10),
              seed: int = 0, patch: int | None = None, max_rows: int = 3):
    """Rows of photos: grayscale, the model given each number of hints (marked by squares of their colour), truth.

    The hints are those of `evaluate_hints` for photos at positions 0, 1, ... of the batch.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    model.eval()
    device = next(model.parameters()).device
    L, ab = L[:max_rows].to(device), ab[:max_rows].to(device)
    patch = patch or hint_patch(L.shape[-1])
    rows = len(L)
    fig, axes = plt.subplots(rows, len(counts) + 2, figsize=(1.9 * (len(counts) + 2), 1.9 * rows + 0.4), squeeze=False)
    positions = torch.arange(rows)
    truth = L_ab_to_rgb(L, ab).cpu()
    axes[0, 0].set_title("grayscale", fontsize="small")
    axes[0, -1].set_title("truth", fontsize="small")
    for row in range(rows):
        axes[row, 0].imshow(L_ab_to_rgb(L[row:row + 1], torch.zeros_like(ab[row:row + 1]))[0].permute(1, 2, 0).cpu())
        axes[row, -1].imshow(truth[row].permute(1, 2, 0))
    for column, count in enumerate(counts, 1):
        hints = simulate_hints(ab, seed, 0, positions, count=count, sides=(patch,))
        result = L_ab_to_rgb(L, model(torch.cat([L, hints], 1)).float()).cpu()
        marks = L_ab_to_rgb(L, hints[:, :2]).cpu()  # the hint colours, with the photo's own lightness
        axes[0, column].set_title(f"{count} hint{'s' * (count != 1)}", fontsize="small")
        for row in range(rows):
            axes[row, column].imshow(result[row].permute(1, 2, 0))
            mask = hints[row, 2].cpu()
            for top, left in torch.nonzero(mask).tolist():
                colour = marks[row, :, top, left].tolist()
                axes[row, column].add_patch(Rectangle((left - 0.5, top - 0.5), 1, 1, facecolor=colour,
                                                      edgecolor="white", linewidth=0.4))
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    fig.tight_layout()
    return fig


# --- a user's hints ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hint:
    """One user hint: the pixel (x from the left, y from the top) of the photo, and its colour as Lab."""

    x: float
    y: float
    lab: tuple[float, float, float]


class HintsFileError(ValueError):
    """A hints file that cannot be read, or holds a hint that is malformed or outside the photo (one line)."""


def _colour(row: dict, where: str) -> tuple[float, float, float]:
    """The Lab colour of a hint row given as r, g, b (0-255) or as L, a, b."""
    keys = {k.lower(): v for k, v in row.items() if k is not None}
    try:
        if {"r", "g", "b"} <= keys.keys():
            rgb = [float(keys[k]) for k in ("r", "g", "b")]
            if not all(0 <= v <= 255 for v in rgb):
                raise HintsFileError(f"{where}: r, g, b must be between 0 and 255, got {rgb}")
            lab = rgb_to_lab(torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1) / 255).flatten().tolist()
            return tuple(lab)
        if {"l", "a", "b"} <= keys.keys():
            lab = [float(keys[k]) for k in ("l", "a", "b")]
            if not 0 <= lab[0] <= 100:
                raise HintsFileError(f"{where}: L must be between 0 and 100, got {lab[0]}")
            return tuple(lab)
    except (TypeError, ValueError) as err:
        if isinstance(err, HintsFileError):
            raise
        raise HintsFileError(f"{where}: a colour must be numbers ({err})") from None
    raise HintsFileError(f"{where}: a hint needs x, y and a colour as r, g, b (0-255) or L, a, b; got {sorted(keys)}")


def parse_hints(rows: Sequence[dict], width: int, height: int, source: str = "hints") -> list[Hint]:
    """Hints from rows of x, y and a colour, checked against a `width` x `height` photo (one-line errors)."""
    hints = []
    for number, row in enumerate(rows, 1):
        where = f"{source}: hint {number}"
        if not isinstance(row, dict):
            raise HintsFileError(f"{where}: expected an object with x, y and a colour, got {row!r}")
        keys = {k.lower(): v for k, v in row.items() if k is not None}
        try:
            x, y = float(keys["x"]), float(keys["y"])
        except KeyError as err:
            raise HintsFileError(f"{where}: no {err.args[0]} (a hint needs x, y and a colour)") from None
        except (TypeError, ValueError):
            raise HintsFileError(f"{where}: x and y must be numbers, got {keys['x']!r}, {keys['y']!r}") from None
        if not (0 <= x < width and 0 <= y < height):
            raise HintsFileError(f"{where}: ({x:g}, {y:g}) is outside the {width}x{height} photo")
        hints.append(Hint(x, y, _colour(row, where)))
    return hints


def read_hints(path: str | Path, width: int, height: int) -> list[Hint]:
    """A hints file for a `width` x `height` photo: JSON (a list of objects, or {"hints": [...]}) or CSV with a header.

    Each hint has x, y (pixels of the photo, from its top-left corner) and a colour, either
    r, g, b (0-255) or L, a, b. For example ``[{"x": 120, "y": 80, "r": 200, "g": 30, "b": 30}]``
    or the CSV ``x,y,r,g,b`` / ``120,80,200,30,30``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise HintsFileError(f"{path}: cannot read the hints file ({type(err).__name__}: {err})") from None
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise HintsFileError(f"{path}: not valid JSON ({err})") from None
        if isinstance(rows, dict):
            rows = rows.get("hints")
        if not isinstance(rows, list):
            raise HintsFileError(f"{path}: expected a JSON list of hints (or {{\"hints\": [...]}})")
    else:
        rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise HintsFileError(f"{path}: no hints in the file")
    return parse_hints(rows, width, height, source=str(path))


def hint_map(hints: Sequence[Hint], width: int, height: int, size: int, patch: int = 1) -> torch.Tensor:
    """The (1, 3, size, size) hint input for a photo of `width` x `height` resized to the model's `size`."""
    hints_in = torch.zeros(1, HINT_CHANNELS, size, size)
    half = (patch - 1) // 2
    for hint in hints:
        col = min(size - 1, int(hint.x * size / width))
        row = min(size - 1, int(hint.y * size / height))
        top, left = max(0, row - half), max(0, col - half)
        hints_in[0, 0, top:top + patch, left:left + patch] = hint.lab[1] / AB_SCALE
        hints_in[0, 1, top:top + patch, left:left + patch] = hint.lab[2] / AB_SCALE
        hints_in[0, 2, top:top + patch, left:left + patch] = 1
    return hints_in


def colorize_with_hints(photo: str | Path, out_dir: str | Path, checkpoint: str | Path, hints_file: str | Path,
                        device: str | torch.device = "auto") -> Path:
    """Colorize one photo given a user's hints (`read_hints`, in the photo's pixels) into `out_dir/<stem>_color.png`.

    The hints are checked against the photo before the model runs; the colour is predicted at
    the model's size with the hints placed there, and applied to the full-size L as
    `colorlab.colorize` does for any photo.
    """
    from .atomic import atomic_write
    from .checkpoint import load_generator
    from .colorize import colorize_image, load_for_colorize
    from .io import image_size
    from .runtime import pick_device

    device = pick_device(device)
    generator, spec = load_generator(checkpoint, map_location=device)
    if not isinstance(generator, HintGenerator):
        raise ValueError(f"{checkpoint} takes no hints: --hints needs a model trained with them "
                         "(colorlab train --recipe hints)")
    image = load_for_colorize(photo)  # upright (EXIF), and decoded downscaled when huge
    factor = max(image_size(photo)) / max(image.size)  # the user's pixels are the full-size photo's
    width, height = round(image.width * factor), round(image.height * factor)
    hints = read_hints(hints_file, width, height)
    size = spec["size"]
    with generator.to(device).given(hint_map(hints, width, height, size, hint_patch(size)).to(device)):
        result = colorize_image(generator, image, size, device)
    target = Path(out_dir) / f"{Path(photo).stem}_color.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, "colorized image") as tmp:
        result.save(tmp, format="PNG")
    return target


__all__ = ["GREY_AB_RANGE", "HINT_COUNTS", "Hint", "HintGANStage", "HintGenerator", "HintL1Stage", "HintsFileError",
           "PATCH_SIDES", "TRAIN_P", "ZHANG_PSNR", "build_hint_stage", "colorize_with_hints", "colourful", "curve_figure", "hint_grid", "evaluate_hints", "hint_map",
           "hint_patch", "hint_spec", "hint_generator_from_spec", "hints_only_psnr", "hints_start", "parse_hints",
           "read_hints", "recorded_run", "simulate_hints", "widen"]
