"""ONNX export: the graph ONNX Runtime runs must compute what the PyTorch generator computes.

The generators here are randomly initialised networks of the published architectures (the
ResNet18 DynamicUnet and the pix2pix U-Net), so the tests need neither ../shared nor a download.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'colorlab-book[onnx]') is not installed")

from colorlab import export  # noqa: E402
from colorlab.cli import main  # noqa: E402
from colorlab.models import build_generator  # noqa: E402


@pytest.fixture(scope="module")
def resnet_generator():
    torch.manual_seed(0)
    generator = build_generator("resnet18", 32, weights=None).eval()
    with torch.no_grad():  # BatchNorm statistics of a trained network, not the identity of a fresh one
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return generator


def _inputs(n: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    """Smooth L images in [-1, 1] (photos are smooth; white noise would be an odd test of the network)."""
    coarse = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_fp32_onnx_computes_what_pytorch_computes(resnet_generator, tmp_path):
    facts = export.export_onnx(resnet_generator, resnet_generator.spec, tmp_path / "g.onnx", "fp32",
                               L=_inputs(seed=1))
    assert (tmp_path / "g.onnx").stat().st_size == facts["bytes"]
    assert json.loads(export.sidecar(tmp_path / "g.onnx").read_text())["size"] == 32
    # An independent check on inputs the export never saw, a batch of 3 (the batch axis is dynamic).
    L = _inputs(n=3, seed=7)
    found = export.session(tmp_path / "g.onnx").run(["ab"], {"L": L.numpy()})[0]
    with torch.no_grad():
        expected = resnet_generator(L).numpy()
    # fp32 along two kernels (oneDNN vs MLAS) differs in the last bits: 1e-4 of the [-1, 1] range = 0.011 ab units.
    np.testing.assert_allclose(found, expected, atol=1e-4, rtol=0)


def test_int8_is_a_quarter_of_the_size_within_its_tolerance(resnet_generator, tmp_path):
    L = _inputs(seed=2)
    fp32 = export.export_onnx(resnet_generator, resnet_generator.spec, tmp_path / "a.onnx", "fp32", L=L)
    int8 = export.export_onnx(resnet_generator, resnet_generator.spec, tmp_path / "b.onnx", "int8", L=L)
    assert int8["bytes"] < fp32["bytes"] / 3.5
    assert int8["parity_ab_units"]["mean"] <= export.TOLERANCES["int8"]["mean"]
    assert int8["parity_ab_units"]["mean"] > fp32["parity_ab_units"]["mean"]  # it really is quantized


def test_a_model_that_computes_something_else_is_not_written(resnet_generator, tmp_path, monkeypatch):
    """The parity check must catch a wrong graph: here the export of another network's weights."""
    torch.manual_seed(123)
    other = build_generator("resnet18", 32, weights=None).eval()
    wrong = export.onnx_bytes(other, 32)
    monkeypatch.setattr(export, "onnx_bytes", lambda generator, size: wrong)
    with pytest.raises(export.ParityError, match="nothing written"):
        export.export_onnx(resnet_generator, resnet_generator.spec, tmp_path / "g.onnx", "fp32", L=_inputs())
    assert not (tmp_path / "g.onnx").exists() and not export.sidecar(tmp_path / "g.onnx").exists()


def test_cli_exports_a_checkpoint(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(tiny_checkpoint), "--onnx", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    facts = json.loads(export.sidecar(out).read_text())
    assert facts["variant"] == "fp32" and facts["spec"]["arch"] == "baseline"
    assert facts["parity_ab_units"]["photos"] == export.N_PARITY_PHOTOS


def test_cli_unknown_model_is_one_line(tmp_path, capsys):
    assert main(["export", "no-such-model", "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
