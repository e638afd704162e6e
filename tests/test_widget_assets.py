"""What `make book` puts beside the widget (tools/widget_assets.py): the model, onnxruntime-web, or one line why not."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'colorlab-book[onnx]') is not installed")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("widget_assets", ROOT / "tools" / "widget_assets.py")
widget_assets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(widget_assets)


def test_the_published_default_is_exported_for_the_page_and_reused(register_published, tiny_checkpoint, tmp_path,
                                                                    monkeypatch):
    register_published("http://127.0.0.1:9/tiny-32.pt")  # never reached: the file is in $COLORLAB_MODELS
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_checkpoint, models / "tiny-32.pt")
    monkeypatch.setenv("COLORLAB_MODELS", str(models))
    line = widget_assets.export_model(tmp_path / "site", tmp_path / "cache", variant="fp32")
    facts = json.loads((tmp_path / "site" / "model" / "model.json").read_text())
    assert facts["name"] == "tiny-32" and facts["size"] == 32 and "tiny-32.fp32.onnx" in line
    assert (tmp_path / "site" / "model" / facts["file"]).stat().st_size == facts["bytes"]

    from colorlab import export

    def no_second_export(*args, **kwargs):
        raise AssertionError("exported again although the published file did not change")

    monkeypatch.setattr(export, "export_onnx", no_second_export)
    widget_assets.export_model(tmp_path / "site2", tmp_path / "cache", variant="fp32")
    assert (tmp_path / "site2" / "model" / "model.json").is_file()


def test_without_a_published_model_the_build_says_so_and_writes_no_model(register_published, tmp_path):
    register_published("http://127.0.0.1:9/tiny-32.pt")  # nothing listens on port 9: the download fails at once
    line = widget_assets.export_model(tmp_path / "site", tmp_path / "cache")
    assert line.startswith("widget: no model (") and "\n" not in line
    assert not (tmp_path / "site" / "model").exists()


def test_without_node_modules_the_build_says_to_run_npm_ci(tmp_path):
    line = widget_assets.copy_onnxruntime(tmp_path / "site", root=tmp_path)
    assert "npm ci" in line and not (tmp_path / "site" / "ort").exists()
