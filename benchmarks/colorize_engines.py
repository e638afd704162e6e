"""`colorlab colorize` on the CPU: PyTorch against ONNX Runtime (`--engine onnx`), on the same photos and model.

Two workloads, generated here (so the benchmark needs no data): one 12 MP photo (4000x3000) and a
folder of 100 photos of 1 MP (1152x864; `--folder-photos N` for fewer), JPEGs made from scikit-image's colour photos. Each engine
colorizes each workload in a fresh process (`colorlab.colorize.colorize_files`, as the command
does); reported: images/s (model loading excluded, every photo's decode, colorization and PNG write
included), the process's peak resident memory (ru_maxrss, loading included), and how far the two
engines' outputs are apart (PSNR and the largest difference in levels of 255). The ONNX file is
exported (and parity-checked) before timing; its one-off cost is reported apart.

    python benchmarks/colorize_engines.py                        # the published default model, else a random one
    python benchmarks/colorize_engines.py --model resnet18-gan-64-v2 --json engines.json
    python benchmarks/colorize_engines.py --only folder --folder-photos 20   # a shorter run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ENGINES = ("torch", "onnx")
BIG, FOLDER = "one 12 MP photo", "a folder of 1 MP photos"
WORKLOADS = {BIG: (1, (4000, 3000)), FOLDER: (100, (1152, 864))}


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """`count` JPEG photos of `size` made from scikit-image's colour photos (crops, resized)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    sources = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        crop_h, crop_w = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        top, left = rng.integers(0, h - crop_h + 1), rng.integers(0, w - crop_w + 1)
        Image.fromarray(photo[top:top + crop_h, left:left + crop_w]).resize(size, Image.BICUBIC).save(
            folder / f"photo_{i:03d}.jpg", quality=90)
    return folder


def child(engine: str, photos: Path, out: Path, checkpoint: str) -> None:
    """One measured run (in its own process): prints a JSON line."""
    import torch

    from colorlab import colorize

    from colorlab.checkpoint import load_generator

    def load_model() -> float:
        start = time.perf_counter()
        generator, spec = load_generator(checkpoint)
        if engine == "onnx":
            from colorlab.onnx_engine import onnx_generator

            onnx_generator(checkpoint, generator, spec, "cpu")
        return time.perf_counter() - start

    # Loading the model, timed apart: the first load imports what the architecture needs (fastai), a
    # second one is what colorize_files spends on it again, so that is what is subtracted from its time.
    load_model()
    load = load_model()
    start = time.perf_counter()
    written, failures = colorize.colorize_files([photos], out, checkpoint, device="cpu", engine=engine)
    seconds = time.perf_counter() - start - load
    assert not failures, failures
    print(json.dumps({"engine": engine, "images": len(written), "seconds": seconds, "load_seconds": load,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": torch.get_num_threads()}))


def difference(folder_a: Path, folder_b: Path) -> tuple[float, int]:
    """(PSNR in dB over all pixels, largest difference in levels of 255) between two folders of outputs."""
    squared, count, worst = 0.0, 0, 0
    for a in sorted(folder_a.glob("*.png")):
        x = np.asarray(Image.open(a), dtype=np.int16)
        y = np.asarray(Image.open(folder_b / a.name), dtype=np.int16)
        squared += float(((x - y).astype(np.float64) ** 2).sum())
        count += x.size
        worst = max(worst, int(np.abs(x - y).max()))
    mse = squared / count
    return (float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)), worst


def checkpoint_of(model: str | None) -> tuple[str, str]:
    """(file, description): the published model, else a randomly initialised resnet18 generator of 64 px."""
    from colorlab import hub

    name = model or hub.DEFAULT
    try:
        return str(hub.fetch_pretrained(name)), name
    except hub.PublishedModelError as err:
        if model:
            raise
        from colorlab.checkpoint import save_checkpoint
        from colorlab.models import build_generator

        print(f"no published model ({' '.join(str(err).split())[:100]}...): a random resnet18 at 64 px instead")
        generator = build_generator("resnet18", 64, weights=None)
        path = Path(tempfile.mkdtemp()) / "random-resnet18-64.pt"
        save_checkpoint(path, {"spec": generator.spec, "stage": "gan", "epoch": 0, "generator": generator.state_dict()})
        return str(path), "random resnet18, 64 px (no published model here)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a published model (default: colorlab.hub.DEFAULT)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the photos and outputs (default: temporary)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--only", choices=("12mp", "folder"), default=None, help="run one workload only")
    parser.add_argument("--folder-photos", type=int, default=WORKLOADS[FOLDER][0],
                        help="photos in the folder workload (default: %(default)s; images/s hardly depends on it)")
    parser.add_argument("--child", nargs=4, metavar=("ENGINE", "PHOTOS", "OUT", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.child[3])
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="colorize-engines-"))
    checkpoint, described = checkpoint_of(args.model)
    start = time.perf_counter()
    from colorlab.checkpoint import load_generator
    from colorlab.onnx_engine import cache_dir, onnx_generator

    cached = any(cache_dir().glob("*.fp32.onnx")) if cache_dir().is_dir() else False
    onnx_generator(checkpoint, *load_generator(checkpoint), "cpu")
    export_seconds = time.perf_counter() - start
    results = []
    workloads = {BIG: WORKLOADS[BIG], FOLDER: (args.folder_photos, WORKLOADS[FOLDER][1])}
    if args.only:
        workloads = {name: spec for name, spec in workloads.items() if (name == BIG) == (args.only == "12mp")}
    for workload, (count, size) in workloads.items():
        if workload == FOLDER:
            workload = f"{count} photos of 1 MP"
        photos = make_photos(work / f"photos-{count}", count, size)
        outs = {}
        for engine in ENGINES:
            outs[engine] = work / f"out-{count}-{engine}"
            run = subprocess.run([sys.executable, __file__, "--child", engine, str(photos), str(outs[engine]), checkpoint],
                                 capture_output=True, text=True, check=True)
            row = json.loads(run.stdout.strip().splitlines()[-1])
            row.update(workload=workload, images_per_s=row["images"] / row["seconds"])
            results.append(row)
            print(f"{workload}, {engine}: {row['images_per_s']:.3f} images/s, peak RSS {row['peak_rss_mb']:.0f} MB",
                  flush=True)
        psnr, worst = difference(outs["torch"], outs["onnx"])
        for row in results[-2:]:
            row.update(psnr_torch_vs_onnx=psnr, max_levels=worst)
    machine = f"{os.cpu_count()}-core {platform.processor() or platform.machine()} CPU"
    print(f"\nModel: {described}; {machine}; {datetime.now(timezone.utc):%Y-%m-%d}; ONNX export and parity check "
          f"{export_seconds:.1f} s ({'already cached' if cached else 'once, then cached'})\n")
    print("| workload | engine | images/s | peak memory (MB) | outputs, ONNX vs PyTorch |")
    print("|---|---|---|---|---|")
    for row in results:
        print(f"| {row['workload']} | {row['engine']} | {row['images_per_s']:.3f} | {row['peak_rss_mb']:.0f} | "
              f"PSNR {row['psnr_torch_vs_onnx']:.1f} dB, max {row['max_levels']} levels |")
    if args.json:
        args.json.write_text(json.dumps({"model": described, "machine": machine, "results": results,
                                         "export_seconds": export_seconds}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
