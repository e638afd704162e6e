"""Binder (repo2docker): a CPU image with the CPU build of torch, at the versions CI tests.

repo2docker reads only binder/ when that folder exists, so the root environment.yml (the
developers' conda set-up, which would pull the CUDA torch) must not be what Binder builds from.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _pins(path: Path) -> dict[str, str]:
    """name -> version for every `name==version` line (comments and pip options skipped)."""
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("-"))


def test_binder_folder_shadows_the_root_environment():
    assert (ROOT / "environment.yml").is_file() and BINDER.is_dir()
    # Any of these in binder/ would make repo2docker build with conda or ignore requirements.txt.
    assert not {"environment.yml", "Dockerfile", "Pipfile", "setup.py"} & {path.name for path in BINDER.iterdir()}


def test_binder_installs_the_cpu_builds_of_the_tested_torch():
    requirements = BINDER / "requirements.txt"
    assert f"--extra-index-url {CPU_INDEX}" in requirements.read_text(encoding="utf-8")
    binder, tested = _pins(requirements), _pins(ROOT / "constraints.txt")
    assert set(binder) == {"torch", "torchvision"}
    for name, version in binder.items():
        assert version == f"{tested[name]}+cpu", f"binder/requirements.txt: {name}=={version}"


def test_postbuild_keeps_the_cpu_torch_and_installs_the_book_at_the_tested_versions():
    post_build = BINDER / "postBuild"
    script = post_build.read_text(encoding="utf-8")
    assert post_build.stat().st_mode & 0o111, "repo2docker runs postBuild only when it is executable"
    assert re.search(r'pip install [^\n]*-e "\.\[book\]" -c constraints\.txt', script)
    assert not re.search(r"pip install[^\n]*\btorch\b", script), "postBuild must not install torch itself"
    assert "torch.version.cuda" in script  # the image build fails if pip swapped in a CUDA torch


def test_binder_python_satisfies_the_package():
    runtime = (BINDER / "runtime.txt").read_text(encoding="utf-8").strip()
    major, minor = map(int, re.fullmatch(r"python-(\d+)\.(\d+)", runtime).groups())
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    low_major, low_minor = map(int, re.search(r">=\s*(\d+)\.(\d+)", requires).groups())
    assert (major, minor) >= (low_major, low_minor)
