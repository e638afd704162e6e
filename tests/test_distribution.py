"""The distribution's name: `pip install colorlab` installs an unrelated package, so every install
instruction names colorlab-book (colorlab.DISTRIBUTION), while `import colorlab` and the command stay."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import colorlab

ROOT = Path(__file__).resolve().parents[1]
SCANNED = {".md", ".ipynb", ".yml", ".yaml", ".toml", ".py", ".txt", ".cfg", ""}
NOT_SCANNED = {".git", "_build", "runs", ".pytest_cache", ".hypothesis", "__pycache__", "node_modules", "dist"}
PIP_INSTALL = re.compile(r"pip install[^\n`]*")  # up to the end of an inline `code` span
# a requirement that starts with our import name: `colorlab`, `colorlab[book]`, `"colorlab @ git+..."`, `colorlab==1`
REQUIREMENT = re.compile(r"(?<![\w/.{-])colorlab([\w.-]*)")


def install_instructions() -> list[tuple[str, str]]:
    found = []
    for path in sorted(ROOT.rglob("*")):
        if not path.is_file() or path.suffix not in SCANNED or NOT_SCANNED & set(path.relative_to(ROOT).parts) \
                or path == Path(__file__):  # its own examples of wrong lines
            continue
        for line in PIP_INSTALL.findall(path.read_text(encoding="utf-8", errors="replace")):
            found.append((path.relative_to(ROOT).as_posix(), line))
    return found


def wrong_names(line: str) -> list[str]:
    return [f"colorlab{rest}" for rest in REQUIREMENT.findall(line) if not rest.startswith(colorlab.DISTRIBUTION[8:])]


def test_the_rule_catches_the_import_name_used_as_a_requirement():
    assert wrong_names('pip install "colorlab[book]"') == ["colorlab"]
    assert wrong_names('%pip install -q "colorlab @ git+https://example.org/colorlab.git@v0.1.0"') == ["colorlab"]
    assert wrong_names("pip install colorlab") == ["colorlab"]
    assert wrong_names('pip install "colorlab-book[book]"') == []
    assert wrong_names('pip install -e ".[book]" -c constraints.txt') == []


def test_every_install_instruction_names_the_distribution():
    instructions = install_instructions()
    assert len(instructions) > 20, "the scan found too few `pip install` lines to mean anything"
    wrong = [f"{path}: {line.strip()}" for path, line in instructions if wrong_names(line)]
    assert not wrong, f"install {colorlab.DISTRIBUTION}, not colorlab (another project's package):\n" + "\n".join(wrong)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"pip install {colorlab.DISTRIBUTION}" in readme, "the README says how a reader installs the release"


def test_colorlab_version_names_the_version_and_the_distribution():
    result = subprocess.run([sys.executable, "-m", "colorlab", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"colorlab {colorlab.__version__} ({colorlab.DISTRIBUTION})"
