"""Published models: the registry, the local search, and downloads from a real HTTP server on 127.0.0.1.

Every download test serves a checkpoint generated here from a server started here, on the
loopback address only; nothing reaches beyond this machine.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch

import colorlab
from colorlab import hub

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT.parent / "shared" / "models" / "MANIFEST.json"


class _Server:
    """An HTTP server on 127.0.0.1 serving `files` by name; `/truncated/NAME` sends half of NAME's body."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                truncated = self.path.startswith("/truncated/")
                body = server.files.get(self.path.removeprefix("/truncated"))
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if truncated else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tiny_checkpoint):
    running = _Server({"/tiny-32.pt": tiny_checkpoint.read_bytes()})
    yield running
    running.close()


def test_download_succeeds_and_a_second_call_is_served_from_the_cache(models_isolated, server, tiny_checkpoint,
                                                                       register_published, monkeypatch):
    register_published(f"{server.url}/tiny-32.pt")
    assert not hub.is_available("tiny-32")
    generator = hub.load_pretrained("tiny-32")
    assert server.requests == ["/tiny-32.pt"]
    assert (models_isolated / "tiny-32.pt").read_bytes() == tiny_checkpoint.read_bytes()
    assert list(models_isolated.iterdir()) == [models_isolated / "tiny-32.pt"]  # no temporary file left beside it
    assert not generator.training and generator.published.name == "tiny-32"
    with torch.no_grad():
        assert generator(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)

    assert hub.is_available("tiny-32")
    monkeypatch.setattr(hub, "_verified", {})  # a fresh process: the cached file is checksummed again
    assert hub.fetch_pretrained("tiny-32") == models_isolated / "tiny-32.pt"
    assert server.requests == ["/tiny-32.pt"]  # no second request


@pytest.mark.parametrize("case, message", [
    ("checksum", "has the wrong sha256"),
    ("truncated", "truncated|broke off"),
    ("404", "HTTP 404"),
])
def test_a_failed_download_is_one_line_with_the_ways_out_and_leaves_nothing(models_isolated, server, register_published,
                                                                            case, message):
    url = {"checksum": f"{server.url}/tiny-32.pt", "truncated": f"{server.url}/truncated/tiny-32.pt",
           "404": f"{server.url}/missing.pt"}[case]
    register_published(url, sha256="0" * 64 if case == "checksum" else None)
    with pytest.raises(hub.PublishedModelError, match=message) as error:
        hub.fetch_pretrained("tiny-32")
    text = str(error.value)
    assert "\n" not in text and "'tiny-32'" in text
    assert "by hand" in text and hub.TRAIN_COMMAND in text
    assert not models_isolated.exists() or list(models_isolated.iterdir()) == []
    assert len(server.requests) == 1


def test_no_server_is_a_clear_error_and_leaves_nothing(models_isolated, register_published):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    register_published(f"http://127.0.0.1:{port}/tiny-32.pt")
    with pytest.raises(hub.PublishedModelError, match="cannot reach .*no network"):
        hub.fetch_pretrained("tiny-32")
    assert not models_isolated.exists() or list(models_isolated.iterdir()) == []


def test_local_files_are_found_in_order_and_checked(models_isolated, tiny_checkpoint, register_published,
                                                    monkeypatch, tmp_path):
    register_published("http://127.0.0.1:9/never-used.pt")
    env_dir, shared = tmp_path / "env", tmp_path / "no-shared"
    for folder in (env_dir, shared):
        folder.mkdir()
        (folder / "tiny-32.pt").write_bytes(tiny_checkpoint.read_bytes())
    monkeypatch.setenv("COLORLAB_MODELS", str(env_dir))
    assert hub.fetch_pretrained("tiny-32") == env_dir / "tiny-32.pt"
    monkeypatch.delenv("COLORLAB_MODELS")
    assert hub.fetch_pretrained("tiny-32") == shared / "tiny-32.pt"
    assert hub.fetch_pretrained("tiny-32", path=tiny_checkpoint) == tiny_checkpoint

    damaged = bytearray(tiny_checkpoint.read_bytes())
    damaged[-100] ^= 0xFF  # same size, one byte flipped
    (shared / "tiny-32.pt").write_bytes(bytes(damaged))
    with pytest.raises(hub.PublishedModelError, match="no-shared/tiny-32.pt has sha256"):
        hub.fetch_pretrained("tiny-32")
    with pytest.raises(hub.PublishedModelError, match="downloads are off"):
        (shared / "tiny-32.pt").unlink()
        hub.fetch_pretrained("tiny-32", download=False)


