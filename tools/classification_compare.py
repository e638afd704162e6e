"""results/cpu64-classification's comparison: the classifier against the published regression models.

Run from the repository root after the training command of results/cpu64-classification/README.md:
    PYTHONPATH=$PWD python tools/classification_compare.py runs/cpu64-classification/classify.pt
Writes comparison.json (every model's metrics on the same validation photos, in the record format of
`colorlab.record`: command, commit, device, versions, dates) and grid.png (grayscale | the regression
models | the classifier's three decodings | truth) into results/cpu64-classification (or --out).
The regression models are the catalogue's three (`colorlab.catalogue`), loaded through `colorlab.hub`
(sha256-checked; the local file, else downloaded).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from colorlab import hub
from colorlab.catalogue import MODELS
from colorlab.classify import ClassColorizer, load_classifier, scores
from colorlab.color import L_ab_to_rgb
from colorlab.data import LOAD_SIDE_FACTOR, load_split, val_batches
from colorlab.evaluate import comparison_grid, grayscale_rgb, predict_rgb
from colorlab.record import command_line, now, provenance, write_record

SIZE = 64
DECODINGS = (("class. mode", 0.0), ("class. T=0.38", 0.38), ("class. mean", 1.0))  # label, temperature


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the classification run's classify.pt")
    parser.add_argument("--out", type=Path, default=Path("results/cpu64-classification"),
                        help="where comparison.json and grid.png go (default: %(default)s)")
    args = parser.parse_args(argv)
    started = now()
    torch.manual_seed(0)
    classifier = load_classifier(args.checkpoint)
    models = {name: hub.load_pretrained(name) for name in (entry.published_name(SIZE) for entry in MODELS.values())}
    for label, temperature in DECODINGS:
        models[label] = ClassColorizer(classifier.net, temperature).eval()
    _, val_files = load_split("shared", max_side=LOAD_SIDE_FACTOR * SIZE)
    batches = val_batches(val_files, SIZE, "cpu")
    results = {name: scores(model, batches) for name, model in models.items()}
    summary = {**provenance(command_line("python tools/classification_compare.py", argv), "cpu", started),
               "size": SIZE, "n_val": len(val_files), "classifier_spec": classifier.spec, "metrics": results}
    write_record(args.out, summary, "comparison.json")
    L, ab = batches[0]
    columns = {"grayscale": grayscale_rgb(L)} | {name: predict_rgb(m, L) for name, m in models.items()}
    comparison_grid(columns | {"truth": L_ab_to_rgb(L, ab)}, max_rows=6, cell_inches=1.3).savefig(
        args.out / "grid.png", dpi=72)
    for name, metrics in results.items():
        print(f"{name:>40}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return summary


if __name__ == "__main__":
    main()
