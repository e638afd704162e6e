"""Colorize your own photos, at their own resolution.

The generator works at its training size (e.g. 256 px), but a photo is usually larger.
So we predict ab on a resized copy, upsample ab back to the photo's size, and combine it
with the photo's own full-resolution L: the detail a viewer notices lives in L, and
colour can be blurry without anyone noticing (the same trick as JPEG's chroma subsampling).
The input is always converted to Lab L first, never "channel 0 of RGB" (a bug of the reference tutorial).

Memory: the full-size photo is never converted to float as a whole. The upsampled ab, the
Lab -> RGB conversion and the result are computed strip by strip (`STRIP_PIXELS` pixels at a
time) and pasted into the output picture, so besides the decoded photo and the output (4 bytes
per pixel each in PIL) the work needs a few MB whatever the photo's size. Measured peak RSS
growth for a 4000x3000 photo: 77 MB, against 1454 MB when the whole photo went through float
tensors at once (see docs/reliability.md for the command).
Photos above `MAX_PIXELS` are decoded downscaled (JPEG only, by 2, 4 or 8 per side) and a
`DownscaledWarning` says so; other formats that large are refused with one line.

Nothing of the user's is overwritten: an input whose `<stem>_color.png` already exists is skipped
(unless `overwrite`), and files named like outputs inside the output folder are never taken as
inputs when a folder is expanded (rerunning `colorize photos -o photos/colorized` would otherwise
colorize its own results into `a_color_color.png`). One `SkippedOutputWarning` names what was skipped.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm  # plain text bars: notebooks without ipywidgets too

from .atomic import WriteError, atomic_write
from .checkpoint import load_generator
from .color import AB_SCALE, L_SCALE, lab_to_rgb, rgb_to_lab
from .io import DEFAULT_MAX_PIXELS, ImageLoadError, image_size, list_images, load_rgb
from .runtime import pick_device

MAX_PIXELS = DEFAULT_MAX_PIXELS  # colorized at full resolution up to this many pixels (40 MP)
STRIP_PIXELS = 1 << 16  # pixels converted at once: the Lab conversions make ~20 float temporaries of a strip
_JPEG_SCALES = (1, 2, 4, 8)  # the reductions a JPEG decoder can apply while decoding


OUTPUT_SUFFIX = "_color.png"  # <stem>_color.png: what colorize writes, and what it never reads back from its folder


class DownscaledWarning(UserWarning):
    """A photo too large to colorize at full resolution was colorized downscaled (the message says how much)."""


class SkippedOutputWarning(UserWarning):
    """Inputs left alone because their output exists (no `overwrite`) or they are outputs themselves (one per call)."""


class ColorizeStopped(WriteError):
    """An output could not be written (e.g. disk full): the run stops; `written` and `failures` say what was done."""

    def __init__(self, message: str, written: list[Path], failures: list[tuple[Path, str]]) -> None:
        super().__init__(message)
        self.written, self.failures = written, failures


@torch.no_grad()
def colorize_image(generator: nn.Module, image: Image.Image, size: int, device: str | torch.device = "cpu") -> Image.Image:
    """Colorize one RGB (or grayscale-as-RGB) PIL image; returns an RGB image of the same size."""
    generator.eval()
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    small = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    L_small = rgb_to_lab(torch.from_numpy(small).permute(2, 0, 1)[None].to(device))[:, :1]
    ab_small = generator(L_small / L_SCALE - 1.0).float().clamp(-1, 1) * AB_SCALE
    columns = _linear_weights(size, width, 0, width, device)
    out = Image.new("RGB", image.size)
    rows_per_strip = max(1, STRIP_PIXELS // width)
    for top in range(0, height, rows_per_strip):
        bottom = min(height, top + rows_per_strip)
        strip = np.asarray(image.crop((0, top, width, bottom)), dtype=np.float32) / 255
        L = rgb_to_lab(torch.from_numpy(strip).permute(2, 0, 1)[None].to(device))[:, :1]
        ab = _resample(_resample(ab_small, -2, _linear_weights(size, height, top, bottom, device)), -1, columns)
        rgb = lab_to_rgb(torch.cat([L, ab], 1))[0]
        pixels = (rgb.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        out.paste(Image.fromarray(pixels), (0, top))
    return out


def _linear_weights(n_in: int, n_out: int, start: int, stop: int,
                    device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of outputs `start..stop` when resizing `n_in` -> `n_out` samples linearly.

    The same sampling as `F.interpolate(mode="bilinear", align_corners=False)` along one axis, but
    for a slice of the output only, so that the full-size ab never has to exist at once.
    """
    position = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    low = position.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    return low.to(device), high.to(device), (position - low).float().to(device)


