"""colorlab.io: every kind of file a student may feed in gives an RGB image or an ImageLoadError."""

from __future__ import annotations

import csv
import io
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from colorlab.io import (
    IMAGE_EXTENSIONS,
    ImageLoadError,
    ScanReport,
    SkippedImageWarning,
    is_grayscale,
    list_images,
    load_rgb,
    mean_chroma,
    scan_images,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def noisy_rgb(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    """Random pixels: incompressible, so a truncated file really lacks image data."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, pixel_rows: bytes = b"") -> bytes:
    """A PNG written by hand: for what PIL cannot save (16-bit RGB) or must not allocate (a huge header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixel_rows)) + chunk(b"IEND", b"")


def huge_gray_jpeg(side: int) -> bytes:
    """A valid side x side mid-grey JPEG, built without ever holding its pixels.

    Every 8x8 block of a flat grey-128 image codes to the same 6 bits (DC difference 0, then
    end-of-block) with the standard Huffman tables, so 4 blocks are the bytes 28 a2 8a. We take
    the headers of a tiny JPEG from PIL, patch the size, and repeat that pattern.
    """
    assert side % 32 == 0, "a whole number of 4-block groups"
    tiny = io.BytesIO()
    Image.new("L", (16, 16), 128).save(tiny, "JPEG")
    data = bytearray(tiny.getvalue())
    start_of_frame = data.index(b"\xff\xc0")
    data[start_of_frame + 5 : start_of_frame + 9] = struct.pack(">HH", side, side)
    start_of_scan = data.index(b"\xff\xda")
    headers = bytes(data[: start_of_scan + 2 + struct.unpack(">H", data[start_of_scan + 2 : start_of_scan + 4])[0]])
    assert data[len(headers) : -2] == b"\x28\xa2\x8a", "PIL's encoder changed its tables"
    return headers + b"\x28\xa2\x8a" * ((side // 8) ** 2 // 4) + b"\xff\xd9"


def assert_rgb(image: Image.Image, size: tuple[int, int]) -> None:
    assert image.mode == "RGB"
    assert image.size == size


# --- ImageLoadError and list_images -------------------------------------------------------------


def test_image_load_error_is_a_one_line_value_error_naming_file_and_reason():
    err = ImageLoadError("photos/cat.jpg", "corrupt", "broken data\nafter line one")
    assert isinstance(err, ValueError)
    assert str(err) == "photos/cat.jpg: corrupt (broken data after line one)"
    assert (err.path, err.reason) == (Path("photos/cat.jpg"), "corrupt")


def test_list_images_is_recursive_sorted_case_insensitive_and_skips_hidden(tmp_path):
    for name in ["b.JPG", "a.png", "sub/c.jpeg", "sub/deeper/d.WebP", "notes.txt", ".hidden.jpg",
                 ".ipynb_checkpoints/a-checkpoint.png", "__MACOSX/._a.png"]:  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()  # listed, so that loading it says "not a regular file" (not silently lost)
    found = [path.relative_to(tmp_path).as_posix() for path in list_images(tmp_path)]
    assert found == ["a.png", "b.JPG", "folder.png", "sub/c.jpeg", "sub/deeper/d.WebP"]
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"} == IMAGE_EXTENSIONS


def test_list_images_says_clearly_when_folder_is_missing_or_has_no_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("no photos here")
    with pytest.raises(FileNotFoundError, match="no image files"):
        list_images(tmp_path)


# --- bad files: one test per kind ---------------------------------------------------------------


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageLoadError, match=r"empty\.jpg: empty file") as caught:
        load_rgb(path)
    assert caught.value.reason == "empty file"


def test_missing_file_is_refused_with_its_name(tmp_path):
    with pytest.raises(ImageLoadError, match=r"gone\.png: cannot read"):
        load_rgb(tmp_path / "gone.png")


def test_non_image_with_image_extension_is_refused(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("<html><body>403 Forbidden</body></html>")
    with pytest.raises(ImageLoadError) as caught:
        load_rgb(path)
    assert str(caught.value) == f"{path}: not an image (cannot identify image file)"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused_not_half_loaded(tmp_path, fmt):
    whole = save(noisy_rgb(), tmp_path / "whole.img", format=fmt).read_bytes()
    path = tmp_path / f"half.{fmt.lower()}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageLoadError, match=r"half\.\w+: corrupt .*truncated") as caught:
        load_rgb(path)
    assert "\n" not in str(caught.value)


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    path = save(Image.new("RGB", (16, 16), RED).convert("CMYK"), tmp_path / "print.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    image = load_rgb(path)
    assert_rgb(image, (16, 16))
    assert np.abs(np.asarray(image, dtype=int) - RED).max() <= 8


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_on_white(tmp_path, mode):
    image = Image.new("RGBA", (4, 1), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 0), (0, 0, 0, 255))  # opaque black
    image.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black
    path = save(image.convert(mode), tmp_path / "logo.png")
    pixels = np.asarray(load_rgb(path), dtype=int)[0]
    assert pixels[0].tolist() == list(WHITE)
    assert pixels[1].tolist() == [0, 0, 0]
    assert np.abs(pixels[2] - 127).max() <= 1


def test_palette_png_loads_its_colours_and_transparent_index_as_white(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([*RED, *GREEN, *BLUE])
    palette.putdata([0, 1, 2])
    opaque = load_rgb(save(palette, tmp_path / "palette.png"))
    transparent = load_rgb(save(palette, tmp_path / "palette-alpha.png", transparency=1))
    assert np.asarray(opaque)[0].tolist() == [list(RED), list(GREEN), list(BLUE)]
    assert np.asarray(transparent)[0].tolist() == [list(RED), list(WHITE), list(BLUE)]


def test_16_bit_gray_png_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 128 * 257, 65535]], dtype=np.uint16)  # black, mid-grey, white in 16 bits
    path = save(Image.fromarray(levels), tmp_path / "scan16.png")
    assert Image.open(path).mode == "I;16"
    pixels = np.asarray(load_rgb(path))
    assert pixels[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]  # PIL's convert: mid-grey -> 255


def test_16_bit_rgb_png_loads_its_colours(tmp_path):
    red, mid_green = struct.pack(">HHH", 65535, 0, 0), struct.pack(">HHH", 0, 100 * 257, 0)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(2, 1, bit_depth=16, color_type=2, pixel_rows=b"\x00" + red + mid_green))
    assert np.asarray(load_rgb(path))[0].tolist() == [list(RED), [0, 100, 0]]


