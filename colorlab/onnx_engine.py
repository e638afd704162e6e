"""`colorlab colorize --engine onnx`: the generator run by ONNX Runtime instead of PyTorch, on the CPU.

`OnnxGenerator` is an `nn.Module` whose forward hands the input to an ONNX Runtime session, so
`colorize.colorize_image` runs it unchanged: the small copy, the full-size L and the Lab
conversions stay the library's. The ONNX file is the checkpoint exported at fp32 by
`colorlab.export` (parity-checked against PyTorch: at most 0.05 ab units at the 99th percentile)
and kept in the user cache under the checkpoint's sha256, so only the first run pays the export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

ENGINES = ("torch", "onnx")


class OnnxGenerator(nn.Module):
    """A generator's forward pass through ONNX Runtime: (B, 1, S, S) L in [-1, 1] -> (B, 2, S, S) ab."""

    def __init__(self, model: str | Path, spec: dict, threads: int | None = None) -> None:
        super().__init__()
        from .export import session

        self.session = session(model, threads)
        self.spec = spec
        self.file = Path(model)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        (ab,) = self.session.run(["ab"], {"L": L.detach().cpu().float().numpy()})
        return torch.from_numpy(np.asarray(ab)).to(L.device)


def cache_dir() -> Path:
    from .data import CACHE_DIR

    return CACHE_DIR / "onnx"


def onnx_generator(checkpoint: str | Path, generator: nn.Module, spec: dict, device: torch.device | str) -> OnnxGenerator:
    """The checkpoint's generator as an `OnnxGenerator`, exported once into the cache (fp32, parity-checked)."""
    from .export import export_onnx
    from .hub import sha256_of

    if torch.device(device).type != "cpu":
        raise ValueError(f"--engine onnx runs on the CPU (ONNX Runtime's CPU build); got --device {device}")
    target = cache_dir() / f"{sha256_of(Path(checkpoint))}.fp32.onnx"
    if not target.is_file():
        export_onnx(generator, spec, target, "fp32", name=Path(checkpoint).stem)
    return OnnxGenerator(target, spec)
