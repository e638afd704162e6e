"""A generator as an ONNX file: for the book's in-browser widget and for `colorize --engine onnx`.

`export_onnx` writes any colorlab generator (published or trained) as ONNX and refuses to write
it unless ONNX Runtime's outputs match PyTorch's on the evaluation photos within the variant's
stated tolerance (`TOLERANCES`, in Lab ab units: the network's output times `AB_SCALE`).

Two variants:

- ``fp32``: the network as it is (about 124 MB for the ResNet18 U-Net); matches PyTorch to
  rounding (the tolerance is 0.05 ab units, where a just-noticeable colour difference is about 2).
- ``int8``: the convolution weights quantized to 8 bits (ONNX Runtime's dynamic quantization,
  activations quantized per call): a quarter of the size (about 30 MB), small enough for a web
  page. It is the smaller variant because it beat fp16 (half precision weights, about 62 MB) on
  size at an error a reader cannot see: `python -m colorlab.export --compare` measures both
  (numbers in docs/performance.md, section "ONNX: the published model in the browser ...").

The exporter is TorchScript's (`dynamo=False`, opset 17): the dynamo exporter fails on fastai's
`DynamicUnet` (its tensor subclass under FakeTensor). The graph takes L scaled to [-1, 1] at the
model's training size, `(batch, 1, size, size)`, and returns ab in [-1, 1], `(batch, 2, size, size)`:
the same tensors as the PyTorch generator. A JSON sidecar (`OUT.json`) records the model's name,
size, variant, bytes and measured parity for the widget and the Python engine.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write
from .color import AB_SCALE, L_SCALE, rgb_to_lab

VARIANTS = ("fp32", "int8", "fp16")
SMALL_VARIANT = "int8"  # what the web page loads (see the module docstring for why not fp16)
OPSET = 17
# Largest |ab difference| allowed between ONNX Runtime and PyTorch, in Lab units, per variant: the
# mean over all pixels and the 99th percentile. fp32 must agree to rounding; the 8-bit and 16-bit weights
# may move a colour by less than a just-noticeable difference (about 2 ab units) on most pixels.
TOLERANCES = {"fp32": {"mean": 0.01, "p99": 0.05},
              "int8": {"mean": 1.0, "p99": 4.0},
              "fp16": {"mean": 0.05, "p99": 0.5}}
N_PARITY_PHOTOS = 16  # evaluation photos the parity check runs on


class ParityError(ValueError):
    """The exported model's outputs differ from PyTorch's beyond the variant's tolerance: nothing was written."""


@dataclass(frozen=True)
class Parity:
    """|ab difference| in Lab units between ONNX Runtime and PyTorch on `photos` photos."""

    mean: float
    p99: float
    max: float
    photos: int

    def within(self, tolerance: dict[str, float]) -> bool:
        return self.mean <= tolerance["mean"] and self.p99 <= tolerance["p99"]


def require_onnx() -> None:
    """Fail in one line, naming the extra, when onnx or onnxruntime is not installed."""
    import importlib.util

    from .assignments_cli import MissingExtraError

    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError(f"{package} is not installed; `pip install \"colorlab-book[onnx]\"` adds what ONNX "
                                    "export and `colorize --engine onnx` need")


def onnx_bytes(generator: nn.Module, size: int) -> bytes:
    """The fp32 ONNX graph of `generator` (eval mode) for (batch, 1, size, size) inputs."""
    require_onnx()
    generator = generator.eval().float().cpu()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # fastai's shape checks: constant at a fixed size
            torch.onnx.export(generator, torch.zeros(1, 1, size, size), str(path), dynamo=False,
                              opset_version=OPSET, input_names=["L"], output_names=["ab"],
                              dynamic_axes={"L": {0: "batch"}, "ab": {0: "batch"}})
        return path.read_bytes()


def make_variant(fp32: bytes, variant: str) -> bytes:
    """The fp32 graph as `variant`: unchanged, int8 dynamic quantization, or fp16 weights."""
    if variant == "fp32":
        return fp32
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / f"{variant}.onnx"
        source.write_bytes(fp32)
        if variant == "int8":
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" hint is about static quantization
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8)
            return target.read_bytes()
        if variant == "fp16":
            return _fp16_weights(fp32)
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def _fp16_weights(fp32: bytes) -> bytes:
    """Convolution weights stored as float16 and cast back to float32 in the graph (computation stays fp32)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(fp32)
    conv_weights = {node.input[1] for node in model.graph.node if node.op_type == "Conv"}
    casts = []
    for initializer in model.graph.initializer:
        if initializer.name in conv_weights:
            half = numpy_helper.from_array(numpy_helper.to_array(initializer).astype(np.float16),
                                           initializer.name + "_fp16")
            initializer.CopyFrom(half)
            casts.append(helper.make_node("Cast", [half.name], [half.name[: -len("_fp16")]], to=onnx.TensorProto.FLOAT))
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString()


def session(model: bytes | str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session of `model` (bytes or a file); `threads` None = ONNX Runtime's choice."""
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings about unused initializers
    if threads is not None:
        options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, (str, Path)) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def parity_inputs(size: int, n: int = N_PARITY_PHOTOS) -> torch.Tensor:
    """L in [-1, 1], (n, 1, size, size), of the evaluation photos: ../shared/data/photos/val when here, else
    the crops of scikit-image's photos that the offline data source uses (`data.offline_images`)."""
    from .data import load_resized, offline_images, shared_data_dir

    root = shared_data_dir()
    files = sorted((root / "photos" / "val").glob("*.jpg"))[:n] if root is not None else []
    if len(files) < n:
        files = offline_images(n_images=n, seed=0, side=max(size, 64))
    rgb = torch.from_numpy(np.stack([load_resized(f, size) for f in files])).float() / 255
    return rgb_to_lab(rgb)[:, :1] / L_SCALE - 1.0


