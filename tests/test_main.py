"""`python -m colorlab` is the `colorlab` command (notebook kernels run `!python -m colorlab ...`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_m_colorlab(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's colorlab, whatever is installed
    return subprocess.run([sys.executable, "-m", "colorlab", *arguments], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def test_python_m_colorlab_shows_the_commands_of_colorlab(tmp_path):
    result = _python_m_colorlab("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: colorlab ")
    for command in ("train", "colorize", "experiment", "assignments"):
        assert command in result.stdout


def test_python_m_colorlab_passes_on_the_exit_status_and_the_one_line_error(tmp_path):
    photo = tmp_path / "p.png"
    photo.write_bytes(b"not used: the checkpoint is checked first")
    result = _python_m_colorlab("colorize", str(photo), "-o", "out", "--checkpoint", "nope/gan.pt", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["colorlab colorize: error: checkpoint not found: nope/gan.pt"]
