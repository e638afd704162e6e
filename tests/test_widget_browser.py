"""The book's widget in a real browser: headless Chromium colorizes a photo, compared with `colorlab colorize`.

The page (the widget alone: its static files, onnxruntime-web from node_modules and an exported
model, as `tools/widget_assets.py` assembles them for the book) is served by an HTTP server on
127.0.0.1. The model is the published default when its file is here (../shared/models), else a
randomly initialised ResNet18 U-Net of 64 px saved as a checkpoint (the test says which). The
widget gets the published model's int8 export (what the book's readers download; the random
network's fp32 export, as its int8 one is outside the int8 tolerance); Python colorizes the same
PNG with the fp32 PyTorch checkpoint: the two images must agree to PSNR >= 35 dB (int8 weights move
colours by about 0.3 ab units on average, see colorlab.export; 35 dB is an RMS error of 4.6 levels of 255).

Measured and printed (run with -s): seconds to the first colorization (model download + session +
inference, from choosing the photo to the result), seconds for a second photo, model file size.

Where Chromium, the `playwright` package or onnxruntime-web is missing the test is skipped, saying
which, unless COLORLAB_REQUIRE_BROWSER=1 (set by .ci/run): then it fails.
"""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
MIN_PSNR_DB = 35.0
REQUIRED = os.environ.get("COLORLAB_REQUIRE_BROWSER") == "1"

pytestmark = pytest.mark.slow


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"COLORLAB_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _widget_assets():
    spec = importlib.util.spec_from_file_location("widget_assets", ROOT / "tools" / "widget_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (the dev extra)")
    if not (ROOT / _widget_assets().ORT_DIST / "ort.wasm.min.mjs").is_file():
        _unavailable("onnxruntime-web is not in node_modules (run `npm ci`)")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        except Exception as err:  # noqa: BLE001 - any launch failure is "the browser cannot start"
            pytest.fail(f"Chromium did not start: {' '.join(str(err).split())[:300]}")
        yield chromium
        chromium.close()


class _Site:
    """A folder served on 127.0.0.1 (with the MIME types ES modules and WebAssembly need)."""

    def __init__(self, folder: Path) -> None:
        handler = type("Handler", (http.server.SimpleHTTPRequestHandler,), {
            "extensions_map": {**http.server.SimpleHTTPRequestHandler.extensions_map,
                               ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                               ".json": "application/json", ".onnx": "application/octet-stream"},
            "log_message": lambda *args: None})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/index.html"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _model_checkpoint(folder: Path) -> tuple[Path, str, str]:
    """(checkpoint, what it is, the variant the page gets)."""
    from colorlab import export, hub

    if hub.is_available(hub.DEFAULT):
        return hub.fetch_pretrained(hub.DEFAULT, download=False), f"the published {hub.DEFAULT}", export.SMALL_VARIANT
    import torch

    from colorlab.checkpoint import save_checkpoint
    from colorlab.models import build_generator

    torch.manual_seed(0)
    generator = build_generator("resnet18", 64, weights=None)
    path = folder / "random-resnet18-64.pt"
    save_checkpoint(path, {"spec": generator.spec, "stage": "gan", "epoch": 0, "generator": generator.state_dict()})
    # A random network's activations are spread wider than a trained one's: its int8 export exceeds the
    # int8 tolerance (mean 1.17 ab units measured), so without a published model the page gets fp32.
    return path, "a randomly initialised resnet18 of 64 px (no published model here)", "fp32"


def _photos(folder: Path) -> list[Path]:
    """Two PNG photos (lossless: the browser's and PIL's JPEG decoders may differ in the last bits)."""
    from colorlab.data import shared_data_dir

    root = shared_data_dir()
    if root is not None and (root / "old-photos").is_dir():
        sources = [Image.open(p).convert("RGB") for p in sorted((root / "old-photos").glob("*.jpg"))[:2]]
    else:
        import skimage.data

        sources = [Image.fromarray(skimage.data.astronaut()).convert("L").convert("RGB"),
                   Image.fromarray(skimage.data.coffee()).convert("L").convert("RGB").resize((500, 333))]
    paths = []
    for i, image in enumerate(sources):
        paths.append(folder / f"photo_{i}.png")
        image.save(paths[-1])
    return paths


def _colorize_in_page(page, photo: Path) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    page.set_input_files("input.clw-file", str(photo))
    page.wait_for_function("document.querySelector('.colorlab-widget').dataset.state === 'done' && "
                           f"document.querySelector('.clw-download').download === '{photo.stem}_color.png' || "
                           "document.querySelector('.colorlab-widget').dataset.state === 'error'", timeout=300_000)
    seconds = time.perf_counter() - start
    state = page.get_attribute(".colorlab-widget", "data-state")
    assert state == "done", page.inner_text(".clw-status")
    data_url = page.evaluate("document.querySelector('canvas.clw-after').toDataURL('image/png')")
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    return np.asarray(image), seconds


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_widget_colorizes_as_colorlab_colorize_does(browser, tmp_path_factory):
    work = tmp_path_factory.mktemp("widget")
    checkpoint, described, variant = _model_checkpoint(work)
    assets = _widget_assets()
    page_file = assets.standalone_page(work / "site", work / "onnx-cache", checkpoint=checkpoint, variant=variant)
    facts = json.loads((page_file.parent / "colorize" / "model" / "model.json").read_text())
    photos = _photos(work)
    expected = work / "python"
    run = subprocess.run([sys.executable, "-m", "colorlab", "colorize", *map(str, photos), "-o", str(expected),
                          "--checkpoint", str(checkpoint), "--device", "cpu"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    site = _Site(page_file.parent)
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(site.url)
        page.wait_for_selector(".colorlab-widget[data-state='idle']")
        figures = {}
        for i, photo in enumerate(photos):
            found, seconds = _colorize_in_page(page, photo)
            python = np.asarray(Image.open(expected / f"{photo.stem}_color.png").convert("RGB"))
            assert found.shape == python.shape
            figures[f"photo {i + 1} ({found.shape[1]}x{found.shape[0]})"] = {
                "seconds": round(seconds, 2), "psnr_db": round(psnr_db(found, python), 2),
                "max_levels": int(np.abs(found.astype(int) - python.astype(int)).max())}
        assert not errors, errors
    finally:
        site.close()
    report = (f"widget in Chromium {browser.version} ({described}; model {facts['file']}, "
              f"{facts['bytes'] / 1e6:.1f} MB, {facts['variant']}): " + json.dumps(figures))
    print("\n" + report)
    if os.environ.get("COLORLAB_WIDGET_REPORT"):  # where .ci/run or a person wants the figures kept
        Path(os.environ["COLORLAB_WIDGET_REPORT"]).write_text(report + "\n", encoding="utf-8")
    for name, figure in figures.items():
        assert figure["psnr_db"] >= MIN_PSNR_DB, f"{name}: the page and colorlab colorize differ: {figure}"


def test_without_a_model_the_widget_says_so_in_one_line(browser, tmp_path):
    page_file = _widget_assets().standalone_page(tmp_path / "site", tmp_path / "cache", model=False)
    site = _Site(page_file.parent)
    try:
        page = browser.new_page()
        page.goto(site.url)
        page.wait_for_selector(".colorlab-widget[data-state='no-model']")
        text = page.inner_text(".colorlab-widget")
    finally:
        site.close()
    assert text.count("\n") == 0 and "needs a published model" in text
