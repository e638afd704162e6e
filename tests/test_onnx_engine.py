"""`colorlab colorize --engine onnx`: the same pictures as the PyTorch engine, through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'colorlab-book[onnx]') is not installed")

from colorlab import onnx_engine  # noqa: E402
from colorlab.cli import main  # noqa: E402


def test_onnx_engine_paints_what_the_torch_engine_paints(tiny_checkpoint, photo_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_engine, "cache_dir", lambda: tmp_path / "onnx-cache")
    assert main(["colorize", str(photo_folder), "-o", str(tmp_path / "torch"), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert main(["colorize", str(photo_folder), "-o", str(tmp_path / "onnx"), "--checkpoint", str(tiny_checkpoint),
                 "--engine", "onnx"]) == 0
    assert len(list((tmp_path / "onnx-cache").glob("*.fp32.onnx"))) == 1  # exported once, kept by the sha256
    outputs = sorted((tmp_path / "torch").glob("*.png"))
    assert len(outputs) == 12
    for torch_png in outputs:
        a = np.asarray(Image.open(torch_png), dtype=int)
        b = np.asarray(Image.open(tmp_path / "onnx" / torch_png.name), dtype=int)
        # fp32 along two kernels: ab differs by ~1e-5 of its range, which can round a channel one level the other way.
        assert np.abs(a - b).max() <= 1, torch_png.name


def test_onnx_engine_is_the_onnx_graph(tiny_checkpoint, photo_folder, tmp_path, monkeypatch):
    """The engine really runs ONNX Runtime: a different graph in its cache changes the pictures."""
    from colorlab import export
    from colorlab.hub import sha256_of
    from colorlab.models import build_generator

    monkeypatch.setattr(onnx_engine, "cache_dir", lambda: tmp_path / "onnx-cache")
    other = build_generator("baseline", 32)
    planted = tmp_path / "onnx-cache" / f"{sha256_of(tiny_checkpoint)}.fp32.onnx"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(export.onnx_bytes(other, 32))
    main(["colorize", str(photo_folder), "-o", str(tmp_path / "torch"), "--checkpoint", str(tiny_checkpoint)])
    main(["colorize", str(photo_folder), "-o", str(tmp_path / "onnx"), "--checkpoint", str(tiny_checkpoint),
          "--engine", "onnx"])
    name = "img_00_color.png"
    a = np.asarray(Image.open(tmp_path / "torch" / name), dtype=int)
    b = np.asarray(Image.open(tmp_path / "onnx" / name), dtype=int)
    assert np.abs(a - b).max() > 1


def test_onnx_engine_refuses_a_gpu_device(tiny_checkpoint):
    from colorlab.checkpoint import load_generator

    generator, spec = load_generator(tiny_checkpoint)
    with pytest.raises(ValueError, match="runs on the CPU"):
        onnx_engine.onnx_generator(tiny_checkpoint, generator, spec, "cuda")
