"""Shared fixtures: small generated photos, so tests never need a download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def smooth_color_image(rng: np.random.Generator, side: int = 48) -> Image.Image:
    """A smooth, colourful RGB image (low-frequency blobs), something a network can learn."""
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((side, side), Image.BICUBIC)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        smooth_color_image(rng).save(folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "photos").is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED
