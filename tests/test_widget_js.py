"""The book's JavaScript colorizer (book/_static/colorize/colorize.js) against colorlab, under node's test runner.

Python computes the expected values with the library (colorlab.color on random colours, PIL's resize
and colorlab.colorize.colorize_image on a random photo with a generator that returns known ab),
writes them to JSON, and `node --test tests/js/` compares (tests/js/colorize.test.mjs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab.color import lab_to_rgb, rgb_to_lab
from colorlab.colorize import colorize_image

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")


class _KnownAb(torch.nn.Module):
    """A 'generator' that returns fixed ab (in [-1, 1] units) and remembers its input."""

    def __init__(self, ab: torch.Tensor) -> None:
        super().__init__()
        self.ab = ab

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        self.seen = L
        return self.ab


def _cases() -> dict:
    rng = np.random.default_rng(29)
    rgb = rng.random((500, 3)).astype(np.float32)
    rgb[:8] = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5], [0.04, 0.04, 0.04], [0.003, 0.9, 0.2]]
    lab = rgb_to_lab(torch.from_numpy(rgb).T[None, :, :, None])[0, :, :, 0].T
    # Lab over and beyond the sRGB gamut: the clipping must agree too.
    lab_in = np.stack([rng.uniform(0, 100, 500), rng.uniform(-128, 127, 500), rng.uniform(-128, 127, 500)], 1)
    lab_in = lab_in.astype(np.float32)
    rgb_out = lab_to_rgb(torch.from_numpy(lab_in).T[None, :, :, None])[0, :, :, 0].T

    width, height, size = 53, 37, 8
    coarse = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    photo = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    noise = rng.integers(-20, 21, (height, width, 3))
    photo = Image.fromarray(np.clip(np.asarray(photo).astype(int) + noise, 0, 255).astype(np.uint8))
    ab_small = torch.from_numpy(rng.uniform(-1.2, 1.2, (1, 2, size, size)).astype(np.float32))  # beyond [-1, 1]: clamped
    generator = _KnownAb(ab_small)
    colorized = np.asarray(colorize_image(generator, photo, size))
    rgba = np.concatenate([np.asarray(photo), np.full((height, width, 1), 255, np.uint8)], 2)
    return {"rgb": rgb.tolist(), "lab": lab.tolist(), "lab_in": lab_in.tolist(), "rgb_out": rgb_out.tolist(),
            "photo": {"width": width, "height": height, "size": size, "rgba": rgba.ravel().tolist(),
                      "pil_small": np.asarray(photo.resize((size, size), Image.Resampling.BILINEAR)).ravel().tolist(),
                      "L_small": generator.seen.ravel().tolist(), "ab_small": ab_small.ravel().tolist(),
                      "colorized": colorized.ravel().tolist()}}


@pytest.mark.skipif(NODE is None, reason="node (>= 18, for its test runner) is not installed")
def test_javascript_colorizer_agrees_with_colorlab(tmp_path):
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(_cases()), encoding="utf-8")
    run = subprocess.run([NODE, "--test", str(ROOT / "tests" / "js")], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "COLORLAB_JS_CASES": str(cases)}, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "# pass 4" in run.stdout and "# fail 0" in run.stdout