@pytest.mark.parametrize(("mode", "name"), [("L", "gray.jpg"), ("1", "bits.png")])
def test_grayscale_image_gives_rgb_with_equal_channels(tmp_path, mode, name):
    path = save(noisy_rgb(16, 8).convert(mode), tmp_path / name)
    pixels = np.asarray(load_rgb(path))
    assert pixels.shape == (8, 16, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.std() > 10  # the picture survived, not a flat fill


@pytest.mark.parametrize("size", [(1, 1), (2, 3)])
def test_tiny_images_are_returned_as_they_are(tmp_path, size):
    path = save(Image.new("RGB", size, BLUE), tmp_path / "tiny.png")
    assert_rgb(load_rgb(path), size)
    assert_rgb(load_rgb(path, max_side=256), size)  # max_side never upscales


def test_max_side_shrinks_keeping_aspect_even_for_extreme_ratios(tmp_path):
    assert_rgb(load_rgb(save(noisy_rgb(64, 32), tmp_path / "wide.png"), max_side=16), (16, 8))
    assert_rgb(load_rgb(save(noisy_rgb(1, 500), tmp_path / "strip.png"), max_side=64), (1, 64))
    with pytest.raises(ValueError, match="max_side"):
        load_rgb(tmp_path / "wide.png", max_side=0)


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    stored = Image.new("RGB", (40, 20), WHITE)
    stored.paste(RED, (0, 0, 5, 5))  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the camera was turned, show the picture rotated 90 degrees clockwise
    path = save(stored, tmp_path / "phone.jpg", exif=exif, quality=95)
    image = load_rgb(path)
    assert_rgb(image, (20, 40))
    assert np.abs(np.asarray(image.getpixel((17, 2))) - RED).max() < 40  # top-left went to top-right
    assert np.abs(np.asarray(image.getpixel((2, 2))) - WHITE).max() < 40


# --- huge images: never decoded at full size ----------------------------------------------------


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "panorama.jpg"
    path.write_bytes(huge_gray_jpeg(12000))  # 1.7 MB on disk, 144 megapixels
    return path


def test_huge_jpeg_decodes_downscaled_with_max_side(huge_jpeg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not leak either
        image = load_rgb(huge_jpeg, max_side=256)
    assert_rgb(image, (256, 256))
    assert np.asarray(image).min() == np.asarray(image).max() == 128


def test_huge_jpeg_without_max_side_is_refused_before_decoding(huge_jpeg):
    with pytest.raises(ImageLoadError, match=r"panorama\.jpg: too large \(12000x12000 .*pass max_side") as caught:
        load_rgb(huge_jpeg)
    assert caught.value.reason == "too large"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from Linux /proc")
def test_huge_jpeg_with_max_side_keeps_peak_memory_small(huge_jpeg):
    """Measured in a fresh process: its peak resident memory (VmHWM) before and after the load."""
    script = f"""
import re
from colorlab.io import load_rgb
peak_mb = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
before = peak_mb()
load_rgb({str(huge_jpeg)!r}, max_side=256)
print(peak_mb() - before)
"""
    growth_mb = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert growth_mb < 50  # a full decode would need 144 MB (grey) or 576 MB (RGB)


def test_huge_png_is_refused_from_its_header_even_with_max_side(tmp_path):
    path = tmp_path / "poster.png"
    path.write_bytes(png_bytes(12000, 12000, bit_depth=8, color_type=2))  # header only: no pixel data at all
    with pytest.raises(ImageLoadError, match="too large .*only JPEG can be decoded downscaled"):
        load_rgb(path, max_side=256)  # "too large", not "corrupt": refused before decoding


def test_decompression_bomb_is_an_image_load_error(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(20000, 20000, bit_depth=8, color_type=2))  # 400 MP: over PIL's hard limit
    with pytest.raises(ImageLoadError, match="too large .*decompression bomb"):
        load_rgb(path, max_pixels=10**9)


# --- colourfulness ------------------------------------------------------------------------------


def test_mean_chroma_is_zero_for_grey_and_matches_lab_for_pure_red():
    assert mean_chroma(noisy_rgb(300, 200).convert("L")) < 0.01
    assert mean_chroma(Image.new("RGB", (300, 200), RED)) == pytest.approx(104.55, abs=0.2)  # skimage's rgb2lab


@pytest.mark.parametrize("colour", [BLUE, GREEN, (255, 255, 0), (255, 0, 255)], ids=str)
def test_mean_chroma_of_the_most_saturated_colours_is_not_cut(colour):
    from skimage.color import rgb2lab

    _, a, b = rgb2lab(np.array([[colour]], dtype=np.float64) / 255)[0, 0]
    assert mean_chroma(Image.new("RGB", (16, 16), colour)) == pytest.approx(np.hypot(a, b), abs=0.2)


def test_is_grayscale_uses_its_threshold():
    faint_blue = Image.new("RGB", (8, 8), (120, 120, 124))  # mean chroma about 2.6
    assert is_grayscale(noisy_rgb().convert("L").convert("RGB"))
    assert not is_grayscale(noisy_rgb())
    assert not is_grayscale(faint_blue)
    assert is_grayscale(faint_blue, threshold=3.0)


def test_is_grayscale_agrees_with_the_shared_manifest(shared_data):
    """The MANIFEST's chroma comes from another pipeline (ours differs by about 1 on average), so
    files within its 1.5..3 band, where 5 of its 1568 flags differ from ours, are left out."""
    if not (shared_data / "MANIFEST.csv").is_file():
        pytest.skip(f"{shared_data} has no MANIFEST.csv")
    with open(shared_data / "MANIFEST.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    gray = [row for row in rows if float(row["mean_chroma"]) < 1.5][:8]
    pale = [row for row in rows if 3 < float(row["mean_chroma"]) < 4][:8]  # colour, but only just
    assert gray and pale
    for row in gray + pale:
        assert is_grayscale(load_rgb(shared_data / row["file"])) == (row["grayscale"] == "1"), row["file"]


# --- scan_images --------------------------------------------------------------------------------


def test_scan_images_keeps_good_files_and_warns_about_each_bad_one(tmp_path, huge_jpeg):
    good = save(noisy_rgb(), tmp_path / "good.jpg")
    gray = save(noisy_rgb().convert("L"), tmp_path / "gray.jpg")
    empty = tmp_path / "empty.png"
    empty.touch()
    text = tmp_path / "page.jpg"
    text.write_text("<html></html>")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(save(noisy_rgb(), tmp_path / "whole.png").read_bytes()[:2000])
    files = [good, gray, empty, text, truncated, huge_jpeg]

    with pytest.warns(SkippedImageWarning) as caught:
        report = scan_images(files)
    assert isinstance(report, ScanReport)
    assert report.kept == [good]
    messages = [str(warning.message) for warning in caught]
    for skipped in files[1:]:
        assert any(str(skipped) in message for message in messages), skipped
    assert report.counts == {"grayscale": 1, "empty file": 1, "not an image": 1, "corrupt": 1, "too large": 1}
    assert str(report) == "kept 1 of 6: 1 grayscale, 1 empty file, 1 not an image, 1 corrupt, 1 too large"
    assert report.excluded["corrupt"][0][0] == truncated


def test_scan_images_size_check_agrees_with_load_rgb_given_the_same_max_side(huge_jpeg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scan_images([huge_jpeg], drop_grayscale=False, max_side=256).kept == [huge_jpeg]
    with pytest.warns(SkippedImageWarning, match="too large"):
        assert scan_images([huge_jpeg], drop_grayscale=False).kept == []


def test_scan_images_keeps_grayscale_when_asked(tmp_path):
    gray = save(noisy_rgb().convert("L"), tmp_path / "gray.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = scan_images([gray], drop_grayscale=False)
    assert report.kept == [gray]
    assert str(report) == "kept 1 of 1"


# --- fuzzing: nothing but an RGB image or an ImageLoadError ---------------------------------------

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBPVP8 "]
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I;16", "I", "F"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp"}


def load_or_refuse(path: Path) -> Image.Image | None:
    try:
        image = load_rgb(path, max_side=32)
    except ImageLoadError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return None
    assert image.mode == "RGB" and max(image.size) <= 32
    return image


@FUZZ
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=2048), suffix=st.sampled_from([".jpg", ".png"]))
def test_fuzz_random_bytes_load_or_raise_image_load_error(tmp_path, magic, body, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(magic + body)
    load_or_refuse(path)


@FUZZ
@given(
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(sorted(FORMATS)),
    width=st.integers(1, 32),
    height=st.integers(1, 32),
    seed=st.integers(0, 2**32 - 1),
    keep=st.one_of(st.none(), st.floats(0.0, 1.0)),  # None: the whole file, else the kept fraction
)
def test_fuzz_small_images_in_any_mode_load_or_raise_image_load_error(tmp_path, mode, fmt, width, height, seed, keep):
    n_bytes = len(Image.new(mode, (width, height)).tobytes())
    image = Image.frombytes(mode, (width, height), np.random.default_rng(seed).bytes(n_bytes))
    encoded = io.BytesIO()
    try:
        image.save(encoded, fmt)
    except (OSError, ValueError, KeyError):
        assume(False)  # PIL cannot write this mode in this format
    data = encoded.getvalue()
    path = tmp_path / f"image{FORMATS[fmt]}"
    path.write_bytes(data if keep is None else data[: int(len(data) * keep)])
    loaded = load_or_refuse(path)
    if keep is None and loaded is None:  # only 32-bit pixels without an agreed scale may be refused (issue 12)
        assert mode == "F" or (mode, fmt) == ("I", "TIFF"), (mode, fmt)
    elif keep is None:  # a valid file must load, at its own size
        assert loaded.size == (width, height)


def test_scanning_many_files_draws_no_progress_bar_into_a_notebook_or_a_log(tmp_path, capsys):
    """A bar redrawn into a non-terminal stream became ~100 output blocks on chapter 7's page."""
    from colorlab.io import _PROGRESS_MIN_FILES, scan_images

    rng = np.random.default_rng(0)
    files = []
    for i in range(_PROGRESS_MIN_FILES + 10):
        files.append(tmp_path / f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(files[-1])
    report = scan_images(files)
    assert len(report.kept) == len(files)
    assert "checking images" not in capsys.readouterr().err  # pytest's captured stderr is no terminal
