"""Throughput, in one run on one machine: the reference tutorial's data pipeline against colorlab's fast path.

(a) reference, as the reference tutorial does it (the code students copy): a DataLoader whose workers open each
    file with PIL, resize it, flip it and convert it to Lab with scikit-image, per image, every
    epoch; the model trains in fp32 and every loss is read back (`.item()`) after every step.
(b) fast, colorlab's default: images decoded and resized once into a uint8 memory-mapped cache
    (`colorlab.cache.CachedImages`), a batch fetched by one read, no worker processes; flips and
    Lab conversion batched on the training device (`colorlab.data.to_model_batch`); training by
    `colorlab.train.fit` itself (mixed precision by GPU, channels_last and fused Adam on CUDA, losses read
    back every `log_every` steps), optionally with `--compile`.

Both train the same networks (`colorlab.models`) with the same step (`colorlab.stages.pix2pix_step`),
so the difference is the pipeline around them. Reported: images/s of the GAN training step
including data, for each generator; images/s of data loading alone (up to an (L, ab) batch on the
device); peak GPU memory; the ratios; and on a GPU whose bf16 peak is known (`BF16_PEAK_TFLOPS`), the
model FLOP utilisation of each GAN step: images/s times the step's FLOPs per image
(`colorlab.scaling.step_flops`) over that peak. Warm-up steps are not timed; they also let the reference
loader's prefetch queue settle, so the timed steps see its steady state.

    python benchmarks/throughput.py                        # CPU-sized defaults (64 px): ~30 s on 2 idle cores
    python benchmarks/throughput.py --size 256 --batch-size 32 --steps 50 --json bench.json   # GPU, full size
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2lab
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from colorlab.cache import CachedImages
from colorlab.data import EpochSampler, flip_mask, load_split, make_loader, shared_data_dir, to_model_batch
from colorlab.io import SkippedImageWarning
from colorlab.losses import LAMBDA_L1, GANLoss
from colorlab.models import build_discriminator, build_generator
from colorlab.runtime import pick_device, precision_policy
from colorlab.scaling import step_flops
from colorlab.stages import GANStage, TrainConfig, pix2pix_step
from colorlab.train import fit

ARCHS = ("baseline", "resnet18")
# Dense bf16 tensor-core peaks in TFLOP/s (no sparsity; NVIDIA's data sheets), by a fragment of the name
# torch gives the device, most specific first: the denominator of the model FLOP utilisation (MFU).
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))


def bf16_peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak in FLOP/s of the GPU called `device_name`, or None when it is not in the table."""
    return next((tflops * 1e12 for fragment, tflops in BF16_PEAK_TFLOPS if fragment.lower() in device_name.lower()),
                None)


class ReferenceDataset(Dataset):
    """The tutorial's dataset, kept only to be measured against: everything per image, in the workers, every epoch."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files = files
        self.transforms = transforms.Compose([transforms.Resize((size, size), Image.BICUBIC),
                                              transforms.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = self.transforms(Image.open(self.files[index]).convert("RGB"))
        lab = transforms.ToTensor()(rgb2lab(np.array(image)).astype("float32"))
        return {"L": lab[[0]] / 50.0 - 1.0, "ab": lab[[1, 2]] / 110.0}


def image_order(n_files: int, n_images: int) -> list[int]:
    """The file indices both pipelines read, in the same order: `make_loader`'s shuffle of the files, cycled."""
    return [i % n_files for i in EpochSampler(n_images, seed=0)]


def reference_loader(files: list[Path], args, n_batches: int, device: torch.device) -> DataLoader:
    return DataLoader(ReferenceDataset(files, args.size), batch_size=args.batch_size,
                      sampler=image_order(len(files), n_batches * args.batch_size),
                      num_workers=args.workers, pin_memory=device.type == "cuda", drop_last=True)


