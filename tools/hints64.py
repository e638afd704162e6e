"""results/hints64: train chapter 11's hint model from configs/hints64.yaml, then measure it.

    python tools/hints64.py train [--epochs N]   # colorlab.recipes.run on the config (resumes its run folder)
    python tools/hints64.py report               # metrics.json, curve.png and grid.png in results/hints64
    python tools/hints64.py export DIR           # DIR/resnet18-hints-64.pt + DIR/MANIFEST.json, for publication

`export` writes the generator as `colorlab experiment --export-models` writes its three
(`colorlab.hub.export_checkpoint`: generator only, float16) with a registry entry beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "results" / "hints64"  # where its outputs are committed
CONFIG = ROOT / "configs" / "hints64.yaml"


def settings(epochs: int | None = None) -> dict:
    values = yaml.safe_load(CONFIG.read_text())
    if epochs is not None:
        values["epochs"] = epochs
    return values


def train(epochs: int | None) -> None:
    from colorlab.recipes import RunConfig, run

    summary = run(RunConfig(**settings(epochs), resume=True))
    print(summary["metrics"])


def report(n_photos: int | None = None, out: Path = HERE) -> dict:
    """Measure the run's checkpoint and the model it started from on the held-out photos; write this folder's files."""
    import datetime
    import json
    import os
    import platform

    import matplotlib
    import torch
    from PIL import Image

    matplotlib.use("Agg")
    from colorlab import hub
    from colorlab.book import held_out_batches
    from colorlab.checkpoint import load_checkpoint, load_generator
    from colorlab.hints import (HINT_COUNTS, ZHANG_PSNR, curve_figure, evaluate_hints, hint_grid, hint_patch,
                                hints_only_psnr)

    config = settings()
    checkpoint = ROOT / config["out"] / "hints.pt"
    state = load_checkpoint(checkpoint)
    model, _ = load_generator(checkpoint)
    start = hub.load_pretrained(config["init"])
    found = held_out_batches(config["size"], "cpu", n_photos)
    if found is None:
        raise SystemExit("report: the held-out photos (../shared/data/photos/val) are not here")
    batches, photos = found
    seed = config["seed"]
    curves = {"hint model": evaluate_hints(model, batches, HINT_COUNTS, seed),
              "hints only (grey elsewhere)": hints_only_psnr(batches, HINT_COUNTS, seed)}
    start_psnr = evaluate_hints(start, batches, (0,), seed)[0]
    ours = curves["hint model"]
    summary = {
        "command": "python tools/hints64.py train && python tools/hints64.py report",
        "config": config,
        "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch "
                   f"{torch.__version__} on CPU".replace("  ", " "),
        "date": datetime.date.today().isoformat(),
        "photos": photos, "n_val": sum(len(L) for L, _ in batches), "size": config["size"],
        "patch": hint_patch(config["size"]), "counts": list(HINT_COUNTS),
        "trained": {"epoch": state["epoch"], "step": state["step"], "history": state["history"]},
        "psnr_vs_hints": curves,
        "start": {"model": config["init"], "psnr_no_hints": start_psnr},
        "checks": {"no_hint_psnr_minus_start_db": ours[0] - start_psnr,
                   "rises_with_hints": all(a < b for a, b in zip(list(ours.values()), list(ours.values())[1:]))},
        "zhang_psnr": ZHANG_PSNR,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    ax = curve_figure({f"ours: hint model ({config['size']} px, {summary['n_val']} COCO val photos)": ours,
                       "ours: hints only (grey elsewhere)": curves["hints only (grey elsewhere)"],
                       f"ours: {config['init']} (no hints)": {0: start_psnr}})
    ax.figure.savefig(out / "curve.png", dpi=80, bbox_inches="tight")
    L, ab = batches[0]
    hint_grid(model, L, ab, (0, 3, 10), seed=seed).savefig(out / "grid.png", dpi=80)
    Image.open(out / "grid.png").convert("RGB").quantize(256).save(out / "grid.png", optimize=True)
    for name in ("metrics.json", "curve.png", "grid.png"):
        assert (out / name).stat().st_size < 1 << 20, f"{name} is 1 MB or more"
    print(json.dumps({k: summary[k] for k in ("psnr_vs_hints", "start", "checks", "trained")}, indent=1)[:3000])
    return summary


def export(folder: Path) -> dict:
    """The trained generator as a publishable file and its MANIFEST.json entry (as `colorlab experiment --export-models`)."""
    import json

    from colorlab import hub

    config, recorded = settings(), json.loads((HERE / "metrics.json").read_text())
    entry = hub.export_checkpoint(ROOT / config["out"] / "hints.pt", folder / f"resnet18-hints-{config['size']}.pt")
    entry |= {
        "what": f"ResNet18 DynamicUnet with colour hints (L, hint ab, mask), widened from {config['init']}, L1 given "
                "simulated hints (Zhang et al. 2017)",
        "trained_on": f"the usable photos of data={config['data']}, {config['size']} px, batch {config['batch_size']}, "
                      f"seed {config['seed']}",
        "backbone_init": config["init"],
        **{key: recorded[key] for key in ("config", "command", "machine", "date")},
        "validation": {"photos": recorded["photos"], "psnr_vs_hints": recorded["psnr_vs_hints"]["hint model"],
                       "patch": recorded["patch"]},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MANIFEST.json").write_text(json.dumps({"format": "colorlab-published-models-v1", "models": [entry]},
                                                     indent=1))
    print(f"wrote {folder / entry['file']} ({entry['bytes']} bytes, sha256 {entry['sha256']}) and its MANIFEST.json")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("train", "report", "export"))
    parser.add_argument("folder", nargs="?", type=Path, help="export: where to write the model and MANIFEST.json")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs (train)")
    parser.add_argument("--photos", type=int, default=None, help="report: the first N held-out photos only (a trial)")
    parser.add_argument("--out", type=Path, default=HERE, help="report: the folder to write (default: results/hints64)")
    args = parser.parse_args(argv)
    if args.what == "train":
        try:
            train(args.epochs)
        except KeyboardInterrupt as err:  # colorlab.train saved a checkpoint first
            print(f"hints64.py train: {err}; run it again to resume", file=sys.stderr)
            return 130
    elif args.what == "report":
        report(args.photos, args.out)
    else:
        if args.folder is None:
            parser.error("export needs a folder: hints64.py export DIR")
        export(args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
