"""Training-side faults of issue 12: resume checks before any work, the image cache under SIGTERM, training folders."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from colorlab.cli import main
from colorlab.data import load_split
from colorlab.io import SkippedImageWarning
from tests.conftest import smooth_color_image
from tests.test_cli import train_argv

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, [line for line in stderr.getvalue().splitlines() if line.startswith("colorlab ")]


def test_resume_says_when_there_is_nothing_to_resume_and_refuses_another_recipe_before_training(tmp_path):
    out = tmp_path / "run"
    code, lines = run_cli(train_argv(out) + ["--resume"])
    assert code == 0
    assert f"colorlab train: no checkpoint in {out}/ to resume from; starting a new run" in lines

    code, lines = run_cli(train_argv(out, recipe="resnet18", weights="none") + ["--resume"])
    assert code == 2
    [error] = [line for line in lines if "error:" in line]
    assert "recipe 'baseline' there, 'resnet18' now" in error  # the run's recorded identity (run.json)
    assert not (out / "pretrain.pt").exists()  # refused before the pretraining stage, not after it


CACHE_SIGTERM = """
import signal, sys
from colorlab import cache
from colorlab.cli import main
real, calls = cache.load_resized, []
def load_then_sigterm(path, size):
    calls.append(path)
    if len(calls) == 3:
        signal.raise_signal(signal.SIGTERM)  # as `kill PID` would, in the middle of the cache build
    return real(path, size)
cache.load_resized = load_then_sigterm
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_the_image_cache_is_built_removes_the_partial_file_and_says_so(tmp_path, photo_folder):
    cache_dir = tmp_path / "cache"
    env = os.environ | {"COLORLAB_CACHE": str(cache_dir), "PYTHONPATH": str(ROOT)}
    argv = train_argv(tmp_path / "run", data=str(photo_folder))
    result = subprocess.run([sys.executable, "-c", CACHE_SIGTERM, *argv], capture_output=True, text=True, timeout=300,
                            env=env, cwd=tmp_path)
    assert result.returncode == 130, result.stderr  # not killed by the signal (-15) with no word said
    last = result.stderr.strip().splitlines()[-1]  # may follow a progress bar cut short by the signal
    assert "colorlab train: interrupted while caching images" in last and "removed" in last, last
    assert "Traceback" not in result.stderr
    assert [p.name for p in (cache_dir / "images").iterdir()] == []  # no .npy, no .npy.tmp


@pytest.fixture
def messy_training_folder(tmp_path) -> Path:
    """8 colour photos and 4 bad entries whose names sort first, so that a cap counting them would lose photos."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        smooth_color_image(rng).save(folder / f"photo_{i}.png")
    (folder / "a_empty.jpg").touch()
    os.mkfifo(folder / "a_fifo.jpg")
    (folder / "a_folder.jpg").mkdir()
    os.symlink("/dev/null", folder / "a_device.png")
    return folder


def test_n_images_caps_the_usable_images_and_every_special_file_is_warned_about(messy_training_folder):
    with pytest.warns(SkippedImageWarning, match=r"photos: kept 8 of (9|10|11|12): "):  # the draw met bad files
        train, val = load_split(messy_training_folder, n_images=8, seed=0)
    assert len(train) + len(val) == 8  # all 8 photos: the cap counts usable images
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_split(messy_training_folder, seed=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedImageWarning)]
    for name, reason in [("a_fifo.jpg", "a FIFO"), ("a_folder.jpg", "a folder"),
                         ("a_device.png", "a character device"), ("a_empty.jpg", "empty file")]:
        assert any(name in message and reason in message for message in messages), (name, messages)


def test_a_huge_jpeg_the_loader_can_draft_is_kept_when_the_loaders_max_side_is_passed(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        smooth_color_image(rng).save(folder / f"small_{i}.png")
    smooth_color_image(rng, 64).resize((7000, 6000)).save(folder / "huge.jpg", quality=50)  # 42 MP > 40 MP
    with pytest.warns(SkippedImageWarning, match="huge.jpg: too large"):
        train, val = load_split(folder, seed=0)  # without max_side: decoded at full size, over the limit
    assert folder / "huge.jpg" not in train + val
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedImageWarning)
        train, val = load_split(folder, seed=0, max_side=4 * 32)  # what `colorlab train --size 32` passes
    assert folder / "huge.jpg" in train + val


def test_the_cli_scans_training_data_with_the_loaders_max_side(tmp_path, monkeypatch):
    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr("colorlab.recipes.load_split", record)
    assert run_cli(train_argv(tmp_path / "run", size="64"))[0] == 2
    assert seen["max_side"] == 4 * 64
