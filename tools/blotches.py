"""The controlled comparison of chapter 7, section 7: does a bounded output stop GAN fine-tuning's red blotches?

Every run starts from the same published L1-pretrained generator (resnet18-l1-64), with the
same seed, data (the shared photos at 64 px, batch 16) and discriminator init, and is fine-tuned
with cGAN + 100 * L1 for the same number of epochs; only the generator's output layer (and, for
the third candidate, the adversarial loss) differs. The start itself and the published 10-epoch
GAN model are evaluated alongside, on the same validation photos:

    PYTHONPATH=$PWD nohup nice -n 5 python tools/blotches.py > runs/blotches.log 2>&1 &

`--config configs/X.yaml` reads the same settings from a file (the command line overrides it):
configs/blotches/resnet18-gan-64-tanh.yaml retrains the published GAN model with the fix.

Writes results/blotches/metrics.json (metrics, per-epoch losses, chroma histograms, seconds,
the command) and grid.png; checkpoints go to runs/blotches/ (git-ignored), so running the same
command again resumes an interrupted run and only re-evaluates finished ones. metrics.json is
rewritten after every run, so a partial comparison is readable while the next one trains.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from colorlab import hub
from colorlab.color import L_ab_to_rgb
from colorlab.data import LOAD_SIDE_FACTOR, load_split, val_batches
from colorlab.evaluate import ab_histogram, comparison_grid, evaluate, grayscale_rgb, high_chroma, predict_ab
from colorlab.models import LINEAR, TANH, build_generator
from colorlab.recipes import train_recipe
from colorlab.record import command_line, now, provenance, training_seconds, write_record

SIZE, BATCH, SEED = 64, 16, 0
START, PUBLISHED_GAN = "resnet18-l1-64", "resnet18-gan-64"  # published models (colorlab.hub)
# name -> (output layer, overrides of the reference tutorial's GAN stage settings)
CANDIDATES = {
    "GAN, linear": (LINEAR, {}),
    "GAN, tanh": (TANH, {}),
    "GAN, tanh + LSGAN": (TANH, {"gan_mode": "lsgan"}),
}


def finetune(name: str, start: torch.nn.Module, train_files: list[Path], epochs: int, runs: Path):
    """Fine-tune a copy of `start` as candidate `name`; resumes from runs/<name>/gan.pt. (model, history)"""
    output, overrides = CANDIDATES[name]
    generator = build_generator("resnet18", SIZE, weights=None, output=output)
    generator.load_state_dict(start.state_dict())  # tanh has no parameters: the same weights fit both
    folder = runs / name.replace("GAN, ", "").replace(" + ", "-").replace(" ", "-")
    # train_recipe seeds torch with SEED before building the discriminator: the same init for every candidate
    trained = train_recipe("resnet18", train_files, folder, stages=("gan",), generator=generator, size=SIZE,
                           batch_size=BATCH, seed=SEED, epochs={"gan": epochs}, overrides={"gan": overrides},
                           device="cpu")
    return trained.generator, trained.histories["gan"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="a YAML file of the settings below (epochs, candidates, ...)")
    parser.add_argument("--epochs", type=int, default=3, help="GAN epochs of every candidate (default: %(default)s)")
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES),
                        help="which output layers to fine-tune (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/blotches"),
                        help="metrics.json and grid.png (default: %(default)s)")
    parser.add_argument("--runs", type=Path, default=Path("runs/blotches"),
                        help="the candidates' checkpoints, resumed when run again (default: %(default)s)")
    parser.add_argument("--grid-rows", type=int, default=6, help="photos in grid.png (default: %(default)s)")
    parser.add_argument("--note", default="", help="recorded in metrics.json: how the runs were made, if otherwise")
    args = parser.parse_args(argv)
    if args.config:
        settings = yaml.safe_load(args.config.read_text()) or {}
        unknown = set(settings) - set(vars(args))
        if unknown:
            parser.error(f"{args.config}: unknown settings {', '.join(sorted(unknown))}")
        parser.set_defaults(**{key: Path(v) if key in ("out", "runs") else v for key, v in settings.items()})
        args = parser.parse_args(argv)
    unknown = set(args.candidates) - set(CANDIDATES)
    if unknown:  # argparse checks `choices` on the command line only, not in a config file
        parser.error(f"unknown candidates {', '.join(sorted(unknown))}; choose from {', '.join(CANDIDATES)}")

    started = now()
    train_files, val_files = load_split("shared", None, seed=SEED, max_side=LOAD_SIDE_FACTOR * SIZE)
    batches = val_batches(val_files, SIZE, "cpu")
    # the published files through colorlab.hub: sha256-checked, the local copy else a download
    models = {f"L1 start ({START})": hub.load_pretrained(START),
              "published GAN (10 epochs)": hub.load_pretrained(PUBLISHED_GAN)}
    summary = {
        **provenance(command_line("PYTHONPATH=$PWD python tools/blotches.py", argv), "cpu", started),
        "note": args.note,
        "setup": {"start": START, "size": SIZE, "batch_size": BATCH, "seed": SEED, "epochs": args.epochs,
                  "n_train": len(train_files), "n_val": len(val_files),
                  "candidates": {name: {"output": CANDIDATES[name][0], **CANDIDATES[name][1]}
                                 for name in args.candidates}},
        "metrics": {}, "history": {}, "seconds": {}, "ab_histogram": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def record(name: str, model) -> None:
        summary["metrics"][name] = evaluate(model, batches)
        summary["ab_histogram"][name] = ab_histogram(torch.cat([predict_ab(model, L) for L, _ in batches]))
        summary["finished"] = now()
        write_record(args.out, summary)

    summary["ab_histogram"]["truth"] = ab_histogram(torch.cat([ab for _, ab in batches]))
    for name, model in models.items():
        record(name, model)
    for name in args.candidates:
        model, history = finetune(name, models[f"L1 start ({START})"], train_files, args.epochs, args.runs)
        summary["history"][name] = history.epochs
        summary["seconds"] |= training_seconds({name: history})
        models[name] = model
        record(name, model)
        print(f"{name}: {summary['metrics'][name]}", flush=True)

    # the rows: the validation photos where the published GAN model paints the most high-chroma pixels
    L = torch.cat([L for L, _ in batches])
    ab = torch.cat([ab for _, ab in batches])
    rows = high_chroma(predict_ab(models["published GAN (10 epochs)"], L)).argsort(descending=True)[:args.grid_rows]
    summary["grid_rows"] = [val_files[i].name for i in rows.tolist()]
    columns = {"gray": grayscale_rgb(L[rows])} | {name: L_ab_to_rgb(L[rows], predict_ab(m, L[rows]))
                                                    for name, m in models.items()}
    fig = comparison_grid(columns | {"truth": L_ab_to_rgb(L[rows], ab[rows])}, max_rows=len(rows), cell_inches=1.3)
    for ax in fig.axes:
        ax.title.set_fontsize(6)
    fig.savefig(args.out / "grid.png", dpi=60)
    write_record(args.out, summary | {"finished": now()})


if __name__ == "__main__":
    main()
