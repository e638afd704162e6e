"""Shared fixtures: small generated photos, so tests never need a download."""

from __future__ import annotations

import os
import shutil
import tempfile
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# `make test` runs two xdist workers on the two cores: one torch thread each (more would only fight for them);
# OMP_NUM_THREADS, when set, wins (the suite is checked with 1 and with the default).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or (1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)))


def pytest_sessionstart(session) -> None:
    """The machine in the log's first lines (also under -q): results that differ by CPU or thread count can be read."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"machine: {models[0] if models else platform.processor()}, {os.cpu_count()} cores; "
                            f"torch {torch.__version__}, numpy {np.__version__}; torch threads per test process: "
                            f"{os.environ.get('OMP_NUM_THREADS') or ('1' if session.config.getoption('numprocesses', None) else '2')}; "
                            f"{shutil.disk_usage(tempfile.gettempdir()).free / 2**30:.0f} GiB free for temporary files")


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
    """The project's photo set, found as colorlab finds it (`data.shared_data_dir`); the test is skipped without it."""
    from colorlab.data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data (or $COLORLAB_SHARED_DATA) is not present on this machine")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real generator-only checkpoint of a 32 px baseline U-Net, exported like a published model."""
    from colorlab.checkpoint import save_checkpoint
    from colorlab.hub import export_checkpoint
    from colorlab.models import build_generator

    folder = tmp_path_factory.mktemp("published")
    torch.manual_seed(0)
    generator = build_generator("baseline", 32)
    training = save_checkpoint(folder / "gan.pt", {"spec": generator.spec, "stage": "gan", "epoch": 1,
                                                   "generator": generator.state_dict(),
                                                   "history": {"loss_G_L1": [0.3]}})
    export_checkpoint(training, folder / "tiny-32.pt")
    return folder / "tiny-32.pt"


@pytest.fixture
def models_isolated(tmp_path, monkeypatch) -> Path:
    """colorlab.hub sees no ../shared/models, no $COLORLAB_MODELS and an empty cache (returned)."""
    from colorlab import hub

    monkeypatch.setattr(hub, "SHARED_MODELS", tmp_path / "no-shared")
    monkeypatch.setattr(hub, "MODEL_CACHE", tmp_path / "cache")
    monkeypatch.delenv("COLORLAB_MODELS", raising=False)
    monkeypatch.setattr(hub, "_verified", {})
    return tmp_path / "cache"


@pytest.fixture
def register_published(models_isolated, tiny_checkpoint, monkeypatch):
    """register(url, sha256=None, name="tiny-32"): publish `tiny_checkpoint` as `name`, the default, at `url`."""
    import hashlib

    from colorlab import hub

    def register(url: str, sha256: str | None = None, name: str = "tiny-32"):
        data = tiny_checkpoint.read_bytes()
        model = hub.PublishedModel(name=name, file=f"{name}.pt", bytes=len(data), url=url,
                                   sha256=sha256 or hashlib.sha256(data).hexdigest(),
                                   spec={"arch": "baseline", "size": 32, "n_down": 5},
                                   info={"what": "a 32 px test model", "stage": "gan", "epochs": {"cGAN + L1": 1}})
        monkeypatch.setitem(hub.MODELS, name, model)
        monkeypatch.setattr(hub, "PREFERENCE", [name, *hub.PREFERENCE])
        monkeypatch.setattr(hub, "DEFAULT", name)
        return model

    return register


@pytest.fixture
def release_server(tmp_path):
    """serve(folder) -> its URL: an HTTP server on 127.0.0.1 playing a release (files by path); stopped after the test.

    `stop()` on the returned object's owner ends it early, as an offline machine sees it: nothing listens.
    """
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    servers = []

    class Release:
        def serve(self, folder: Path) -> str:
            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            servers.append(httpd)
            return f"http://127.0.0.1:{httpd.server_address[1]}"

        def stop(self) -> None:
            while servers:
                httpd = servers.pop()
                httpd.shutdown()
                httpd.server_close()

    release = Release()
    yield release
    release.stop()


def _tool(name: str):
    """A module of tools/ (not a package), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_eval_release(tmp_path: Path) -> dict:
    """A generated evaluation-photo asset packed by tools/pack_eval_photos.py, as a release serves it.

    Returns {"release": folder to serve (data-v1/<zip>), "registry": a data registry naming it, "facts": its
    entry}. The photos are generated here (6 val, 2 old), with MANIFEST.csv rows like the shared set's.
    """
    import hashlib
    import json

    pack_eval_photos = _tool("pack_eval_photos")
    shared = tmp_path / "fake-shared"
    rows = ["split,file,source,original,width,height,mean_chroma,grayscale,licence\n"]
    rng = np.random.default_rng(1)
    for split, folder, count in (("val", "photos/val", 6), ("old", "old-photos", 2), ("train", "photos/train", 2)):
        (shared / folder).mkdir(parents=True)
        for i in range(count):
            name = f"{folder}/{split}_{i}.jpg"
            smooth_color_image(rng, side=80).save(shared / name)
            rows.append(f'{split},{name},generated,{i}.png,80,80,20.0,0,"generated for the tests"\n')
    (shared / "MANIFEST.csv").write_text("".join(rows))
    release = tmp_path / "release"
    pack_eval_photos.main(["--shared", str(shared), "--out", str(release / "data-v1"), "--file", "eval-test-v1.zip"])
    data = (release / "data-v1" / "eval-test-v1.zip").read_bytes()
    facts = {"name": "eval", "file": "eval-test-v1.zip", "sha256": hashlib.sha256(data).hexdigest(),
             "bytes": len(data), "what": "generated evaluation photos"}
    registry = tmp_path / "published_data.json"
    registry.write_text(json.dumps({"format": "colorlab-published-data-v1", "release": "data-v1", "data": [facts]}))
    return {"release": release, "registry": registry, "facts": facts}


@pytest.fixture
def eval_release(tmp_path) -> dict:
    """`make_eval_release` in this test's folder."""
    return make_eval_release(tmp_path)
