"""Colorize your own photos, at their own resolution.

The generator works at its training size (e.g. 256 px), but a photo is usually larger.
So we predict ab on a resized copy, upsample ab back to the photo's size, and combine it
with the photo's own full-resolution L: the detail a viewer notices lives in L, and
colour can be blurry without anyone noticing (the same trick as JPEG's chroma subsampling).
The input is always converted to Lab L first, never "channel 0 of RGB" (a bug of the reference tutorial).

Memory: the full-size photo is never converted to float as a whole. The upsampled ab, the
Lab -> RGB conversion and the result are computed strip by strip (`STRIP_PIXELS` pixels at a
time), so besides the decoded photo and the output (3 bytes per pixel each) the work needs a few
MB whatever the photo's size (tests/test_colorize_memory.py bounds it; docs/reliability.md has the
measurements).

Speed (benchmarks/colorize_speed.py, docs/performance.md): photos are predicted in batches
(`BATCH_IMAGES`, `BATCH_PIXELS`), the full-resolution colour work runs in float32 numpy with
lookup tables for the sRGB curves instead of a power function per pixel, and PNGs are written
with zlib level 1 (`PNG_COMPRESS_LEVEL`). Each PNG is still written atomically and fsync'ed.
`predict_ab` (network) and `apply_ab` (full-resolution colour) are the two halves of
`colorize_image`, for other predictors (any callable from normalised L to normalised ab).
Photos above `MAX_PIXELS` are decoded downscaled (JPEG only, by 2, 4 or 8 per side) and a
`DownscaledWarning` says so; other formats that large are refused with one line.

Nothing of the user's is overwritten: an input whose `<stem>_color.png` already exists is skipped
(unless `overwrite`), and files named like outputs inside the output folder are never taken as
inputs when a folder is expanded (rerunning `colorize photos -o photos/colorized` would otherwise
colorize its own results into `a_color_color.png`). One `SkippedOutputWarning` names what was skipped.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import queue
import struct
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm  # plain text bars: notebooks without ipywidgets too

from .atomic import WriteError, atomic_write
from .checkpoint import load_generator
from . import color
from .color import _D65_WHITE, _EPS, _KAPPA, AB_SCALE, L_SCALE, rgb_to_lab
from .io import DEFAULT_MAX_PIXELS, ImageLoadError, image_size, list_images, load_rgb
from .runtime import pick_device

MAX_PIXELS = DEFAULT_MAX_PIXELS  # colorized at full resolution up to this many pixels (40 MP)
STRIP_PIXELS = 1 << 16  # pixels converted at once: the Lab conversions make ~20 float temporaries of a strip
_JPEG_SCALES = (1, 2, 4, 8)  # the reductions a JPEG decoder can apply while decoding
BATCH_IMAGES = 16  # photos predicted in one forward pass...
BATCH_PIXELS = 16_000_000  # ... unless their decoded pixels would pass this (a batch is held decoded at once)
NETWORK_WORKERS = 2  # batches predicted at once on a CPU, one torch thread each (`_Networks`)
PNG_COMPRESS_LEVEL = 1  # zlib level 1: about 4x faster than the default 6 on a 12 MP photo, files ~10-20% larger
_XYZ_FROM_RGB, _RGB_FROM_XYZ = color._XYZ_FROM_RGB.numpy(), color._RGB_FROM_XYZ.numpy()  # colorlab.color's matrices
Predictor = Callable[[torch.Tensor], torch.Tensor]  # normalised L (B, 1, s, s) -> normalised ab (B, 2, s, s)


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


def colorize_image(generator: Predictor, image: Image.Image, size: int,
                   device: str | torch.device = "cpu") -> Image.Image:
    """Colorize one RGB (or grayscale-as-RGB) PIL image; returns an RGB image of the same size.

    `generator` is any predictor: a colorlab generator, or a callable with the same contract
    (normalised L, shape (B, 1, size, size), in; normalised ab, (B, 2, size, size), out).
    """
    image = image if image.mode == "RGB" else image.convert("RGB")
    return apply_ab(image, predict_ab(generator, [image], size, device)[0])


@torch.inference_mode()
def predict_ab(generator: Predictor, images: list[Image.Image], size: int,
               device: str | torch.device = "cpu") -> list[np.ndarray]:
    """The predicted ab (Lab units, float32, shape (2, size, size)) of each RGB image, in one forward pass.

    Small photos are colorized in groups: one forward pass of 16 images costs far less than 16 of one.
    """
    if isinstance(generator, nn.Module):
        generator.eval()
    small = np.stack([np.asarray(image.resize((size, size), Image.Resampling.BILINEAR)) for image in images])
    rgb = torch.from_numpy(small).to(device).permute(0, 3, 1, 2).float() / 255
    L = rgb_to_lab(rgb)[:, :1]
    ab = generator((L / L_SCALE - 1.0).contiguous(memory_format=torch.channels_last)).float().clamp(-1, 1) * AB_SCALE
    return list(ab.cpu().numpy())


def apply_ab(image: Image.Image, ab_small: np.ndarray) -> Image.Image:
    """The RGB photo with its own full-resolution L and `ab_small` upsampled bilinearly to its size.

    Strip by strip (`STRIP_PIXELS`), in float32 numpy with lookup tables for the sRGB curves
    (`_srgb_tables`): the same formulas as `colorlab.color`, but no power function per pixel.
    """
    return Image.fromarray(_apply_ab(np.asarray(image), ab_small))


def _apply_ab(pixels: np.ndarray, ab_small: np.ndarray) -> np.ndarray:
    """`apply_ab` on an (height, width, 3) uint8 array."""
    height, width = pixels.shape[:2]
    to_linear, to_srgb = _srgb_tables()
    columns = _linear_weights(ab_small.shape[-1], width, 0, width)
    rows_per_strip = max(1, STRIP_PIXELS // width)
    out = np.empty_like(pixels)
    for top in range(0, height, rows_per_strip):
        bottom = min(height, top + rows_per_strip)
        ab = _resample(_resample(ab_small, 1, _linear_weights(ab_small.shape[-2], height, top, bottom)), 2, columns)
        out[top:bottom] = _lab_to_srgb8(_fy(to_linear[pixels[top:bottom]]), ab, to_srgb)
    return out


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_UP = 2  # PNG's "Up" row filter: each byte minus the byte above it


def write_png(pixels: np.ndarray, file: BinaryIO, level: int = PNG_COMPRESS_LEVEL) -> None:
    """Write an (height, width, 3) uint8 RGB array to `file` as an 8-bit PNG, strip by strip.

    Why not PIL's encoder: at zlib level 1 PIL spends about as long choosing a filter for every
    row (it tries each of PNG's five) as zlib spends compressing; the "Up" filter for every row
    costs one vectorised subtraction and compresses photos about as well (docs/performance.md).
    zlib runs outside the GIL, so this overlaps with the network's next batch (`_Writer`).
    """
    height, width, channels = pixels.shape
    if pixels.dtype != np.uint8 or channels != 3:
        raise ValueError(f"write_png takes (height, width, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}")
    file.write(_PNG_SIGNATURE)
    _png_chunk(file, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))  # 8-bit RGB
    packer = zlib.compressobj(level)
    rows = pixels.reshape(height, width * 3)
    per_strip = max(1, STRIP_PIXELS // width)
    for top in range(0, height, per_strip):
        strip = rows[top:top + per_strip]
        filtered = np.empty((len(strip), 1 + width * 3), np.uint8)
        filtered[:, 0] = _PNG_UP
        np.subtract(strip[1:], strip[:-1], out=filtered[1:, 1:])  # uint8: modulo 256, as PNG wants
        np.subtract(strip[0], rows[top - 1], out=filtered[0, 1:]) if top else np.copyto(filtered[0, 1:], strip[0])
        _png_chunk(file, b"IDAT", packer.compress(filtered))
    _png_chunk(file, b"IDAT", packer.flush())
    _png_chunk(file, b"IEND", b"")


def _png_chunk(file: BinaryIO, kind: bytes, data: bytes) -> None:
    if data or kind != b"IDAT":
        file.write(struct.pack(">I", len(data)) + kind)
        file.write(data)
        file.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


_SRGB_STEPS = 1 << 16  # linear light is rounded to 1/65536 before encoding: under 0.06 of an 8-bit step


@functools.lru_cache(maxsize=1)
def _srgb_tables() -> tuple[np.ndarray, np.ndarray]:
    """(8-bit sRGB -> linear light, float32[256]; linear light * _SRGB_STEPS -> 8-bit sRGB, uint8[_SRGB_STEPS + 1])."""
    code = np.arange(256) / 255
    to_linear = np.where(code > 0.04045, ((code + 0.055) / 1.055) ** 2.4, code / 12.92).astype(np.float32)
    linear = np.arange(_SRGB_STEPS + 1) / _SRGB_STEPS
    srgb = np.where(linear > 0.0031308, 1.055 * np.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return to_linear, np.round(np.clip(srgb, 0, 1) * 255).astype(np.uint8)


def _f(t: np.ndarray) -> np.ndarray:
    """CIE Lab's companding function (cube root, linear near black)."""
    return np.where(t > _EPS, np.cbrt(np.maximum(t, _EPS)), _KAPPA * t + np.float32(16 / 116))


def _f_inverse(f: np.ndarray) -> np.ndarray:
    cube = f * f * f
    return np.where(cube > _EPS, cube, (f - np.float32(16 / 116)) / _KAPPA)


def _fy(linear: np.ndarray) -> np.ndarray:
    """f(Y) of linear RGB (..., 3): lightness L is 116 f(Y) - 16, and all that Lab -> RGB needs of it."""
    return _f(linear @ _XYZ_FROM_RGB[1].astype(np.float32))


def _lab_to_srgb8(fy: np.ndarray, ab: np.ndarray, to_srgb: np.ndarray) -> np.ndarray:
    """8-bit sRGB (rows, width, 3) of f(Y) (rows, width) and ab (2, rows, width), as `color.lab_to_rgb` computes it."""
    white = np.asarray(_D65_WHITE, dtype=np.float32)
    xyz = np.stack([_f_inverse(fy + ab[0] / 500) * white[0], _f_inverse(fy) * white[1],
                    _f_inverse(np.maximum(fy - ab[1] / 200, 0)) * white[2]], axis=-1)
    linear = np.clip(xyz @ _RGB_FROM_XYZ.T.astype(np.float32), 0, 1)
    return to_srgb[(linear * _SRGB_STEPS + 0.5).astype(np.int32)]


def _linear_weights(n_in: int, n_out: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of outputs `start..stop` when resizing `n_in` -> `n_out` samples linearly.

    The same sampling as `F.interpolate(mode="bilinear", align_corners=False)` along one axis, but
    for a slice of the output only, so that the full-size ab never has to exist at once.
    """
    position = np.maximum((np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0)
    low = np.minimum(np.floor(position).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (position - low).astype(np.float32)


def _resample(values: np.ndarray, axis: int, weights: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Linear interpolation of `values` along `axis` with `_linear_weights`."""
    low, high, fraction = weights
    shape = [1] * values.ndim
    shape[axis] = -1
    fraction = fraction.reshape(shape)
    return np.take(values, low, axis) * (1 - fraction) + np.take(values, high, axis) * fraction


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
    engine: str = "torch", overwrite: bool = False,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Colorize every input file (or folder of images) into `out_dir` as PNG: (written, failures).

    A bad file is a failure `(path, one-line message)` and the others are still processed;
    a bad checkpoint or output folder raises before any work (FileNotFoundError, ValueError).
    An output that cannot be written (disk full, no permission) stops the run with
    `ColorizeStopped`, naming the file and the cause: the next outputs would fail the same way.
    Each PNG is written atomically, so a failed one leaves no partial file behind.
    Outputs are named `<stem>_color.png`, `<stem>_2_color.png`... when two inputs share a stem.
    `engine` "onnx" runs the generator through ONNX Runtime on the CPU (`colorlab.onnx_engine`).
    An existing output is never replaced unless `overwrite`: its input is skipped, and one
    `SkippedOutputWarning` lists the skipped inputs and the output folder's own results left out.
    """
    if isinstance(inputs, (str, Path)) or not inputs:
        raise ValueError(f"inputs must be a non-empty list of image files or folders, got {inputs!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: the output folder exists and is not a folder")
    device = pick_device("cpu" if engine == "onnx" and device == "auto" else device)
    generator, spec = load_generator(checkpoint, map_location=device)
    # channels_last: about 15% less time per forward pass of the ResNet18-UNet on a CPU (docs/performance.md)
    generator.to(device, memory_format=torch.channels_last if device.type == "cpu" else torch.contiguous_format)
    if engine == "onnx":  # the same network through ONNX Runtime (colorlab.onnx_engine)
        from .onnx_engine import onnx_generator

        generator = onnx_generator(checkpoint, generator, spec, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[Path] = set()
    paths, failures, own_outputs = expand_inputs(inputs, out_dir)
    existing: list[Path] = []
    todo: list[tuple[Path, Path]] = []
    for path in paths:
        target = _unused_name(out_dir, path.stem, taken)
        taken.add(target)
        if not overwrite and target.exists():
            existing.append(target)
        else:
            todo.append((path, target))
    batch: list[tuple[Path, Image.Image]] = []
    # ONNX Runtime runs its own thread pool in one session: one worker for it
    workers = NETWORK_WORKERS if device.type == "cpu" and len(todo) > 1 and engine == "torch" else 1
    with tqdm(total=len(todo), desc="colorize", unit="img", disable=len(todo) < 2) as bar, \
            _Networks(generator, spec["size"], device, workers) as networks, \
            _Writer(written, failures, bar) as writer:
        for done, (path, target, image) in enumerate(_decoded(todo)):
            if isinstance(image, ImageLoadError):
                failures.append((path, str(image)))
                bar.update()
                continue
            if batch and (len(batch) == BATCH_IMAGES
                          or sum(i.width * i.height for _, i in batch) + image.width * image.height > BATCH_PIXELS):
                writer.submit(batch, networks.predict([i for _, i in batch]), len(todo) - done)
                batch = []
            batch.append((target, image))
        if batch:
            writer.submit(batch, networks.predict([i for _, i in batch]), 0)
    if existing or own_outputs:
        warnings.warn(_skipped_line(existing, own_outputs), SkippedOutputWarning, stacklevel=2)
    return written, failures


def _decoded(todo: list[tuple[Path, Path]], ahead: int = BATCH_IMAGES
             ) -> Iterator[tuple[Path, Path, Image.Image | ImageLoadError]]:
    """(input, target, photo or its ImageLoadError) in order, decoded in a thread up to `ahead` photos early.

    JPEG decoding releases the GIL, so the next photos decode while the network runs; `ahead`
    bounds how many decoded photos wait (memory).
    """
    def decode(path: Path) -> Image.Image | ImageLoadError:
        try:
            return load_for_colorize(path)
        except ImageLoadError as err:
            return err

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="colorize-decoder") as pool:
        waiting: deque[Future] = deque()
        items = iter(todo)
        for path, _ in itertools.islice(items, ahead):
            waiting.append(pool.submit(decode, path))
        for path, target in todo:
            image = waiting.popleft().result()
            following = next(items, None)
            if following is not None:
                waiting.append(pool.submit(decode, following[0]))
            yield path, target, image


class _Networks:
    """The network half of the pipeline: each batch's prediction runs in one of `workers` threads.

    On a CPU, the network is the slowest part (docs/performance.md), so two threads predict two
    batches at once, each with one torch thread and its own copy of the generator (fastai's
    DynamicUnet keeps its skip connections' activations on the module: one copy per thread), while
    `_Writer` writes the batch before. Two single-threaded forward passes use two cores better than
    one two-threaded pass that shares them with the writer. On a GPU, and for ONNX Runtime (which
    has its own thread pool): one worker, the generator itself.
    """

    def __init__(self, generator: Predictor, size: int, device: torch.device, workers: int) -> None:
        self.size, self.device = size, device
        copies = [generator] + [copy.deepcopy(generator) for _ in range(workers - 1)]
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        for model in copies:
            self.free.put(model)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="colorize-network")
        self.threads, self.workers = torch.get_num_threads(), workers

    def __enter__(self) -> "_Networks":
        if self.workers > 1:  # the cores left beside the writer, shared by the workers (on 2 cores: one thread each)
            torch.set_num_threads(max(1, (self.threads - 1) // self.workers))
        return self

    def predict(self, images: list[Image.Image]) -> Future:
        return self.pool.submit(self._predict, images)

    def _predict(self, images: list[Image.Image]) -> list[np.ndarray]:
        model = self.free.get()
        try:
            return predict_ab(model, images, self.size, self.device)
        finally:
            self.free.put(model)

    def __exit__(self, kind, error, traceback) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self.threads)


class _Writer:
    """The writing half of the pipeline (full-resolution colour, PNG, atomic write), in its own thread.

    While the network predicts the next batches, this thread turns the previous one into PNGs:
    torch, numpy and zlib release the GIL, so the halves overlap. At most one batch waits to be
    written, which bounds the memory to a few batches of decoded photos (`BATCH_PIXELS` each). A
    write that fails stops the run (`ColorizeStopped`, counting this batch's rest and the `later`
    inputs); `written` keeps the order of the inputs.
    """

    def __init__(self, written: list[Path], failures: list[tuple[Path, str]], bar: tqdm) -> None:
        self.written, self.failures, self.bar = written, failures, bar
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="colorize-writer")
        self.pending: Future | None = None

    def __enter__(self) -> "_Writer":
        return self

    def submit(self, batch: list[tuple[Path, Image.Image]], predicted: Future, later: int) -> None:
        self._wait()
        self.pending = self.pool.submit(self._write, batch, predicted, later)

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises a ColorizeStopped of the writer thread here

    def _write(self, batch: list[tuple[Path, Image.Image]], predicted: Future, later: int) -> None:
        for index, ((target, image), ab) in enumerate(zip(batch, predicted.result())):
            result = _apply_ab(np.asarray(image), ab)
            try:
                with atomic_write(target, "colorized image") as tmp, open(tmp, "wb") as file:
                    write_png(result, file)
            except WriteError as err:
                raise ColorizeStopped(f"{err}; stopped with {len(batch) - index - 1 + later} inputs not attempted",
                                      self.written, self.failures) from err
            self.written.append(target)
            self.bar.update()

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                self._wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


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
