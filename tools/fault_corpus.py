"""The fault corpus: nasty inputs for `colorlab colorize`, generated (never committed), and what each gives.

    python tools/fault_corpus.py                 # build the corpus in a temp folder, run the CLI, print the table
    python tools/fault_corpus.py --write-docs    # ... and replace the table in docs/reliability.md

Every file is made here from a few generated pixels, so the corpus needs no download and no
../shared. `run_corpus` runs the real command (`python -m colorlab.cli colorize`) in a
subprocess with a timeout, as a user would: a file that made it hang (a FIFO did) fails the
run instead of blocking it. tests/test_faults.py runs the same corpus and checks each outcome.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- fault-corpus:begin -->", "<!-- fault-corpus:end -->"
TIMEOUT_S = 300


@dataclass
class Case:
    """One corpus entry: its file name, what it is, and what colorize must do with it."""

    name: str
    what: str
    expect: str  # "written WxH" or the reason colorize must give, e.g. "not a regular file"


def _photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Smooth colours: a picture whose colorized version is easy to tell from black or white."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _grey_png(width: int, height: int, rows: int) -> bytes:
    """An 8-bit grey PNG claiming `width`x`height` with `rows` rows of zero pixels compressed in."""
    compressor, chunks = zlib.compressobj(9), []
    row = b"\0" * (width + 1)  # filter byte + pixels
    chunks += [compressor.compress(row) for _ in range(rows)]
    idat = b"".join(chunks) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def build_corpus(folder: Path) -> list[Case]:
    """Write every corpus file into `folder` (which must exist) and return the cases, good files first."""
    cases: list[Case] = []

    def add(name: str, what: str, expect: str, data: bytes | None = None) -> Path:
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        cases.append(Case(name, what, expect))
        return path

    photo = _photo()
    add("good-png.png", "an ordinary RGB PNG", "written 64x48", _encoded(photo, "PNG"))
    add("good-jpg.jpg", "an ordinary JPEG", "written 64x48", _encoded(photo, "JPEG"))
    add("empty.jpg", "zero bytes (a failed download)", "empty file", b"")
    jpeg = _encoded(_photo(256, 256, 1), "JPEG")
    add("truncated.jpg", "the first half of a JPEG", "corrupt", jpeg[: len(jpeg) // 2])
    add("page.jpg", "an HTML page saved as .jpg", "not an image", b"<!doctype html><title>404</title>")
    add("png-named.jpg", "a PNG with a .jpg name", "written 64x48", _encoded(photo, "PNG"))
    add("cmyk.jpg", "a CMYK JPEG (print scan)", "written 64x48", _encoded(photo.convert("CMYK"), "JPEG"))
    gray16 = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257))
    add("gray16.png", "a 16-bit greyscale PNG", "written 64x48", _encoded(gray16, "PNG"))
    add("palette.png", "a palette (P mode) PNG", "written 64x48", _encoded(photo.convert("P"), "PNG"))
    frames = [_photo(seed=i) for i in range(3)]
    add("animated.gif", "an animated GIF (3 frames: the first is used)", "written 64x48",
        _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    add("exif-rotated.jpg", "a 64x48 JPEG whose EXIF says: rotate 90 degrees", "written 48x64",
        _encoded(photo, "JPEG", exif=exif))
    add("one-pixel.png", "a 1x1 image", "written 1x1", _encoded(photo.resize((1, 1)), "PNG"))
    add("wide.png", "a 40000x3 panorama strip", "written 40000x3", _encoded(photo.resize((40000, 3)), "PNG"))
    grey = np.asarray(photo.convert("L"), dtype=np.float32) / 255
    add("float01.tif", "a float32 TIFF with values in 0..1", "written 64x48", _encoded(Image.fromarray(grey), "TIFF"))
    add("float-hdr.tif", "a float32 TIFF with values up to 1000", "unsupported pixels",
        _encoded(Image.fromarray(grey * 1000), "TIFF"))
    add("int32.tif", "an int32 TIFF", "unsupported pixels",
        _encoded(Image.fromarray((grey * 1e6).astype(np.int32)), "TIFF"))
    add("huge-header.png", "a PNG header claiming 100000x100000 pixels", "too large", _grey_png(100_000, 100_000, 1))
    bomb = _grey_png(8000, 8000, 8000)
    add("bomb.png", f"a decompression bomb: {len(bomb) // 1000} KB that decode to 8000x8000 (64 MP)", "too large",
        bomb)
    os.mkfifo(add("fifo.jpg", "a FIFO (named pipe) named like a photo", "not a regular file"))
    os.symlink("/dev/zero", add("device.jpg", "a symlink to /dev/zero (a device)", "not a regular file"))
    (add("folder.jpg", "a folder named like a photo", "not a regular file")).mkdir()
    os.symlink("loop.jpg", add("loop.jpg", "a symlink to itself (a loop)", "cannot read"))
    os.symlink("missing.png", add("dangling.png", "a symlink to a missing file", "cannot read"))
    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64)  # the header a phone writes
    add("phone.avif", "an AVIF photo (a format colorlab does not read)", "unsupported format", avif)
    add("phone.heic", "a HEIC photo (iPhone)", "unsupported format",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    add("kept.png", "a photo whose output `kept_color.png` exists already (the user's file)",
        "skipped: its output exists", _encoded(photo, "PNG"))
    unreadable = add("unreadable.png", "a PNG without read permission (mode 000)",
                     "cannot read", _encoded(photo, "PNG"))
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads any file: the photo is then simply colorized
        cases[-1].expect = "written 64x48"
        cases[-1].what += "; root can read it anyway"
    return cases


def make_checkpoint(path: Path) -> Path:
    """An untrained 32 px baseline generator: what matters here is the input handling, not the colours."""
    import torch

    from colorlab.checkpoint import save_checkpoint
    from colorlab.models import build_generator

    torch.manual_seed(0)
    generator = build_generator("baseline", 32)
    return save_checkpoint(path, {"spec": generator.spec, "generator": generator.state_dict()})


EXISTING_OUTPUT = "kept_color.png"  # put into the output folder before the run: it must survive it


def run_corpus(folder: Path, checkpoint: Path, out: Path) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    """Run `colorlab colorize FOLDER` and return each file's outcome ("written WxH" or its error line).

    The output folder starts with the user's own `EXISTING_OUTPUT`; it is reported as "kept" when
    its bytes are unchanged after the run.
    """
    out.mkdir(parents=True, exist_ok=True)
    users = _photo(seed=5)
    users.save(out / EXISTING_OUTPUT)
    before = (out / EXISTING_OUTPUT).read_bytes()
    command = [sys.executable, "-m", "colorlab.cli", "colorize", str(folder), "-o", str(out),
               "--checkpoint", str(checkpoint), "--device", "cpu"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    outcomes = {}
    for line in result.stderr.splitlines():
        if match := re.match(rf"colorlab colorize: (?:error|warning): {re.escape(str(folder))}/([^:]+): (.*)", line):
            outcomes[match[1]] = match[2]
        for match in re.finditer(rf"{re.escape(str(out))}/([^,;)]+){re.escape('_color.png')}", line):
            if "whose output exists" in line:
                kept = (out / EXISTING_OUTPUT).read_bytes() == before
                outcomes[match[1]] = f"skipped: its output exists ({'kept unchanged' if kept else 'REPLACED'})"
    for output in out.glob("*_color.png"):
        if output.name == EXISTING_OUTPUT:
            continue
        with Image.open(output) as image:
            outcomes[output.name.removesuffix("_color.png")] = f"written {image.width}x{image.height}"
    return {_input_name(folder, stem): outcome for stem, outcome in outcomes.items()}, result


def _input_name(folder: Path, stem: str) -> str:
    """The corpus file an output stem or an error's file name belongs to."""
    names = [path.name for path in folder.iterdir()]
    return stem if stem in names else next((name for name in names if Path(name).stem == stem), stem)


def table(cases: list[Case], outcomes: dict[str, str]) -> str:
    """The markdown table of the corpus: file, what it is, what `colorlab colorize` did."""
    rows = ["| file | what it is | outcome of `colorlab colorize` |", "|---|---|---|"]
    rows += [f"| `{case.name}` | {case.what} | {outcomes.get(case.name, 'NO OUTCOME')} |" for case in cases]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help=f"replace the table in {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        folder.mkdir()
        cases = build_corpus(folder)
        outcomes, result = run_corpus(folder, make_checkpoint(Path(tmp) / "gan.pt"), Path(tmp) / "out")
    stamp = (f"Produced by `python tools/fault_corpus.py --write-docs` on {datetime.date.today()}, "
             f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, user id {os.geteuid()}; "
             f"exit code {result.returncode}, last line: `{result.stdout.strip().splitlines()[-1]}`")
    text = f"{table(cases, outcomes)}\n\n{stamp}"
    print(text)
    if args.write_docs:
        docs = DOCS.read_text()
        start, end = docs.index(BEGIN) + len(BEGIN), docs.index(END)
        DOCS.write_text(f"{docs[:start]}\n{text}\n{docs[end:]}")
    return 0 if all(outcomes.get(case.name) for case in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
