"""Loading whatever image files students find, as RGB, without crashing mid-epoch.

Real folders hold zero-byte downloads, HTML pages saved as ``.jpg``, half-copied files,
CMYK scans, transparent PNGs, 16-bit scans, rotated phone photos and 100-megapixel
panoramas. `load_rgb` turns every one of them into either an RGB `PIL.Image.Image` or an
`ImageLoadError` (a `ValueError`) whose one-line message names the file and the reason, and
`scan_images` runs it once over a file list *before* training, so that a bad file is
reported up front instead of killing epoch 7.

Decisions worth knowing:

* **Truncated or corrupt files are refused**, never padded: a half-decoded photo (grey
  bottom half) is a wrong training example. This relies on PIL's default
  ``ImageFile.LOAD_TRUNCATED_IMAGES = False``; a program that sets it to True gets PIL's
  padding instead. Damage the decoder does not notice (flipped bytes inside a JPEG) cannot
  be caught and decodes to garbage.
* **Transparency is composited on white**, as a viewer shows a transparent PNG.
* **The memory bound is checked on the header**, before any pixel is decoded (see `load_rgb`).
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm  # plain text bars: notebooks without ipywidgets too

from .color import normalize_lab, rgb_to_lab
from .evaluate import chroma

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# The PIL decoders matching IMAGE_EXTENSIONS. Naming them stops a renamed file from reaching an
# exotic decoder (EPS would even start Ghostscript).
_DECODERS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
# Photo formats colorlab does not read (phones save HEIC, browsers AVIF): listed in folders and
# recognised by their first bytes, so that the user hears "unsupported format (AVIF)", not "not an image".
UNSUPPORTED_EXTENSIONS = frozenset({".avif", ".heic", ".heif", ".jxl"})
_HEIF_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC",
                b"heim": "HEIC", b"heis": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF"}
_DRAFTABLE = ("JPEG", "MPO")  # decode downscaled; MPO is how PIL's JPEG decoder names many phone photos
_TRANSPARENT_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_HIGH_BIT_GRAY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_CHROMA_SIDE = 64  # short side of the copy mean_chroma measures: plenty to tell colour from grey
_PROGRESS_MIN_FILES = 200  # below this, scanning is too quick for a progress bar to help
DEFAULT_MAX_PIXELS = 40_000_000
GRAYSCALE_CHROMA = 2.0  # the shared data's MANIFEST flags an image `grayscale` below this mean chroma


class ImageLoadError(ValueError):
    """A file that cannot be used as an image; the message is one line: ``"<file>: <reason> (<detail>)"``.

    `reason` is a short category ("cannot read", "empty file", "not an image", "unsupported
    format", "too large", "corrupt") that `scan_images` counts.
    """

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        message = f"{path}: {reason}" + (f" ({detail})" if detail else "")
        super().__init__(" ".join(message.split()))  # one line, whatever the decoder said


def list_images(folder: str | Path) -> list[Path]:
    """All image files under `folder`, recursively, in a sorted (reproducible) order.

    Hidden files and folders are skipped: they are ``.ipynb_checkpoints`` copies and the macOS
    ``._photo.jpg`` metadata files that unzipped archives are full of, never real photos.
    Anything else named like an image is listed, even when it is not a regular file (a FIFO, a
    device, a folder called ``x.jpg``, a broken symlink), and so are photos in formats colorlab
    does not read (`UNSUPPORTED_EXTENSIONS`): `load_rgb` refuses each with one line, so that the
    user hears about it instead of losing it silently.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = [
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS | UNSUPPORTED_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    if not files:
        extensions = ", ".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))
        raise FileNotFoundError(f"{folder}: no image files ({extensions}) in it or its subfolders")
    return sorted(files, key=lambda path: path.relative_to(folder).as_posix())


def load_rgb(
    path: str | Path, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, reduce: int = 1
) -> Image.Image:
    """Open any image file as an RGB image, upright (EXIF orientation applied), or raise ImageLoadError.

    With `max_side`, the result's long side is at most `max_side` (never upscaled: a 1x1 image
    stays 1x1; resizing to the model's size is the caller's job).

    Memory bound: the size is read from the file header and the file is refused, before
    decoding, when more than `max_pixels` pixels would be decoded. A JPEG given `max_side` is
    decoded downscaled (`Image.draft`, by up to 8x per side), so a 12000x12000 photo costs
    1500x1500 pixels; other formats decode at full size. Peak memory is at most about 12
    bytes per decoded pixel (measured: 4 for RGB, 8 for RGBA, 12 for grey + alpha), so under
    500 MB at the default 40 MP. This check replaces PIL's decompression-bomb warning (at
    89 MP, looser than our default); PIL's hard error above 179 MP still refuses a file even
    when `max_side` would have shrunk it.

    `reduce` (2, 4 or 8) asks a JPEG to decode that many times smaller per side (exactly,
    unlike `max_side`, which never goes below the size asked for); other formats ignore it.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    with _open_image(path, max_side, max_pixels, reduce) as image:
        rgb = _decode_rgb(image, path)
    if max_side is not None:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return rgb


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding pixels; ImageLoadError as `load_rgb`."""
    with _open_image(path, None, max_pixels=math.inf) as image:
        return image.size


