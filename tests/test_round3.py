"""Issue 27, reliability round 3: nothing of the user's is overwritten, nothing hangs, every run is what it says.

Each test is named by the broken promise it guards; each fails on the code before its fix.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab.checkpoint import save_checkpoint
from colorlab.cli import main
from colorlab.models import build_generator
from tests.conftest import smooth_color_image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained 32 px baseline generator: file handling does not need a trained one."""
    torch.manual_seed(0)
    generator = build_generator("baseline", 32)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "gan.pt",
                           {"spec": generator.spec, "generator": generator.state_dict()})


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `colorlab ARGV` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def colorize(inputs: list[Path], out: Path, checkpoint: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["colorize", *map(str, inputs), "-o", str(out), "--checkpoint", str(checkpoint),
                    "--device", "cpu", *extra])


def photo(path: Path, seed: int = 0) -> Path:
    smooth_color_image(np.random.default_rng(seed), 40).save(path)
    return path


# --- 1. colorize never overwrites the user's files, never colorizes its own results ---------------------


def test_colorize_into_its_input_folder_keeps_the_users_own_color_png(tmp_path, checkpoint):
    folder = tmp_path / "F"
    folder.mkdir()
    photo(folder / "cat.jpg")
    users = photo(folder / "cat_color.png", seed=7)  # the user's own file, named like an output
    before = users.read_bytes()
    code, stdout, stderr = colorize([folder], folder, checkpoint)
    assert users.read_bytes() == before
    assert not (folder / "cat_color_color.png").exists()  # its own outputs are never inputs
    [line] = [line for line in stderr.splitlines() if "warning:" in line]
    assert "skipped 1 input(s) whose output exists" in line and "cat_color.png" in line and "--overwrite" in line
    assert "left out 1 file(s) of the output folder" in line
    assert code == 0 and "Traceback" not in stderr


def test_a_second_call_into_the_same_folder_skips_instead_of_replacing_unless_overwrite(tmp_path, checkpoint):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = photo(tmp_path / "a" / "x.png", 1), photo(tmp_path / "b" / "x.png", 2)
    out = tmp_path / "out"
    assert colorize([first], out, checkpoint)[0] == 0
    kept = (out / "x_color.png").read_bytes()
    code, _, stderr = colorize([second], out, checkpoint)
    assert code == 0 and (out / "x_color.png").read_bytes() == kept and "skipped 1 input(s)" in stderr
    code, _, stderr = colorize([second], out, checkpoint, "--overwrite")
    assert code == 0 and (out / "x_color.png").read_bytes() != kept and "skipped" not in stderr


def test_rerunning_into_a_subfolder_of_the_input_does_not_colorize_its_own_results(tmp_path, checkpoint):
    nest = tmp_path / "nest"
    nest.mkdir()
    photo(nest / "a.jpg")
    for _ in range(3):
        assert colorize([nest], nest / "colorized", checkpoint)[0] == 0
    assert sorted(p.name for p in (nest / "colorized").iterdir()) == ["a_color.png"]