def fast_loader(cached: CachedImages, batch_size: int, n_batches: int) -> DataLoader:
    """colorlab's own loader (pinned memory on CUDA) over `n_batches` full batches, cycling through the cache."""
    indices = [i % len(cached) for i in range(n_batches * batch_size)]
    return make_loader(Subset(cached, indices), batch_size=batch_size, train=True, num_workers=0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """A loader that starts a clock (device synced) when it hands out batch `warmup`: times the rest of a run.

    It passes for the loader it wraps (length, sampler, batch size), so `fit` itself can be timed.
    """

    def __init__(self, loader: DataLoader, warmup: int, device: torch.device) -> None:
        self.loader, self.warmup, self.device, self.began = loader, warmup, device, None

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if step == self.warmup:
                synchronize(self.device)
                self.began = time.perf_counter()
            yield batch

    def seconds(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self.began


def networks(arch: str, size: int, device: torch.device):
    torch.manual_seed(0)
    return build_generator(arch, size, weights=None).to(device), build_discriminator().to(device)


def time_reference_train(arch: str, files: list[Path], args, device: torch.device) -> float:
    """Seconds for `args.steps` reference-tutorial GAN steps (fp32, loss meters read every step), after warm-up."""
    G, D = networks(arch, args.size, device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gan_loss = GANLoss().to(device)
    meters: dict[str, float] = {}
    clock = Clock(reference_loader(files, args, args.warmup + args.steps, device), args.warmup, device)
    for batch in clock:
        losses = pix2pix_step(G, D, opt_g, opt_d, gan_loss, batch["L"].to(device), batch["ab"].to(device), LAMBDA_L1)
        for key, value in losses.items():  # the tutorial's loss meters: .item() syncs with the device every step
            meters[key] = meters.get(key, 0.0) + value.item()
    return clock.seconds()


def time_fast_train(arch: str, cached: CachedImages, args, device: torch.device) -> float:
    """Seconds for `args.steps` steps of `colorlab.train.fit` itself, after `args.warmup` steps of the same run."""
    G, D = networks(arch, args.size, device)
    clock = Clock(fast_loader(cached, args.batch_size, args.warmup + args.steps), args.warmup, device)
    fit(GANStage(G, TrainConfig(epochs=1, compile=args.compile), D), clock, device=device, progress=False)
    return clock.seconds()


def time_reference_data(files: list[Path], args, device: torch.device) -> float:
    clock = Clock(reference_loader(files, args, args.warmup + args.data_steps, device), args.warmup, device)
    for batch in clock:
        for tensor in batch.values():
            tensor.to(device, non_blocking=True)
    return clock.seconds()


def time_fast_data(cached: CachedImages, args, device: torch.device) -> float:
    clock = Clock(fast_loader(cached, args.batch_size, args.warmup + args.data_steps), args.warmup, device)
    for step, rgb in enumerate(clock):
        to_model_batch(rgb, device, flip=flip_mask(0, step, torch.arange(len(rgb))))
    return clock.seconds()


def measure(timer, device: torch.device, *args) -> dict:
    """Run `timer`, returning its seconds and the peak GPU memory it allocated (None on CPU)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timer(*args, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"seconds": seconds, "peak_gpu_mib": peak}


def profile_fast(arch: str, cached: CachedImages, args, device: torch.device) -> str:
    """The top operators of a few fast-path GAN steps (after the timed run warmed everything up)."""
    from torch.profiler import ProfilerActivity, profile

    G, D = networks(arch, args.size, device)
    stage = GANStage(G, TrainConfig(epochs=1, compile=args.compile), D)
    fit(stage, fast_loader(cached, args.batch_size, args.warmup), device=device, progress=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fit(stage, fast_loader(cached, args.batch_size, 3), device=device, progress=False)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=15)


def machine(device: torch.device) -> str:
    """The device, the CPU (which runs the reference pipeline's workers) and the software versions."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.is_file() else []
    cpu = f"{models[0] if models else platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    gpu = f"{torch.cuda.get_device_name(device)}; " if device.type == "cuda" else ""
    return f"{device.type}: {gpu}CPU {cpu}; torch {torch.__version__}, Python {platform.python_version()}"


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--size", type=int, default=None, help="image side in px (default: 256 on CUDA, 64 on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on CUDA, 8 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on CUDA, 6 on CPU)")
    parser.add_argument("--data-steps", type=int, default=50, help="timed batches of the data-only runs (default: 50)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default: 10 on CUDA, 3 on CPU; at least 2 x workers + 1)")
    parser.add_argument("--data", default=None,
                        help="offline | shared | a folder of photos (default: shared if present, else offline)")
    parser.add_argument("--arch", choices=("both",) + ARCHS, default="both")
    parser.add_argument("--workers", type=int, default=min(4, max(0, (os.cpu_count() or 1) - 1)),
                        help="DataLoader workers of the reference pipeline (default: min(4, cores - 1), as colorlab)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the main process (default: torch's, i.e. one per core)")
    parser.add_argument("--compile", action="store_true", help="fast path with torch.compile (TrainConfig.compile)")
    parser.add_argument("--profile", action="store_true", help="also print the top operators of the fast GAN step")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    args.device = pick_device(args.device)
    cuda = args.device.type == "cuda"
    defaults = dict(size=256 if cuda else 64, batch_size=32 if cuda else 8, steps=50 if cuda else 6,
                    warmup=10 if cuda else 3, data="shared" if shared_data_dir() else "offline")
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.steps, args.data_steps, args.batch_size, args.warmup) < 1:
        parser.error("--steps, --data-steps, --batch-size and --warmup must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, archs = args.device, ARCHS if args.arch == "both" else (args.arch,)
    load_before = load_average()
    needed = (args.warmup + args.steps) * args.batch_size
    with warnings.catch_warnings():  # grayscale photos left out of the shared set: not this report's business
        warnings.simplefilter("ignore", SkippedImageWarning)
        files, _ = load_split(args.data, n_images=max(3, math.ceil(needed * 1.25)))  # train files; cycled if fewer
    began = time.perf_counter()
    cached = CachedImages(files, args.size)
    cache_seconds = time.perf_counter() - began

    results = {"data_only": {"reference": measure(time_reference_data, device, files, args),
                             "fast": measure(time_fast_data, device, cached, args)}}
    profiles = {}
    for arch in archs:
        results[arch] = {"reference": measure(time_reference_train, device, arch, files, args),
                         "fast": measure(time_fast_train, device, arch, cached, args)}
        if args.profile:
            profiles[arch] = profile_fast(arch, cached, args, device)
    for key, runs in results.items():
        images = (args.data_steps if key == "data_only" else args.steps) * args.batch_size
        for run in runs.values():
            run["images_per_s"] = images / run["seconds"]
        runs["speedup"] = runs["fast"]["images_per_s"] / runs["reference"]["images_per_s"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = bf16_peak_flops(device_name)
    flops = {arch: step_flops(args.size, gan=True, arch=arch) for arch in archs}
    for arch in archs:
        for pipeline in ("reference", "fast"):
            run = results[arch][pipeline]
            run["mfu"] = None if peak is None else run["images_per_s"] * flops[arch] / peak
    data_over_train = {arch: results["data_only"]["fast"]["images_per_s"] / results[arch]["fast"]["images_per_s"]
                       for arch in archs}

    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else f"main({argv})",
        "machine": machine(device), "device_name": device_name, "bf16_peak_flops": peak,
        "gan_step_flops_per_image": flops, "load_average_before": load_before, "load_average_after": load_average(),
        "settings": {"data": str(args.data), "n_files": len(files), "size": args.size, "batch_size": args.batch_size,
                     "warmup": args.warmup, "steps": args.steps, "data_steps": args.data_steps,
                     "reference_workers": args.workers, "main_threads": torch.get_num_threads(),
                     "compile": args.compile, "precision_fast": precision_policy(device).describe()},
        "cache_seconds": cache_seconds, "results": results, "fast_data_over_fast_train": data_over_train,
        "profiles": profiles,
    }
    print(format_report(report, archs))
    for arch, table in profiles.items():
        print(f"\nfast path, {arch} GAN step: top operators (3 profiled steps)\n{table}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return report


def format_report(report: dict, archs: tuple[str, ...]) -> str:
    s, results = report["settings"], report["results"]

    def memory(run: dict) -> str:
        return "n/a" if run["peak_gpu_mib"] is None else f"{run['peak_gpu_mib']:.0f}"

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    lines = [
        f"colorlab throughput benchmark, {report['date']}",
        f"machine: {report['machine']}; load average (1/5/15 min) {report['load_average_before']} before, "
        f"{report['load_average_after']} after",
        f"data: {s['data']} ({s['n_files']} files), {s['size']} px, batch {s['batch_size']}, "
        f"{s['warmup']} warm-up + {s['steps']} timed steps ({s['data_steps']} for data only), "
        f"reference workers {s['reference_workers']}, main-process threads {s['main_threads']}, "
        f"fast path {s['precision_fast']}{', compiled' if s['compile'] else ''}; "
        f"image cache ready in {report['cache_seconds']:.1f} s",
        "",
        f"{'':34}{'reference':>12}{'fast':>12}{'fast/ref':>10}",
    ]
    rows = [(f"GAN train step, {arch} (img/s)", arch) for arch in archs] + [("data loading only (img/s)", "data_only")]
    for label, key in rows:
        ref, fast = results[key]["reference"], results[key]["fast"]
        speedup = results[key]["speedup"]
        lines.append(f"{label:34}{ref['images_per_s']:12.1f}{fast['images_per_s']:12.1f}{speedup:9.2f}x")
    for arch in archs:
        ref, fast = results[arch]["reference"], results[arch]["fast"]
        lines.append(f"{'peak GPU memory, ' + arch + ' (MiB)':34}{memory(ref):>12}{memory(fast):>12}")
    for arch in archs:
        ref, fast = results[arch]["reference"], results[arch]["fast"]
        lines.append(f"{'MFU, ' + arch + ' GAN step (%)':34}{percent(ref['mfu']):>12}{percent(fast['mfu']):>12}")
    peak = report["bf16_peak_flops"]
    flops = ", ".join(f"{arch} {value / 1e9:.0f} GFLOP" for arch, value in report["gan_step_flops_per_image"].items())
    peak_text = f"{peak / 1e12:.0f} TFLOP/s" if peak else "not known, so n/a"
    lines.append(f"(MFU: images/s x GAN-step FLOPs per image ({flops}) / the bf16 peak of {report['device_name']}: "
                 f"{peak_text})")
    lines.append("")
    for arch, ratio in report["fast_data_over_fast_train"].items():
        verdict = "holds" if ratio >= 3 else "does NOT hold"
        lines.append(f"fast data-only / fast {arch} train step: {ratio:.1f}x (target >= 3x: {verdict})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
