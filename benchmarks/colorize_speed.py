"""`colorize` speed, before and after, side by side in one invocation: many small photos, and one 12 MP photo.

    python benchmarks/colorize_speed.py                    # before = commit 388ca8b, after = this tree
    python benchmarks/colorize_speed.py --small 24 --before 388ca8b --checkpoint ../shared/models/resnet18-l1-64.pt

The photos are made here (smooth colours plus noise, JPEG quality 90): `--small` photos of 640x480
(0.3 MP) and one 4000x3000 (12 MP). "before" is the `colorlab` package of the `--before` commit,
extracted with `git archive`; "after" is this working tree's. Each measurement is a fresh Python
process running `colorlab.colorize.colorize_files`, as `colorlab colorize` does. Measured apart:
importing `colorlab.colorize` (torch), then a first model load (which imports what the architecture
needs: fastai for the resnet18 models, the largest fixed cost), then the run after those imports:
`colorize_files` (a second, warm model load, decode, prediction, Lab conversion, PNG encoding,
atomic writes). A warm load is also timed on its own just before, so that "images/s after the
model load" (photos / (run - warm load)) is the rate a folder of thousands of photos sees.
Before and after alternate,
so that both see the same load on a shared machine; the load average is printed with the table.
The model is `--checkpoint`, by default the published model that `colorlab colorize` would pick
here, or, without one, an untrained 64 px baseline U-Net (the published baseline's architecture).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DRIVER = """
import json, resource, sys, time
began = time.perf_counter()
from colorlab.colorize import colorize_files
from colorlab.checkpoint import load_generator
imported = time.perf_counter()
load_generator(sys.argv[1])  # the first model load imports what the architecture needs (fastai for resnet18)
first = time.perf_counter() - imported
loaded = time.perf_counter()
load_generator(sys.argv[1])  # a warm load: what colorize_files spends on the model before its first photo
warm = time.perf_counter() - loaded
loaded = time.perf_counter()
cpu = time.process_time()
written, failures = colorize_files([sys.argv[2]], sys.argv[3], sys.argv[1], device="cpu")
run = time.perf_counter() - loaded
import colorlab, os
print(json.dumps({"package": os.path.dirname(colorlab.__file__), "import_s": imported - began, "first_load_s": first, "model_s": warm, "run_s": run,
                  "photos_per_s": len(written) / max(run - warm, 1e-9),
                  "cpu_s": time.process_time() - cpu, "written": len(written), "failures": len(failures),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


PROFILE = """
import cProfile, pstats, sys, time
pr = cProfile.Profile(time.process_time)  # CPU time: less distorted by a shared machine than wall time
pr.enable()
from colorlab.checkpoint import load_generator
load_generator(sys.argv[1])
pr.disable()
first = pstats.Stats(pr).get_stats_profile().func_profiles
from colorlab.colorize import colorize_files
pr = cProfile.Profile(time.process_time)
pr.enable()
colorize_files([sys.argv[2]], sys.argv[3], sys.argv[1], device="cpu")
pr.disable()
stats = pstats.Stats(pr).get_stats_profile().func_profiles
parts = {"network (predict_ab)": "predict_ab", "full-resolution colour (apply_ab)": "apply_ab",
         "PNG encoding (Image.save)": "save", "decoding (load_for_colorize)": "load_for_colorize",
         "warm model load (load_generator)": "load_generator"}
for label, name in parts.items():
    print(f"{label}: {sum(p.cumtime for f, p in stats.items() if f == name):.3f} s CPU")
print(f"first model load, imports included: {sum(p.cumtime for f, p in first.items() if f == 'load_generator'):.3f} s CPU")
"""


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colours plus pixel noise: JPEG and PNG sizes like a real photo's, not like a flat test card's."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    noise = rng.integers(-20, 21, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def default_checkpoint(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from colorlab import hub

    name = hub.best_available()
    if name is not None:
        return hub.fetch_pretrained(name, download=False)
    import torch

    from colorlab.checkpoint import save_checkpoint
    from colorlab.models import build_generator

    torch.manual_seed(0)
    generator = build_generator("baseline", 64)
    return save_checkpoint(folder / "baseline-64-untrained.pt", {"spec": generator.spec,
                                                                  "generator": generator.state_dict()})


def measure(package_root: Path, checkpoint: Path, inputs: Path, out: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(package_root)}
    # cwd too: `python -c` puts the working directory first on sys.path, so run from the repository the
    # "before" package would silently be this tree's
    result = subprocess.run([sys.executable, "-c", DRIVER, str(checkpoint), str(inputs), str(out)], env=env,
                            cwd=package_root, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1])["package"] == str(package_root / "colorlab"), result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="388ca8b", help="the commit measured as 'before'")
    parser.add_argument("--small", type=int, default=24, help="number of 640x480 photos")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--profile", action="store_true",
                        help="instead: where the after code spends its CPU time (cProfile), per part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "colorlab"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        (tmp / "small").mkdir()
        for i in range(args.small):
            photo(640, 480, i).save(tmp / "small" / f"p{i:03d}.jpg", quality=90)
        photo(4000, 3000, 99).save(tmp / "big.jpg", quality=90)
        checkpoint = args.checkpoint or default_checkpoint(tmp)
        if args.profile:
            for label, inputs in [(f"{args.small} photos of 640x480", tmp / "small"), ("one 12 MP photo", tmp / "big.jpg")]:
                result = subprocess.run([sys.executable, "-c", PROFILE, str(checkpoint), str(inputs),
                                         str(tmp / f"out-profile-{inputs.name}")], capture_output=True, text=True,
                                        check=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
                print(f"{label}:\n{result.stdout}")
            print(f"`python benchmarks/colorize_speed.py --profile --small {args.small}` on {datetime.date.today()}, "
                  f"model {checkpoint.name}, 1-minute load average {os.getloadavg()[0]:.1f}")
            return 0
        load = [os.getloadavg()[0]]
        rows = []
        for label, inputs in [(f"{args.small} photos of 640x480 (0.3 MP)", tmp / "small"),
                              ("one 4000x3000 photo (12 MP)", tmp / "big.jpg")]:
            for version, root in [("before", before), ("after", ROOT)]:
                result = measure(root, checkpoint, inputs, tmp / f"out-{version}-{len(rows)}")
                load.append(os.getloadavg()[0])
                rows.append((label, version, result))
                print(label, version, json.dumps(result), file=sys.stderr, flush=True)
    print("| input | code | import s | first model load s | warm model load s | run s (after imports) | run CPU s | images/s "
          "(run) | images/s (after the model load) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, version, r in rows:
        print(f"| {label} | {version} | {r['import_s']:.1f} | {r['first_load_s']:.1f} | {r['model_s']:.2f} | {r['run_s']:.2f} | "
              f"{r['cpu_s']:.1f} | {r['written'] / r['run_s']:.2f} | {r['photos_per_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    print(f"\n`python benchmarks/colorize_speed.py --small {args.small} --before {args.before}` on "
          f"{datetime.date.today()}, {platform.machine()} {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), "
          f"model {checkpoint.name}; 1-minute load average during the runs: "
          f"{', '.join(f'{x:.1f}' for x in load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