def _resample(values: torch.Tensor, dim: int, weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Linear interpolation of `values` along `dim` with `_linear_weights`."""
    low, high, fraction = weights
    shape = [1] * values.dim()
    shape[dim] = -1
    fraction = fraction.view(shape)
    return values.index_select(dim, low) * (1 - fraction) + values.index_select(dim, high) * fraction


def load_for_colorize(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The photo at full resolution, or, above `max_pixels`, a JPEG decoded downscaled with a `DownscaledWarning`."""
    width, height = image_size(path)
    scale = next((s for s in _JPEG_SCALES if math.ceil(width / s) * math.ceil(height / s) <= max_pixels),
                 _JPEG_SCALES[-1])
    image = load_rgb(path, max_pixels=max_pixels, reduce=scale)
    if scale == 1:
        return image
    warnings.warn(f"{path}: {width}x{height} is more than {max_pixels:_} pixels; colorized at "
                  f"{image.width}x{image.height}", DownscaledWarning, stacklevel=2)
    return image


def expand_inputs(inputs: list[str | Path], out_dir: str | Path | None = None
                  ) -> tuple[list[Path], list[tuple[Path, str]], list[Path]]:
    """(files, failures, outputs): files as given, folders expanded to their images (`io.list_images`).

    A missing file is kept, for `load_rgb` to report; a folder without images is a failure.
    Images found in a folder that lie inside `out_dir` and are named like outputs (`*_color.png`)
    are returned apart as `outputs`: they are colorize's own results, not photos to colorize.
    A file given by name is always an input.
    """
    paths: list[Path] = []
    failures: list[tuple[Path, str]] = []
    outputs: list[Path] = []
    out_resolved = Path(out_dir).resolve() if out_dir is not None else None
    for item in map(Path, inputs):
        if not item.is_dir():
            paths.append(item)
            continue
        try:
            found = list_images(item)
        except FileNotFoundError as err:
            failures.append((item, str(err)))
            continue
        for path in found:
            is_output = (out_resolved is not None and path.name.endswith(OUTPUT_SUFFIX)
                         and path.resolve().is_relative_to(out_resolved))
            (outputs if is_output else paths).append(path)
    return paths, failures, outputs


def colorize_files(
    inputs: list[str | Path], out_dir: str | Path, checkpoint: str | Path, device: str | torch.device = "auto",
    overwrite: bool = False,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Colorize every input file (or folder of images) into `out_dir` as PNG: (written, failures).

    A bad file is a failure `(path, one-line message)` and the others are still processed;
    a bad checkpoint or output folder raises before any work (FileNotFoundError, ValueError).
    An output that cannot be written (disk full, no permission) stops the run with
    `ColorizeStopped`, naming the file and the cause: the next outputs would fail the same way.
    Each PNG is written atomically, so a failed one leaves no partial file behind.
    Outputs are named `<stem>_color.png`, `<stem>_2_color.png`... when two inputs share a stem.
    An existing output is never replaced unless `overwrite`: its input is skipped, and one
    `SkippedOutputWarning` lists the skipped inputs and the output folder's own results left out.
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
    paths, failures, own_outputs = expand_inputs(inputs, out_dir)
    existing: list[Path] = []
    for done, path in enumerate(tqdm(paths, desc="colorize", disable=len(paths) < 2)):
        target = _unused_name(out_dir, path.stem, taken)
        taken.add(target)
        if not overwrite and target.exists():
            existing.append(target)
            continue
        try:
            result = colorize_image(generator, load_for_colorize(path), spec["size"], device)
        except ImageLoadError as err:
            failures.append((path, str(err)))
            continue
        try:
            with atomic_write(target, "colorized image") as tmp:
                result.save(tmp, format="PNG")
        except WriteError as err:
            raise ColorizeStopped(f"{err}; stopped with {len(paths) - done - 1} inputs not attempted",
                                  written, failures) from err
        written.append(target)
    if existing or own_outputs:
        warnings.warn(_skipped_line(existing, own_outputs), SkippedOutputWarning, stacklevel=2)
    return written, failures


def _skipped_line(existing: list[Path], own_outputs: list[Path], shown: int = 3) -> str:
    """One line: which inputs were skipped because their output exists, which outputs were not read as inputs."""
    def names(paths: list[Path]) -> str:
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        return ", ".join(map(str, paths[:shown])) + more

    parts = []
    if existing:
        parts.append(f"skipped {len(existing)} input(s) whose output exists ({names(existing)}; "
                     "--overwrite replaces them)")
    if own_outputs:
        parts.append(f"left out {len(own_outputs)} file(s) of the output folder named like outputs, "
                     f"not colorized again ({names(own_outputs)})")
    return "; ".join(parts)


def _unused_name(out_dir: Path, stem: str, taken: set[Path]) -> Path:
    """`<stem>_color.png`, numbered when an earlier input of this run already took it (a.jpg, a.png)."""
    target, n = out_dir / f"{stem}{OUTPUT_SUFFIX}", 2
    while target in taken:
        target, n = out_dir / f"{stem}_{n}{OUTPUT_SUFFIX}", n + 1
    return target