def measure_parity(generator: nn.Module, model: bytes | str | Path, L: torch.Tensor) -> Parity:
    """How far ONNX Runtime's ab is from the PyTorch generator's on the inputs `L`, in Lab units."""
    with torch.no_grad():
        expected = generator.eval().float().cpu()(L).float().clamp(-1, 1).numpy()
    run = session(model)
    found = np.concatenate([run.run(["ab"], {"L": L[i : i + 1].numpy()})[0] for i in range(len(L))])
    error = np.abs(np.clip(found, -1, 1) - expected) * AB_SCALE
    return Parity(mean=float(error.mean()), p99=float(np.percentile(error, 99)), max=float(error.max()),
                  photos=len(L))


def export_onnx(generator: nn.Module, spec: dict, out: str | Path, variant: str = "fp32",
                name: str | None = None, L: torch.Tensor | None = None) -> dict:
    """Write `generator` as ONNX `variant` to `out` (+ `out`.json), after checking it against PyTorch.

    `L` are the parity inputs (default: `parity_inputs` of the evaluation photos). Raises
    `ParityError` without writing anything when the outputs differ beyond `TOLERANCES[variant]`.
    Returns the sidecar's facts.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    size = int(spec["size"])
    model = make_variant(onnx_bytes(generator, size), variant)
    L = parity_inputs(size) if L is None else L
    parity = measure_parity(generator, model, L)
    tolerance = TOLERANCES[variant]
    if not parity.within(tolerance):
        raise ParityError(f"the {variant} ONNX model differs from PyTorch by mean {parity.mean:.3g} / 99th percentile "
                          f"{parity.p99:.3g} ab units on {parity.photos} photos (tolerance {tolerance['mean']} / "
                          f"{tolerance['p99']}); nothing written")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "ONNX model") as tmp:
        Path(tmp).write_bytes(model)
    facts = {"format": "colorlab-onnx-v1", "name": name or out.stem, "file": out.name, "bytes": len(model),
             "variant": variant, "size": size, "spec": spec, "input": "L", "output": "ab",
             "L_scale": L_SCALE, "ab_scale": AB_SCALE, "opset": OPSET,
             "parity_ab_units": asdict(parity), "tolerance_ab_units": tolerance}
    with atomic_write(sidecar(out), "ONNX model facts") as tmp:
        Path(tmp).write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    return facts


def sidecar(model: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.json`: the facts `export_onnx` wrote beside it."""
    return Path(f"{model}.json")


def export_published_or_checkpoint(source: str, out: str | Path, variant: str) -> dict:
    """`colorlab export`: `source` is a published model's name or a checkpoint file."""
    from . import hub
    from .checkpoint import load_generator

    path = Path(source)
    if path.is_file():
        generator, spec = load_generator(path)
        name = path.stem
    else:
        file = hub.fetch_pretrained(hub.get(source).name)
        generator, spec = load_generator(file)
        name = source
    return export_onnx(generator, spec, out, variant, name=name)


def add_cli(subparsers) -> None:
    """Register `colorlab export NAME_OR_CHECKPOINT --onnx OUT [--variant int8]`."""
    parser = subparsers.add_parser(
        "export", help="write a published model or a checkpoint as ONNX (checked against PyTorch)",
        description="Export a generator to ONNX (fp32, or the smaller int8) after a parity check against PyTorch "
                    "on the evaluation photos; refuses to write a model outside the stated tolerance.")
    parser.add_argument("source", help="a published model's name (colorlab models) or a checkpoint file")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write (OUT.json beside it)")
    parser.add_argument("--variant", choices=VARIANTS, default="fp32",
                        help="fp32 (exact), int8 (a quarter of the size: the web page's) or fp16")
    parser.set_defaults(func=_export_command)


def _export_command(args) -> int:
    facts = export_published_or_checkpoint(args.source, args.onnx, args.variant)
    parity = facts["parity_ab_units"]
    print(f"wrote {args.onnx} ({facts['variant']}, {facts['bytes'] / 1e6:.1f} MB): |ab - PyTorch| mean "
          f"{parity['mean']:.4f}, 99th percentile {parity['p99']:.4f}, max {parity['max']:.4f} Lab units "
          f"on {parity['photos']} evaluation photos")
    return 0


def compare_variants(source: str) -> list[str]:
    """Size and parity of every variant of `source` (a published name or checkpoint): the choice of SMALL_VARIANT."""
    from . import hub
    from .checkpoint import load_generator

    file = Path(source) if Path(source).is_file() else hub.fetch_pretrained(source)
    generator, spec = load_generator(file)
    fp32 = onnx_bytes(generator, spec["size"])
    L = parity_inputs(spec["size"])
    rows = ["| variant | MB | mean abs(d ab) | 99th pct. | max |", "|---|---|---|---|---|"]
    for variant in VARIANTS:
        model = make_variant(fp32, variant)
        p = measure_parity(generator, model, L)
        rows.append(f"| {variant} | {len(model) / 1e6:.1f} | {p.mean:.4f} | {p.p99:.4f} | {p.max:.3f} |")
    return rows


if __name__ == "__main__":
    import argparse

    cli = argparse.ArgumentParser(description="Compare the ONNX variants of a model (size, parity).")
    cli.add_argument("--compare", nargs="?", const=None, default=None, metavar="MODEL", help="a published name or checkpoint (default: hub.DEFAULT)")
    arguments = cli.parse_args()
    from . import hub

    print("\n".join(compare_variants(arguments.compare or hub.DEFAULT)))
