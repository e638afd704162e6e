"""Colorize your own photos, at their own resolution.

The generator works at its training size (e.g. 256 px), but a photo is usually larger.
So we predict ab on a resized copy, upsample ab back to the photo's size, and combine it
with the photo's own full-resolution L: the detail a viewer notices lives in L, and
colour can be blurry without anyone noticing (the same trick as JPEG's chroma subsampling).
The input is always converted to Lab L first, never "channel 0 of RGB" (a bug of the seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm  # plain text bars: notebooks without ipywidgets too

from .checkpoint import load_generator
from .color import AB_SCALE, L_SCALE, lab_to_rgb, rgb_to_lab
from .io import ImageLoadError, list_images, load_rgb
from .runtime import pick_device

MAX_SIDE = 4096  # larger photos are downscaled on load: bounds memory to ~0.5 GB per image


@torch.no_grad()
def colorize_image(generator: nn.Module, image: Image.Image, size: int, device: str | torch.device = "cpu") -> Image.Image:
    """Colorize one RGB (or grayscale-as-RGB) PIL image; returns an RGB image of the same size."""
    generator.eval()
    rgb = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float().div(255).to(device)
    L_full = rgb_to_lab(rgb[None])[:, :1]  # the photo's own lightness, full resolution
    L_small = F.interpolate(L_full, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    ab_small = generator(L_small / L_SCALE - 1.0).float().clamp(-1, 1) * AB_SCALE
    ab_full = F.interpolate(ab_small, size=L_full.shape[-2:], mode="bilinear", align_corners=False)
    out = lab_to_rgb(torch.cat([L_full, ab_full], 1))[0]
    return Image.fromarray((out.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))


def expand_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(files, failures): files as given, folders expanded to their images (`io.list_images`).

    A missing file is kept, for `load_rgb` to report; a folder without images is a failure.
    """
    paths: list[Path] = []
    failures: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            paths.append(item)
            continue
        try:
            paths += list_images(item)
        except FileNotFoundError as err:
            failures.append((item, str(err)))
    return paths, failures


def colorize_files(
    inputs: list[str | Path], out_dir: str | Path, checkpoint: str | Path, device: str | torch.device = "auto"
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Colorize every input file (or folder of images) into `out_dir` as PNG: (written, failures).

    A bad file is a failure `(path, one-line message)` and the others are still processed;
    a bad checkpoint or output folder raises before any work (FileNotFoundError, ValueError).
    Outputs are named `<stem>_color.png`, `<stem>_2_color.png`... when two inputs share a stem.
    """
    if isinstance(inputs, (str, Path)) or not inputs:
        raise ValueError(f"inputs must be a non-empty list of image files or folders, got {inputs!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: the output folder exists and is not a folder")
    device = pick_device(device)
    generator, spec = load_generator(checkpoint, map_location=device)
    generator.to(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[Path] = set()
    paths, failures = expand_inputs(inputs)
    for path in tqdm(paths, desc="colorize", disable=len(paths) < 2):
        try:
            result = colorize_image(generator, load_rgb(path, max_side=MAX_SIDE), spec["size"], device)
        except ImageLoadError as err:
            failures.append((path, str(err)))
            continue
        target = _unused_name(out_dir, path.stem, taken)
        result.save(target)
        written.append(target)
        taken.add(target)
    return written, failures


def _unused_name(out_dir: Path, stem: str, taken: set[Path]) -> Path:
    """`<stem>_color.png`, numbered when an earlier input of this run already took it (a.jpg, a.png)."""
    target, n = out_dir / f"{stem}_color.png", 2
    while target in taken:
        target, n = out_dir / f"{stem}_{n}_color.png", n + 1
    return target
