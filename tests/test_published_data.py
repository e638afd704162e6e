"""The evaluation photos as a release asset: packed reproducibly, fetched checked into the cache, found by evaluations.

The release is a server on 127.0.0.1 serving an asset packed here from generated photos by the real
tools/pack_eval_photos.py; only the test of the registered asset itself reads ../shared/data.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from colorlab import book, hub, published_data

from conftest import _tool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_isolated(tmp_path, monkeypatch, eval_release):
    """colorlab sees no ../shared/data and an empty cache; the data registry is the generated asset's."""
    monkeypatch.setattr(published_data, "DATA_CACHE", tmp_path / "cache")
    monkeypatch.setattr(published_data, "shared_data_dir", lambda: None)
    monkeypatch.setattr(hub, "_verified", {})

    def register(url: str) -> published_data.DataAsset:
        facts = eval_release["facts"]
        asset = published_data.DataAsset(facts["name"], facts["file"], facts["sha256"], facts["bytes"],
                                          f"{url}/data-v1/{facts['file']}", facts)
        monkeypatch.setitem(published_data.DATASETS, "eval", asset)
        return asset

    return register


def test_fetch_downloads_checks_and_unpacks_and_evaluations_find_the_photos(data_isolated, eval_release,
                                                                            release_server, tmp_path, capsys):
    data_isolated(release_server.serve(eval_release["release"]))
    folder = published_data.eval_photos_dir()
    assert folder == tmp_path / "cache" / "eval-test-v1"
    assert sorted(p.name for p in (folder / "photos" / "val").iterdir()) == [f"val_{i}.jpg" for i in range(6)]
    assert len(list((folder / "old-photos").iterdir())) == 2 and not (folder / "photos" / "train").exists()
    assert "generated for the tests" in (folder / "MANIFEST.csv").read_text()  # each photo's licence row
    assert capsys.readouterr().out.startswith("evaluation photos: downloaded eval-test-v1.zip (sha256 checked)")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["eval-test-v1"]  # the zip is not kept

    release_server.stop()  # from now on offline: the unpacked photos serve
    batches, photos = book.held_out_batches(32, "cpu")
    assert sum(len(L) for L, _ in batches) == 6 and photos.startswith("6 held-out photos of COCO val2017")


def test_a_damaged_asset_is_refused_and_leaves_nothing_in_the_cache(data_isolated, eval_release, release_server,
                                                                     tmp_path, capsys):
    zip_file = eval_release["release"] / "data-v1" / "eval-test-v1.zip"
    data = bytearray(zip_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    zip_file.write_bytes(bytes(data))
    data_isolated(release_server.serve(eval_release["release"]))
    with pytest.raises(published_data.DataAssetError, match="has the wrong sha256"):
        published_data.fetch("eval")
    assert [p.name for p in (tmp_path / "cache").rglob("*")] == []
    assert published_data.eval_photos_dir() is None
    assert capsys.readouterr().out.startswith("evaluation photos: not here and not downloaded (data 'eval': ")


def test_offline_evaluations_fall_back_with_one_line(data_isolated, tmp_path, capsys):
    data_isolated("http://127.0.0.1:9")  # port 9: nothing listens
    assert book.held_out_batches(32, "cpu") is None
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("evaluation photos: not here and not downloaded (data 'eval': cannot reach "
                           "http://127.0.0.1:9/data-v1/eval-test-v1.zip")
    assert line.endswith("run `colorlab data fetch eval` again)")


def test_a_zip_member_outside_its_folder_is_refused(data_isolated, tmp_path):
    asset = data_isolated("http://127.0.0.1:9")
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("eval-test-v1/photos/val/a.jpg", b"x")
        zf.writestr("eval-test-v1/../../escaped.txt", b"x")
    with pytest.raises(published_data.DataAssetError, match="refusing the member"):
        published_data._unpack(archive, asset)
    assert not (tmp_path / "escaped.txt").exists() and not asset.folder.exists()


def test_colorlab_data_fetch_uses_the_documented_environment_variables(eval_release, release_server, tmp_path):
    url = release_server.serve(eval_release["release"])
    env = {**os.environ, "COLORLAB_RELEASE_URL": url, "COLORLAB_DATA_REGISTRY": str(eval_release["registry"]),
           "COLORLAB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "colorlab", "data", "fetch", "eval"], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "cache" / "data" / "eval-test-v1")
    listed = subprocess.run([sys.executable, "-m", "colorlab", "data"], capture_output=True, text=True, env=env)
    assert str(tmp_path / "cache" / "data" / "eval-test-v1") in listed.stdout


def test_the_registered_asset_is_what_the_tool_packs_from_the_shared_photos(shared_data, tmp_path):
    """Needs ../shared/data (the `shared_data` fixture skips without it): the registry's sha256 is reproducible."""
    pack_eval_photos = _tool("pack_eval_photos")
    pack_eval_photos.main(["--shared", str(shared_data), "--out", str(tmp_path)])
    registered = json.loads((ROOT / "colorlab" / "published_data.json").read_text())["data"]
    (entry,) = [entry for entry in registered if entry["name"] == "eval"]
    data = (tmp_path / entry["file"]).read_bytes()
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"])
    names = zipfile.ZipFile(tmp_path / entry["file"]).namelist()
    assert sum("/photos/val/" in name for name in names) == 128 and sum("/old-photos/" in name for name in names) == 12
    assert not any("/photos/train/" in name for name in names)  # ImageNet and BSDS500 are not redistributable
