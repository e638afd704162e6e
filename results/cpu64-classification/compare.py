"""The recorded comparison of results/cpu64-classification: the classifier against the published regression models.

Run from the repository root after the training command of README.md, with ../shared present:
    python results/cpu64-classification/compare.py runs/cpu64-classification/classify.pt
Writes comparison.json (metrics per model on the same validation photos, with the command, machine and
date) and grid.png (grayscale | the regression models | the classifier's three decodings | truth).
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path

import torch

from colorlab import hub
from colorlab.checkpoint import load_generator
from colorlab.classify import PUBLISHED, ClassColorizer, load_classifier, scores
from colorlab.color import L_ab_to_rgb
from colorlab.data import load_split
from colorlab.evaluate import comparison_grid, grayscale_rgb, predict_rgb
from colorlab.recipes import val_batches

HERE = Path(__file__).resolve().parent
SIZE = 64

if __name__ == "__main__":
    torch.manual_seed(0)
    classifier = load_classifier(sys.argv[1])
    models = {name: load_generator(hub.fetch_pretrained(name))[0] for name in PUBLISHED}
    for label, temperature in (("class. mode", 0.0), ("class. T=0.38", 0.38), ("class. mean", 1.0)):
        models[label] = ClassColorizer(classifier.net, temperature).eval()
    _, val_files = load_split("shared")
    batches = val_batches(val_files, SIZE, "cpu")
    results = {name: scores(model, batches) for name, model in models.items()}
    summary = {
        "command": "python results/cpu64-classification/compare.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(), "size": SIZE, "n_val": len(val_files),
        "classifier_spec": classifier.spec, "metrics": results,
    }
    (HERE / "comparison.json").write_text(json.dumps(summary, indent=1))
    L, ab = batches[0]
    columns = {"grayscale": grayscale_rgb(L)} | {name: predict_rgb(m, L) for name, m in models.items()}
    comparison_grid(columns | {"truth": L_ab_to_rgb(L, ab)}, max_rows=6, cell_inches=1.3).savefig(HERE / "grid.png", dpi=72)
    for name, metrics in results.items():
        print(f"{name:>40}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