def test_unknown_name_lists_the_published_models():
    with pytest.raises(hub.PublishedModelError, match="baseline-64, resnet18-l1-64, resnet18-gan-64"):
        hub.get("resnet50-gan")


def test_export_writes_a_half_precision_generator_only_file(tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    assert set(state) == {"format", "spec", "stage", "epoch", "generator"}
    assert {t.dtype for t in state["generator"].values() if t.is_floating_point()} == {torch.float16}


def test_registry_urls_are_release_assets_of_the_one_repository_url():
    for model in hub.MODELS.values():
        assert model.url.startswith(colorlab.REPOSITORY_URL + "/releases/download/")
        assert model.url.endswith("/" + model.file)
    assert sorted(hub.PREFERENCE) == sorted(hub.MODELS)
    assert hub.PREFERENCE[0] == hub.DEFAULT  # colorize without --model takes the default when it is here


def test_each_chapter_stage_has_its_published_models_in_order_of_preference():
    assert hub.stage_models("gan", 64) == ["resnet18-gan-64-v2", "resnet18-gan-64"]  # bounded output first
    assert hub.stage_models("pretrain", 64) == ["resnet18-l1-64"]
    assert hub.stage_models("baseline", 64) == ["baseline-64"]
    assert hub.stage_models("gan", 256) == []
    with pytest.raises(ValueError, match="unknown stage 'decoder'"):
        hub.stage_models("decoder")


def test_registry_agrees_with_the_published_manifest():
    if not MANIFEST.is_file():
        pytest.skip(f"{MANIFEST} is not present: nothing to compare the registry with")
    published = {entry["name"]: entry for entry in json.loads(MANIFEST.read_text())["models"]}
    assert set(published) == set(hub.MODELS)
    for name, model in hub.MODELS.items():
        entry = published[name]
        assert (model.file, model.sha256, model.bytes, model.spec) == (entry["file"], entry["sha256"],
                                                                       entry["bytes"], entry["spec"])
        assert model.metrics() == entry["validation"]["metrics"]
    manifest = json.loads(MANIFEST.read_text())
    assert hub.DEFAULT == manifest["default"]


# --- colorlab.book: a chapter shows the published model of its stage, or its own short run ----------


def test_a_chapter_shows_the_published_model_of_its_stage_when_its_file_can_be_had(register_published, tiny_checkpoint,
                                                                                  tmp_path, monkeypatch, capsys):
    from colorlab import book

    monkeypatch.setattr(book, "eval_photos_dir", lambda download=True: None)  # no held-out photos: the chapter's `val`
    showcase = book.showcase
    trained, val = torch.nn.Identity(), [(torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 32, 32))]
    register_published("http://127.0.0.1:9/never-used.pt", name="baseline-32")
    monkeypatch.setattr(hub, "SHARED_MODELS", tmp_path / "shared-models")  # files "beside the repository"
    (tmp_path / "shared-models").mkdir()

    shown = showcase("baseline", "auto", trained, val, size=32)
    assert shown.model is trained and not shown.published and shown.batches is val
    assert capsys.readouterr().out.startswith("baseline: this chapter's own run, since the published model could "
                                              "not be had (published model 'baseline-32': cannot reach")

    (tmp_path / "shared-models" / "baseline-32.pt").write_bytes(tiny_checkpoint.read_bytes())
    for published in ("auto", "baseline-32"):
        shown = showcase("baseline", published, trained, val, size=32)
        assert shown.published and shown.model.published.name == "baseline-32" and shown.batches is val
        assert shown.label == "published model baseline-32"
        assert capsys.readouterr().out.startswith("baseline: the published model baseline-32: a 32 px test model")
    assert showcase("baseline", "none", trained, val, size=32).model is trained
    assert showcase("pretrain", "auto", trained, val, size=32).model is trained  # no resnet18-l1-32 published


def test_a_chapter_refuses_a_published_model_of_another_size(register_published):
    from colorlab.book import showcase

    register_published("http://127.0.0.1:9/never-used.pt", name="baseline-32")
    with pytest.raises(ValueError, match="published='baseline-32' is a 32 px model; run the chapter with size=32"):
        showcase("baseline", "baseline-32", torch.nn.Identity(), [], size=64)
    with pytest.raises(hub.PublishedModelError, match="no published model named 'gan-9000'"):
        showcase("gan", "gan-9000", torch.nn.Identity(), [], size=64)
