"""Releases as code: the version rule, the tag check, the install lines the build writes, the assets' checksums."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import colorlab
from colorlab import book, hub, published_data

from conftest import _tool

release = _tool("release")
build_book = _tool("build_book")


def test_the_code_version_is_a_release_version_and_the_tag_check_accepts_only_it(capsys):
    assert release.RELEASE_VERSION.match(colorlab.__version__) and release.code_version() == colorlab.__version__
    assert release.check_tag(f"v{colorlab.__version__}") == 0
    assert release.check_tag("v0.0.1") == 1
    assert "does not release the code's version" in capsys.readouterr().err


def test_this_checkout_keeps_the_bump_rule():
    """Fails when `v<version>` is tagged here and colorlab/ or pyproject.toml changed since (no tag: nothing to keep)."""
    assert release.version_problem() is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_bump_rule_fails_when_the_library_changes_under_a_released_version(tmp_path):
    repo = tmp_path / "repo"
    (repo / "colorlab").mkdir(parents=True)
    (repo / "colorlab" / "__init__.py").write_text('__version__ = "1.2.3"\n')
    (repo / "colorlab" / "color.py").write_text("A = 1\n")
    (repo / "README.md").write_text("words\n")
    run = lambda *args: subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "release")
    run("tag", "v1.2.3")
    assert release.version_problem(repo) is None
    (repo / "README.md").write_text("other words\n")  # not the library: no new version needed
    assert release.version_problem(repo) is None
    (repo / "colorlab" / "color.py").write_text("A = 2\n")
    assert release.version_problem(repo).startswith("the library changed since the release v1.2.3 "
                                                    "(colorlab/color.py) but still says 1.2.3")
    (repo / "colorlab" / "__init__.py").write_text('__version__ = "1.2.4"\n')  # the bump
    assert release.version_problem(repo) is None


def test_every_committed_chapter_installs_this_version_and_the_build_writes_it(tmp_path, monkeypatch):
    line = f'%pip install -q \\"{colorlab.DISTRIBUTION}=={colorlab.__version__}\\"'
    chapters = release.chapters()
    assert len(chapters) >= 10 and all(line in path.read_text(encoding="utf-8") for path in chapters)

    monkeypatch.setattr(colorlab, "__version__", "9.8.7")  # a build of another version writes that one
    build_book.stage(tmp_path / "src")
    staged = sorted((tmp_path / "src" / "book").glob("*.ipynb"))
    assert len(staged) == len(chapters)
    assert all('%pip install -q \\"colorlab-book==9.8.7\\"' in path.read_text(encoding="utf-8") for path in staged)


def test_write_install_version_changes_that_line_only(tmp_path):
    copy = tmp_path / "chapter.ipynb"
    original = release.chapters()[0].read_text(encoding="utf-8")
    copy.write_text(original, encoding="utf-8")
    assert book.write_install_version(copy, "3.2.1")
    changed = copy.read_text(encoding="utf-8")
    assert [a for a, b in zip(original.splitlines(), changed.splitlines()) if a != b] == \
        [f'    "    %pip install -q \\"{colorlab.DISTRIBUTION}=={colorlab.__version__}\\"\\n",']
    assert not book.write_install_version(copy, "3.2.1")  # already so: unchanged


def test_assets_are_gathered_only_when_every_sha256_matches(register_published, tiny_checkpoint, eval_release,
                                                            tmp_path, monkeypatch, capsys):
    model = register_published("http://127.0.0.1:9/models-v1/tiny-32.pt")
    monkeypatch.setattr(hub, "MODELS", {"tiny-32": model})
    facts = eval_release["facts"]
    asset = published_data.DataAsset("eval", facts["file"], facts["sha256"], facts["bytes"],
                                     f"http://127.0.0.1:9/data-v1/{facts['file']}")
    monkeypatch.setattr(release, "DATASETS", {"eval": asset})
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.copy(tiny_checkpoint, kept / "tiny-32.pt")
    data = eval_release["release"] / "data-v1"

    assert release.gather_assets(str(kept), data, tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["tiny-32.pt", facts["file"]])

    damaged = bytearray((kept / "tiny-32.pt").read_bytes())
    damaged[100] ^= 1
    (kept / "tiny-32.pt").write_bytes(bytes(damaged))
    assert release.gather_assets(str(kept), data, tmp_path / "out2") == 1
    assert "tiny-32.pt has sha256" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "tiny-32.pt").exists()
    assert release.upload_assets(str(kept), data, dry_run=True, staged=tmp_path / "out3") == 1  # nothing is uploaded when a file is wrong
