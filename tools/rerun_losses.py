"""results/cpu64/losses.png: the loss curves of a re-run of configs/cpu64.yaml, next to the published models.

The published generator files hold weights only, so the published models' own loss curves
cannot be drawn. A re-run of the same configuration records every stage's per-epoch losses:

    colorlab experiment --config configs/cpu64.yaml --out RUN --device cpu --export-models RUN-models
    python tools/rerun_losses.py RUN/metrics.json --results results/cpu64

This tool draws those curves into `results/cpu64/losses.png`, titled as a re-run, and records in
`results/cpu64/metrics.json` (under "losses.png") where they come from: the re-run's command,
commit, date and seconds per stage, and its validation metrics beside the published models' own,
so that a reader can see how closely the re-run reproduces them (same data, config and seed; the
published run was interrupted and resumed once with the code of an older commit, whose resume did
not yet restore the random state exactly, so the two are not bit-identical).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from colorlab.recipes import loss_figure
from colorlab.train import History


def describe_rerun(rerun: dict, published_metrics: dict, note: str | None = None) -> dict:
    """What results/cpu64/metrics.json says about losses.png: its source run, and re-run vs published metrics."""
    shared_keys = ("psnr", "ssim", "colourfulness", "dCF")
    return {
        "source": "a re-run of the same configuration; the published files carry no training history",
        "rerun": {key: rerun[key] for key in ("command", "commit", "date", "device", "seconds")},
        "rerun_vs_published": {model: {key: {"rerun": round(rerun["metrics"][model][key], 3),
                                             "published": round(published_metrics[model][key], 3)}
                                       for key in shared_keys}
                               for model in published_metrics},
        "command": "python tools/rerun_losses.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
    } | ({"note": note} if note else {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rerun", type=Path, help="the re-run's metrics.json (written by colorlab experiment)")
    parser.add_argument("--results", type=Path, default=Path("results/cpu64"))
    parser.add_argument("--note", help="how the re-run went (interruptions, machine load), kept in the record")
    args = parser.parse_args(argv)
    rerun = json.loads(args.rerun.read_text())
    summary_path = args.results / "metrics.json"
    summary = json.loads(summary_path.read_text())
    if rerun["config"] != summary["config"]:
        parser.error(f"{args.rerun} was trained with another config than {summary_path} describes")
    histories = {stage: History(epochs) for stage, epochs in rerun["history"].items()}
    fig = loss_figure(histories, panel_size=(4.5, 3.2))
    fig.suptitle(f"re-run of the published models' config (commit {rerun['commit']}, {rerun['date']})", y=1.02)
    fig.savefig(args.results / "losses.png", dpi=60, bbox_inches="tight")
    missing = summary.pop("missing", {})
    missing.pop("losses.png", None)
    if missing:
        summary["missing"] = missing
    summary["losses.png"] = describe_rerun(rerun, summary["metrics"], args.note)
    summary_path.write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.results / 'losses.png'} and its record in {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
