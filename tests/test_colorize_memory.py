"""Large photos are colorized at full resolution, strip by strip, with bounded extra memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from colorlab.colorize import STRIP_PIXELS, _linear_weights, _resample

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("small, height, width", [(32, 61, 97), (32, 3, 40000), (64, 1, 1), (32, 20, 7)])
def test_strips_of_upsampled_ab_equal_torch_bilinear_interpolation_of_the_whole(small, height, width):
    ab_small = torch.randn(2, small, small)
    reference = F.interpolate(ab_small[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    values = ab_small.numpy()  # colorize works on numpy arrays (2, size, size)
    columns = _linear_weights(small, width, 0, width)
    step = max(1, height // 3)  # uneven strips, as colorize_image cuts them
    strips = [_resample(_resample(values, 1, _linear_weights(small, height, top, min(height, top + step))), 2, columns)
              for top in range(0, height, step)]
    # float32 on both sides, interpolation weights computed in float64 here and float32 there: 1e-5 of values ~1
    assert torch.allclose(torch.from_numpy(np.concatenate(strips, axis=1)), reference, atol=1e-5)


PEAK_SCRIPT = """
import json, resource, sys, torch
from PIL import Image
from colorlab.colorize import colorize_image
from colorlab.models import build_generator
torch.set_num_threads(2)
width, height = int(sys.argv[1]), int(sys.argv[2])
generator = build_generator("baseline", 32).eval()
photo = Image.radial_gradient("L").convert("RGB").resize((width, height))
colorize_image(generator, photo.resize((64, 64)), 32)  # warm up: torch's own one-off allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = colorize_image(generator, photo, 32)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": result.size, "extra_kib": after - before}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_colorizing_a_12_megapixel_photo_needs_little_more_than_its_output():
    """Peak RSS growth (a high-water mark, so it cannot miss a short spike) while colorizing 4000x3000.

    The output alone is 4 bytes per pixel in PIL (48 MB); the strips add a bounded amount
    (STRIP_PIXELS at a time). Converting the whole photo to float tensors at once, as colorize
    did before, grew the peak by 1454 MB here (about 120 bytes per pixel).
    """
    width, height = 4000, 3000
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(width), str(height)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["size"] == [width, height]  # full resolution
    extra_bytes = measured["extra_kib"] * 1024
    bound = 10 * width * height + 64 * STRIP_PIXELS  # the output (4 B/px) with room to spare + the strips' floats
    print(f"peak RSS growth {extra_bytes / 1e6:.0f} MB for {width}x{height} (bound {bound / 1e6:.0f} MB)")
    assert extra_bytes < bound
