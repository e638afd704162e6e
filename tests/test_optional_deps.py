"""A plain `pip install colorlab-book` (no `book` extra) runs the `colorlab` command; only assignments need the extra.

Each test runs the command in a fresh interpreter in which the book extra's packages cannot be
imported (``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError, as for
a package that is not installed), whatever this machine has installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BOOK_EXTRA = ("nbformat", "nbclient", "papermill", "IPython", "jupyter_book", "ipykernel")
WITHOUT_BOOK_EXTRA = f"""
import sys
for name in {BOOK_EXTRA!r}:
    sys.modules[name] = None
from colorlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _colorlab_without_book_extra(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's colorlab, whatever is installed
    return subprocess.run([sys.executable, "-c", WITHOUT_BOOK_EXTRA, *arguments], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_the_command_lists_every_subcommand_without_the_book_extra(tmp_path):
    result = _colorlab_without_book_extra("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("train", "colorize", "experiment", "assignments", "models"):
        assert command in result.stdout


def test_colorize_works_without_the_book_extra(tmp_path, tiny_checkpoint):
    Image.linear_gradient("L").resize((40, 30)).save(tmp_path / "old.png")  # a grey photo to colorize
    result = _colorlab_without_book_extra("colorize", "old.png", "-o", "out", "--checkpoint", str(tiny_checkpoint),
                                          "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "old_color.png").is_file()


def test_assignments_without_the_book_extra_say_in_one_line_what_to_install(tmp_path):
    result = _colorlab_without_book_extra("assignments", "build", "--book", str(ROOT / "book"), "-o", "course",
                                          cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        'colorlab assignments: error: nbformat is not installed; `pip install "colorlab-book[book]"` adds what '
        "building and grading assignments need"
    ]
    assert not (tmp_path / "course").exists()