@contextmanager
def _open_image(path: str | Path, max_side: int | None, max_pixels: float, reduce: int = 1) -> Iterator[Image.Image]:
    """Read the header only, ask a JPEG to decode downscaled, and refuse what would not fit in memory."""
    file = _open_regular(path)
    with file:
        if os.fstat(file.fileno()).st_size == 0:
            raise ImageLoadError(path, "empty file", "0 bytes")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides below
                image = Image.open(file, formats=_DECODERS)
        except UnidentifiedImageError as err:
            file.seek(0)
            if kind := _unsupported_format(file.read(32)):
                raise ImageLoadError(path, "unsupported format", f"{kind}; save it as JPEG or PNG") from err
            raise ImageLoadError(path, "not an image", "cannot identify image file") from err
        except Image.DecompressionBombError as err:
            raise ImageLoadError(path, "too large", str(err)) from err
        except Exception as err:  # a known format with a broken header: PIL raises many types
            raise ImageLoadError(path, "corrupt", str(err) or type(err).__name__) from err
        if max_side is not None:
            _draft(image, max_side / max(image.size))
        if reduce > 1 and image.format in _DRAFTABLE:  # PIL picks the largest scale with w // asked >= it
            image.draft(None, (max(1, image.width // reduce), max(1, image.height // reduce)))
        width, height = image.size
        if width * height > max_pixels:
            if image.format not in _DRAFTABLE:
                hint = "only JPEG can be decoded downscaled"
            else:
                hint = "pass max_side to decode it downscaled" if max_side is None else "raise max_pixels"
            raise ImageLoadError(
                path, "too large", f"{width}x{height} pixels to decode, more than max_pixels={max_pixels:_}; {hint}"
            )
        yield image


def _unsupported_format(head: bytes) -> str | None:
    """The name of a photo format colorlab does not read, from a file's first bytes (ISO BMFF `ftyp` brand, JPEG XL)."""
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return _HEIF_BRANDS[head[8:12]]
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    return None


def _open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading; refuse anything else at once.

    A FIFO named photo.jpg would block `open()` until some process writes to it (for ever), a
    device file can be endless: both are refused by type, checked on the opened descriptor.
    O_NONBLOCK makes opening a FIFO return immediately; it changes nothing for regular files.
    """
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            raise ImageLoadError(path, "not a regular file", "a folder")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ImageLoadError(path, "cannot read", err.strerror or str(err)) from err
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device",
                 stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
        kind = next((name for test, name in kinds.items() if test(mode)), "not a plain file")
        raise ImageLoadError(path, "not a regular file", kind)
    return os.fdopen(fd, "rb")


def _draft(image: Image.Image, scale: float) -> None:
    """Let a JPEG decode at `scale` or a little larger (DCT scaling): cheap, and never smaller."""
    if image.format in _DRAFTABLE and scale < 1:
        width, height = image.size
        image.draft(None, (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))


def _decode_rgb(image: Image.Image, path: str | Path) -> Image.Image:
    """Decode the pixels (this is where truncation shows), turn upright, convert to RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # e.g. an oversized GIF frame
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageLoadError(path, "too large", str(err)) from err
    except _UndefinedPixels as err:
        raise ImageLoadError(path, "unsupported pixels", str(err)) from err
    except Exception as err:  # truncated data, bad EXIF, unsupported mode...: PIL raises many types
        raise ImageLoadError(path, "corrupt", str(err) or type(err).__name__) from err


class _UndefinedPixels(ValueError):
    """Pixel values without an agreed brightness scale: guessing one gives a black or white picture."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: alpha over white, 16-bit scaled (PIL's own convert clips at 255).

    Float pixels (mode "F", e.g. a float32 TIFF) are brightness in 0..1, the convention of
    scientific and HDR tools, and are scaled by 255 (PIL's convert would treat them as 0..255:
    all black). Floats outside 0..1 and 32-bit integers (whose white could be 255, 65535 or
    2**31-1) have no defined meaning and are refused.
    """
    if image.mode == "F":
        return _float_to_rgb(np.asarray(image))
    if image.mode == "I" and getattr(image, "tag_v2", {}).get(258) in (32, (32,)):
        raise _UndefinedPixels("32-bit integer pixels have no defined white level; save it as 8 or 16 bit")
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        rgb = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba)  # out = colour * alpha + white * (1 - alpha)
        return rgb
    if image.mode in _HIGH_BIT_GRAY_MODES:
        high_byte = np.asarray(image).clip(0, 65535) >> 8  # as PIL itself reads a 16-bit RGB PNG
        return Image.fromarray(high_byte.astype(np.uint8)).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _float_to_rgb(values: np.ndarray) -> Image.Image:
    """Grey float pixels in 0..1 -> RGB; anything else (NaN, inf, outside 0..1) is refused."""
    if not np.isfinite(values).all():
        raise _UndefinedPixels("float pixels include NaN or infinity")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise _UndefinedPixels(f"float pixels range from {low:g} to {high:g}; only 0..1 has a defined meaning")
    return Image.fromarray(np.round(values * 255).astype(np.uint8)).convert("RGB")


def mean_chroma(img: Image.Image) -> float:
    """Mean chroma sqrt(a^2 + b^2) in Lab (`evaluate.chroma`): about 0 for a grey picture, 10-20 for a typical photo.

    Measured on a copy shrunk to short side 64 (box filter), so it costs the same for any size.
    """
    rgb = img if img.mode == "RGB" else _to_rgb(img)
    scale = _CHROMA_SIDE / min(rgb.size)
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    _, ab = normalize_lab(rgb_to_lab(pixels[None]))
    return chroma(ab).mean().item()  # sRGB's ab stays inside chroma's clamp to [-1, 1]: nothing is cut


def is_grayscale(img: Image.Image, threshold: float = GRAYSCALE_CHROMA) -> bool:
    """True when the picture has (almost) no colour to learn: mean chroma below `threshold`.

    The default agrees with the shared data's MANIFEST (its `grayscale` column); it is not 0
    because black-and-white photos often carry a faint tint (sepia, scanner or JPEG colour noise).
    """
    return mean_chroma(img) < threshold


class SkippedImageWarning(UserWarning):
    """Issued by `scan_images` for each file it leaves out; filter this class to silence them."""


@dataclass
class ScanReport:
    """What `scan_images` kept, and what it left out and why; ``print(report)`` gives the one-line summary."""

    kept: list[Path] = field(default_factory=list)
    excluded: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)  # reason -> [(file, message)]

    @property
    def counts(self) -> dict[str, int]:
        """Number of files left out per reason, most frequent first."""
        counts = {reason: len(files) for reason, files in self.excluded.items()}
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    @property
    def total(self) -> int:
        return len(self.kept) + sum(self.counts.values())

    def _exclude(self, path: Path, reason: str, message: str) -> None:
        """Record a left-out file and warn, on behalf of scan_images's caller (hence stacklevel 3)."""
        self.excluded.setdefault(reason, []).append((path, message))
        warnings.warn(f"skipping {message}", SkippedImageWarning, stacklevel=3)

    def __str__(self) -> str:
        summary = f"kept {len(self.kept)} of {self.total}"
        if self.excluded:
            summary += ": " + ", ".join(f"{n} {reason}" for reason, n in self.counts.items())
        return summary


def scan_images(
    files: Iterable[str | Path],
    *,
    drop_grayscale: bool = True,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    limit: int | None = None,
) -> ScanReport:
    """Open every file once and keep those that `load_rgb(file, max_side, max_pixels)` will load.

    With `limit`, stop as soon as that many files are kept (in the order given): a cap on
    *usable* images, which costs no more than the files it needs to look at.

    Each bad file is left out with a `SkippedImageWarning` naming it and the reason; with
    `drop_grayscale`, so are grayscale pictures (nothing for a colorizer to learn). Pass the
    `max_side` and `max_pixels` your data loader will use, so that the size check agrees with it.
    Cheap: a JPEG is decoded at about short side 64, just enough for the grayscale test.
    """
    files = [Path(file) for file in files]
    report = ScanReport()
    # disable=None: tqdm shows the bar on a terminal only, so a notebook or a log gets no stream of redraws
    quick = len(files) <= _PROGRESS_MIN_FILES
    progress = tqdm(files, desc="checking images", unit="img", disable=True if quick else None)
    for path in progress:
        if limit is not None and len(report.kept) >= limit:
            break
        try:
            with _open_image(path, max_side, max_pixels) as image:
                _draft(image, _CHROMA_SIDE / min(image.size))  # a no-op if max_side already drafted it
                rgb = _decode_rgb(image, path)
        except ImageLoadError as err:
            report._exclude(path, err.reason, str(err))
            continue
        if drop_grayscale and (chroma := mean_chroma(rgb)) < GRAYSCALE_CHROMA:
            report._exclude(path, "grayscale", f"{path}: grayscale (mean chroma {chroma:.2f} < {GRAYSCALE_CHROMA})")
            continue
        report.kept.append(path)
    return report
