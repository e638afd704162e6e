"""book.published_model, the one answer to "the published model, or this chapter's own run".

The release is played by an HTTP server on 127.0.0.1 (conftest's `release_server`) serving a real
generator-only checkpoint generated here; the registry entry is the test's (`register_published`).
"""

from __future__ import annotations

import shutil

import torch

from colorlab import book


def _release(folder, tiny_checkpoint, damaged: bool = False):
    folder.mkdir()
    data = bytearray(tiny_checkpoint.read_bytes())
    if damaged:
        data[len(data) // 2] ^= 0xFF  # same size, one byte off: only the checksum can tell
    (folder / "baseline-32.pt").write_bytes(bytes(data))
    return folder


def test_auto_downloads_the_model_into_the_cache_says_so_and_then_uses_the_local_file(
        register_published, tiny_checkpoint, release_server, models_isolated, tmp_path, capsys):
    url = release_server.serve(_release(tmp_path / "release", tiny_checkpoint))
    register_published(f"{url}/baseline-32.pt", name="baseline-32")

    chosen = book.published_model("baseline", "auto", 32)
    assert chosen is not None and chosen.file == models_isolated / "baseline-32.pt"
    assert chosen.file.read_bytes() == tiny_checkpoint.read_bytes()
    out = capsys.readouterr().out.splitlines()
    assert out == [f"baseline: the published model baseline-32: a 32 px test model, 1 cGAN + L1 epochs on unknown "
                   f"data (?, ?); downloaded into {models_isolated}, sha256 checked"]
    assert chosen.load().published.name == "baseline-32"

    release_server.stop()  # the second time needs no network: the cached file is found and used
    again = book.published_model("baseline", "auto", 32)
    assert again.file == chosen.file
    assert "downloaded" not in capsys.readouterr().out


def test_offline_the_chapter_falls_back_to_its_own_run_with_one_line_saying_why(
        register_published, tiny_checkpoint, release_server, models_isolated, tmp_path, capsys):
    url = release_server.serve(_release(tmp_path / "release", tiny_checkpoint))
    register_published(f"{url}/baseline-32.pt", name="baseline-32")
    release_server.stop()  # nothing listens any more: an offline laptop

    trained = torch.nn.Identity()
    assert book.published_or_train("baseline", "auto", 32, lambda: trained) is trained
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("baseline: this chapter's own run, since the published model could not be had "
                           f"(published model 'baseline-32': cannot reach {url}/baseline-32.pt")
    assert line.endswith("`colorlab models fetch baseline-32` retries, published='none' skips it)")
    assert [path.name for path in models_isolated.rglob("*")] == []


def test_a_damaged_file_on_the_server_is_refused_by_its_checksum_and_leaves_nothing_in_the_cache(
        register_published, tiny_checkpoint, release_server, models_isolated, tmp_path, capsys):
    url = release_server.serve(_release(tmp_path / "release", tiny_checkpoint, damaged=True))
    register_published(f"{url}/baseline-32.pt", name="baseline-32")

    assert book.published_model("baseline", "auto", 32) is None
    (line,) = capsys.readouterr().out.splitlines()
    assert "has the wrong sha256" in line and line.startswith("baseline: this chapter's own run")
    assert [path.name for path in models_isolated.rglob("*")] == []  # no model, no partial download


def test_published_none_never_touches_the_network_and_a_size_without_a_model_says_so(register_published, capsys):
    register_published("http://127.0.0.1:9/never-used.pt", name="baseline-32")
    assert book.published_model("baseline", "none", 32) is None
    assert book.published_model("baseline", "auto", 16) is None
    assert capsys.readouterr().out.splitlines() == [
        "baseline: this chapter's own run (published='none')",
        "baseline: this chapter's own run (no published model of this stage for 16 px; published ones: "
        "baseline-32, baseline-64)"]


def test_a_local_file_is_used_without_a_download(register_published, tiny_checkpoint, models_isolated, tmp_path,
                                                 monkeypatch, capsys):
    register_published("http://127.0.0.1:9/never-used.pt", name="baseline-32")  # port 9: a download would fail
    shutil.copy(tiny_checkpoint, tmp_path / "baseline-32.pt")
    monkeypatch.setenv("COLORLAB_MODELS", str(tmp_path))
    chosen = book.published_model("baseline", "baseline-32", 32)
    assert chosen.file == tmp_path / "baseline-32.pt"
    assert capsys.readouterr().out.startswith("baseline: the published model baseline-32")
