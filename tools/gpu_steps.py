"""The Python steps of tools/gpu_run.sh: the photos, the epoch plan, the chapters, the evaluation, summary.md.

tools/gpu_run.sh runs each subcommand as one step under its own time limit; each reads what the
steps before it wrote into OUT, and copes when a step before it failed (the summary says which):

    photos ROOT [--make-tiny]       ROOT/photos/{train,val} checked (or made from the offline photos: dry run)
    plan OUT --photos ROOT ...      epochs per stage from the measured throughput and the time left
    runs OUT                        the experiment's checkpoints moved into the chapters' run folders
    chapter OUT NAME                one chapter executed with papermill on the plan's parameters
    evaluate OUT                    grey yardstick + the exported generators on the validation photos
    summary OUT                     summary.md: every step, the throughput table, chapter 8's table
    wheels --have FILE              the distributions the run imports that FILE (names, one a line) lacks

Nothing here trains or measures on its own: the numbers come from `benchmarks/throughput.py`
and `colorlab experiment`, run by the script.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's colorlab, also when another one is installed

PLAN, EXPERIMENT, MODELS, EVALUATION = "plan.json", "experiment", "models", "evaluation.json"
BENCH, BENCH_COMPILED, BENCH_PROFILE = "throughput.json", "throughput-compiled.json", "throughput-profile.json"
CHAPTERS = ("05_baseline", "06_resnet_pretraining", "07_gan_finetuning", "08_evaluation", "09_classification")
GREY = "grey (ab = 0)"
# decimals of chapter 8's columns: PSNR, SSIM, colourfulness, dCF, saturation, ab outside [-1, 1] (%), high chroma (%)
TABLE_DIGITS = (2, 3, 1, 1, 3, 2, 2)
MAX_RESULT_BYTES = 16 * 2**20  # what the device tool brings back per file; weights (models/) are exempt
# What one experiment spends besides its training epochs (image scan and cache, building the models,
# evaluating three models, the figures, the export): an allowance, not a measurement, printed in the plan.
EXPERIMENT_FIXED_S = {"cuda": 45.0, "cpu": 30.0}
THROUGHPUT_SHARE = 0.7  # the experiment's epochs get 70 % of the benchmark's images/s (checkpoints, logging, eval)


# --- photos ---------------------------------------------------------------------------------------------------


def count_photos(root: Path) -> dict[str, int]:
    from colorlab.io import list_images

    return {split: len(list_images(root / "photos" / split)) if (root / "photos" / split).is_dir() else 0
            for split in ("train", "val")}


def make_tiny_photos(root: Path, n_train: int = 12, n_val: int = 4) -> None:
    """A photo set of the shared layout from scikit-image's offline photos, for the dry run."""
    from colorlab.data import offline_images

    files = offline_images(n_train + n_val)
    for split, chunk in (("train", files[:n_train]), ("val", files[n_train:])):
        (root / "photos" / split).mkdir(parents=True, exist_ok=True)
        for file in chunk:
            shutil.copy(file, root / "photos" / split / file.name)


def cmd_photos(args) -> int:
    root = Path(args.root)
    if args.make_tiny:
        make_tiny_photos(root)
    counts = count_photos(root)
    if min(counts.values()) < 1:
        print(f"no photos: {root}/photos/train and {root}/photos/val must hold images; copy them first: "
              f"mkdir -p data && cp -r ../shared/data/photos data/ (data/ is git-ignored)", file=sys.stderr)
        return 1
    print(f"photos: {counts['train']} train, {counts['val']} val in {root}/photos")
    return 0


# --- plan -----------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def epochs_for(seconds: float, n_train: int, rates: dict[str, float], max_epochs: int | None) -> int:
    """The most epochs E, the same for every stage, such that `n_train` photos x E epochs at `rates` (images/s
    of each stage) fit into `seconds`; at least 1, at most `max_epochs`."""
    per_epoch = sum(n_train / rate for rate in rates.values())
    epochs = max(1, math.floor(seconds / per_epoch)) if per_epoch > 0 else 1
    return epochs if max_epochs is None else min(epochs, max_epochs)


def stage_rates(bench: dict | None) -> tuple[dict[str, float] | None, str]:
    """Images/s of the experiment's three stages from the benchmark's fast path, and how they were found.

    The benchmark times the GAN step of both generators. L1 pretraining, the ResNet18-UNet without the
    PatchGAN, is given the ResNet18 GAN step's rate: it costs fewer FLOPs (`colorlab.scaling.step_flops`),
    so the plan errs on the safe side.
    """
    try:
        fast = {arch: bench["results"][arch]["fast"]["images_per_s"] for arch in ("baseline", "resnet18")}
    except (TypeError, KeyError):
        return None, "no throughput measured (the benchmark step failed)"
    rates = {"baseline": fast["baseline"], "pretrain": fast["resnet18"], "gan": fast["resnet18"]}
    return ({stage: THROUGHPUT_SHARE * rate for stage, rate in rates.items()},
            f"benchmark fast path x {THROUGHPUT_SHARE}: baseline {fast['baseline']:.1f} img/s, resnet18 GAN "
            f"{fast['resnet18']:.1f} img/s, L1 pretraining counted at the resnet18 GAN rate")


def cmd_plan(args) -> int:
    out, root = Path(args.out), Path(args.photos).resolve()
    counts = count_photos(root)
    # n_images large enough that load_split("shared") takes every usable photo of both folders
    n_images = 5 * (counts["train"] + counts["val"])
    rates, source = stage_rates(read_json(out / BENCH))
    fixed = EXPERIMENT_FIXED_S[args.device if args.device in EXPERIMENT_FIXED_S else "cuda"]
    training_s = args.seconds - fixed
    epochs = 1 if rates is None else epochs_for(training_s, counts["train"], rates, args.max_epochs)
    chapter9 = 1 if rates is None else epochs_for(args.chapter9_s, counts["train"], {"classify": rates["pretrain"]},
                                                  args.max_epochs)
    config = {"data": "shared", "n_images": n_images, "size": args.size, "batch_size": args.batch_size, "seed": 0,
              "weights": None, "baseline_epochs": epochs, "pretrain_epochs": epochs, "gan_epochs": epochs,
              "grid_rows": 8, "cache": True,
              "notes": {"made_by": "tools/gpu_steps.py plan", "throughput": source}}
    (out / "experiment.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    chapter = {"size": args.size, "epochs": epochs, "pretrain_epochs": epochs, "n_images": n_images,
               "batch_size": args.batch_size, "device": args.device, "data": "shared", "seed": 0,
               "smoke": args.smoke, "pretrained": "none", "run_root": str((out / MODELS / "runs").resolve()),
               "published": "none"}
    plan = {"seconds_for_experiment": args.seconds, "fixed_allowance_s": fixed, "training_seconds": training_s,
            "n_train_files": counts["train"], "n_val_files": counts["val"], "stage_images_per_s": rates,
            "throughput_source": source, "max_epochs": args.max_epochs, "epochs_per_stage": epochs,
            "experiment_config": config, "chapter_parameters": chapter,
            "chapter_overrides": {"09_classification": {"epochs": chapter9}}, "chapter9_seconds": args.chapter9_s}
    (out / PLAN).write_text(json.dumps(plan, indent=1))
    print(f"plan: {epochs} epoch(s) per stage for {counts['train']} training photos in {training_s:.0f} s of "
          f"training ({source}); chapter 9: {chapter9} epoch(s)")
    return 0


# --- the chapters' run folders --------------------------------------------------------------------------------


def cmd_runs(args) -> int:
    """Move the experiment's checkpoints to where the chapters look for a finished run with these parameters."""
    from colorlab.runs import chapter_run_dir

    out = Path(args.out)
    p = json.loads((out / PLAN).read_text())["chapter_parameters"]
    common = dict(root=p["run_root"], data=p["data"], n_images=p["n_images"], seed=p["seed"], size=p["size"])
    moves = {"baseline_gan.pt": chapter_run_dir("baseline", weights=None, **common) / "gan.pt",
             "resnet18_pretrain.pt": chapter_run_dir("resnet18", weights=None, **common) / "pretrain.pt",
             "resnet18_gan.pt": chapter_run_dir("resnet18", weights=None, **common) / "gan.pt"}
    missing = [name for name in moves if not (out / EXPERIMENT / "checkpoints" / name).is_file()]
    for name, target in moves.items():
        if name not in missing:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(out / EXPERIMENT / "checkpoints" / name, target)
            print(f"{name} -> {target}")
    if missing:
        print(f"the experiment left no {', '.join(missing)}: the chapters will train those stages themselves",
              file=sys.stderr)
    return 1 if missing else 0


# --- one chapter ----------------------------------------------------------------------------------------------


def cmd_chapter(args) -> int:
    sys.path.insert(0, str(REPO / "tools"))
    from build_book import error_outputs, execute_chapter
    from papermill.exceptions import PapermillExecutionError

    out = Path(args.out)
    plan = json.loads((out / PLAN).read_text())
    parameters = plan["chapter_parameters"] | plan["chapter_overrides"].get(args.name, {})
    (out / "chapters").mkdir(exist_ok=True)
    executed = out / "chapters" / f"{args.name}.ipynb"
    try:
        execute_chapter(REPO / "book" / f"{args.name}.ipynb", executed, parameters)
    except PapermillExecutionError as err:
        print(f"{args.name}: {err.ename}: {err.evalue}", file=sys.stderr)
        return 1
    errors = error_outputs(executed)
    print(f"{args.name}: executed with {parameters}" + (f"; error outputs: {errors}" if errors else ""))
    return 1 if errors else 0


# --- evaluation -----------------------------------------------------------------------------------------------


def grey_yardstick():
    """The 'predict no colour' model (ab = 0 everywhere): the row every results table is read against."""
    import torch

    class Grey(torch.nn.Module):
        def forward(self, L: torch.Tensor) -> torch.Tensor:
            return torch.zeros(L.shape[0], 2, *L.shape[2:], dtype=L.dtype, device=L.device)

    return Grey()


def cmd_evaluate(args) -> int:
    """The exported generators, loaded from their files as a reader would, and the grey yardstick, on the
    experiment's validation photos (all of photos/val)."""
    from colorlab.checkpoint import load_generator
    from colorlab.data import load_split, val_batches
    from colorlab.evaluate import evaluate
    from colorlab.catalogue import MODELS as CATALOGUE
    from colorlab.io import SkippedImageWarning
    from colorlab.runtime import pick_device

    out = Path(args.out)
    config = json.loads((out / PLAN).read_text())["experiment_config"]
    device = pick_device(args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        _, val_files = load_split(config["data"], config["n_images"], seed=config["seed"])
    batches = val_batches(val_files, config["size"], device)
    models = {GREY: grey_yardstick().to(device)}
    missing = []
    for model, entry in CATALOGUE.items():
        path = out / MODELS / f"{entry.published_name(config['size'])}.pt"
        if path.is_file():
            models[model] = load_generator(path, map_location=device)[0].to(device)
        else:
            missing.append(str(path.relative_to(out)))
    metrics = {name: evaluate(model, batches) for name, model in models.items()}
    result = {"photos": f"{len(val_files)} validation photos of photos/val", "device": str(device),
              "metrics": metrics, "missing": missing}
    (out / EVALUATION).write_text(json.dumps(result, indent=1))
    print(f"evaluated {', '.join(models)} on {len(val_files)} photos" + (f"; missing {missing}" if missing else ""))
    return 1 if missing else 0


# --- summary.md -----------------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def number(value, digits: int = 1, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def read_steps(out: Path) -> list[dict]:
    path = out / "steps.tsv"
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def throughput_section(out: Path) -> list[str]:
    lines = ["## Throughput: the reference tutorial's pipeline against colorlab's fast path", ""]
    runs = [(name, read_json(out / name)) for name in (BENCH, BENCH_COMPILED)]
    if not any(report for _, report in runs):
        return lines + ["No benchmark result: see the throughput steps above and their logs.", ""]
    for name, report in runs:
        if report is None:
            lines += [f"`{name}`: missing (its step failed).", ""]
            continue
        s = report["settings"]
        lines += [f"`{name}`: {report['machine']}; {s['size']} px, batch {s['batch_size']}, {s['warmup']} warm-up + "
                  f"{s['steps']} timed steps, {s['precision_fast']}{', compiled' if s['compile'] else ''}; "
                  f"{report['date']}.", ""]
        rows = []
        for arch in ("baseline", "resnet18"):
            if arch not in report["results"]:
                continue
            r = report["results"][arch]
            rows.append([f"GAN step, {arch}", number(r["reference"]["images_per_s"]), number(r["fast"]["images_per_s"]),
                         f"{r['speedup']:.2f}x", number(r["fast"]["peak_gpu_mib"], 0),
                         number(r["reference"].get("mfu"), 1, 100), number(r["fast"].get("mfu"), 1, 100)])
        d = report["results"]["data_only"]
        rows.append(["data loading only", number(d["reference"]["images_per_s"]), number(d["fast"]["images_per_s"]),
                     f"{d['speedup']:.2f}x", "", "", ""])
        lines += [markdown_table(["images/s", "reference", "fast", "fast/ref", "peak GPU MiB (fast)",
                                  "MFU ref (%)", "MFU fast (%)"], rows), ""]
        peak = report.get("bf16_peak_flops")
        lines += [f"MFU = images/s x GAN-step FLOPs per image / bf16 peak "
                  f"({'%.0f TFLOP/s' % (peak / 1e12) if peak else 'no bf16 peak known for ' + report['device_name']}).",
                  ""]
    profile = (read_json(out / BENCH_PROFILE) or {}).get("profiles", {}).get("resnet18")
    lines += ["The ResNet18-UNet GAN step's top operators (fast path, 3 profiled steps; all of them in "
              f"`{BENCH_PROFILE}`):", "", "```text", *profile.splitlines()[:13], "```", ""] if profile else \
             [f"No profile: `{BENCH_PROFILE}` is missing (its step failed).", ""]
    return lines


def results_section(out: Path) -> list[str]:
    """Chapter 8's table (`colorlab.comparison.metrics_table`), the grey yardstick first, the ground truth last."""
    from colorlab.comparison import metrics_table

    evaluation = read_json(out / EVALUATION)
    experiment = read_json(out / EXPERIMENT / "metrics.json")
    lines = ["## Results on the validation photos (chapter 8's table)", ""]
    if evaluation and len(evaluation["metrics"]) > 1:
        metrics, where = evaluation["metrics"], f"the exported generators, loaded from models/, on {evaluation['photos']}"
    elif experiment:
        metrics, where = experiment["metrics"], f"the experiment's own evaluation on {experiment['n_val']} photos " \
                                                "(no grey yardstick: the evaluation step failed)"
    else:
        return lines + ["No results: the experiment and the evaluation failed; see their logs.", ""]
    table = metrics_table(metrics)
    rows = [[name] + ["inf" if math.isinf(v) else f"{v:.{digits}f}" for v, digits in zip(table.loc[name], TABLE_DIGITS)]
            for name in table.index]
    lines += [f"Rows: {where}.", "", markdown_table(["model", *table.columns], rows), ""]
    if experiment:
        lines += [f"Training: {experiment['n_train']} photos; seconds per stage {experiment['seconds']}; "
                  f"device {experiment['device']}; command `{experiment['command']}`.", ""]
    return lines


def cmd_summary(args) -> int:
    out = Path(args.out)
    steps, plan = read_steps(out), read_json(out / PLAN)
    env = (out / "environment.txt").read_text().strip() if (out / "environment.txt").is_file() else "not recorded"
    lines = [f"# GPU measurements{' (dry run on the CPU: tiny sizes, the numbers mean nothing)' if args.dry_run else ''}",
             "", f"Made by `{args.command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "```text", env, "```", "", "## Steps", ""]
    lines += [markdown_table(["step", "status", "seconds", "limit (s)", "log"],
                             [[s["step"], s["status"], s["seconds"], s["limit"], f"logs/{s['step']}.log"]
                              for s in steps]), ""]
    lines += throughput_section(out)
    lines += ["## The experiment's epochs", ""]
    if plan:
        lines += [f"{plan['epochs_per_stage']} epoch(s) per stage (baseline, L1 pretraining, GAN fine-tuning) for "
                  f"{plan['n_train_files']} training photos: {plan['training_seconds']:.0f} s of training "
                  f"({plan['seconds_for_experiment']:.0f} s left for the experiment minus an allowance of "
                  f"{plan['fixed_allowance_s']:.0f} s for its set-up and evaluation), at the rates of "
                  f"{plan['throughput_source']}"
                  + (f", capped at {plan['max_epochs']}" if plan["max_epochs"] else "") + ". Chapter 9: "
                  f"{plan['chapter_overrides']['09_classification']['epochs']} epoch(s).", ""]
    else:
        lines += ["No plan: the plan step failed.", ""]
    lines += results_section(out)
    status = {s["step"]: s["status"] for s in steps}
    lines += ["## Chapters executed with papermill", ""]
    lines += [markdown_table(["chapter", "status", "notebook"],
                             [[name, status.get(f"chapter-{name}", "not run"),
                               f"chapters/{name}.ipynb" if (out / "chapters" / f"{name}.ipynb").is_file() else "none"]
                              for name in args.chapters]), ""] if args.chapters else ["No chapter was asked for.", ""]
    too_big = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.stat().st_size > MAX_RESULT_BYTES
               and MODELS not in p.relative_to(out).parts]
    lines += ["## Files", "", f"Everything is in this folder; weights only under `{MODELS}/`. "
              + (f"Over 16 MiB outside `{MODELS}/`: {', '.join(too_big)}." if too_big else
                 f"No file outside `{MODELS}/` is over 16 MiB."), ""]
    (out / "summary.md").write_text("\n".join(lines))
    print(f"wrote {out / 'summary.md'}")
    return 0


# --- the packages a GPU image may lack -------------------------------------------------------------------------


def imported_distributions() -> dict[str, str]:
    """name -> version of every installed distribution whose modules a GPU run imports: colorlab and its
    generators (fastai), the chapters' kernel (ipykernel) and papermill, the tests (pytest)."""
    import importlib
    import importlib.metadata as metadata
    import pkgutil

    import colorlab
    from colorlab.models import build_generator

    for module in pkgutil.walk_packages(colorlab.__path__, "colorlab."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    build_generator("resnet18", 32, weights=None), build_generator("baseline", 32)  # fastai is imported lazily
    for name in ("papermill", "ipykernel.ipkernel", "ipykernel.zmqshell", "matplotlib_inline.backend_inline",
                 "nbclient", "pytest", "build_book"):
        sys.path.insert(0, str(REPO / "tools"))
        importlib.import_module(name)
    owners = metadata.packages_distributions()
    names = {dist for module in list(sys.modules) for dist in owners.get(module.split(".")[0], [])}
    return {name: metadata.version(name) for name in sorted(names, key=str.lower) if name != "colorlab"}


def normalized(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


# imported when present, not needed: papermill's S3 support (boto3 and its own), jupyter_client's faster JSON,
# IPython's completion (jedi, parso: 5 MB of the 64 MiB the device tool carries)
OPTIONAL = {"boto3", "botocore", "s3transfer", "jmespath", "orjson", "jedi", "parso"}


def cmd_wheels(args) -> int:
    have = {normalized(line.strip()) for line in Path(args.have).read_text().splitlines() if line.strip()}
    for name, version in imported_distributions().items():
        if normalized(name) not in have | OPTIONAL:
            print(f"{name}=={version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("photos", help="check ROOT/photos/{train,val}")
    p.add_argument("root")
    p.add_argument("--make-tiny", action="store_true", help="first make a tiny set from the offline photos")
    p.set_defaults(run=cmd_photos)
    p = sub.add_parser("plan", help="epochs per stage from the benchmark and the seconds left")
    p.add_argument("out")
    p.add_argument("--photos", required=True, help="the folder holding photos/{train,val}")
    p.add_argument("--seconds", type=float, required=True, help="seconds the experiment step may take")
    p.add_argument("--chapter9-s", type=float, required=True, help="training seconds for chapter 9's classifier")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="run the chapters with smoke=True (the dry run)")
    p.set_defaults(run=cmd_plan)
    p = sub.add_parser("runs", help="move the experiment's checkpoints into the chapters' run folders")
    p.add_argument("out")
    p.set_defaults(run=cmd_runs)
    p = sub.add_parser("chapter", help="execute one chapter with the plan's parameters")
    p.add_argument("out")
    p.add_argument("name", choices=CHAPTERS)
    p.set_defaults(run=cmd_chapter)
    p = sub.add_parser("evaluate", help="grey yardstick + exported generators on the validation photos")
    p.add_argument("out")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_evaluate)
    p = sub.add_parser("summary", help="write OUT/summary.md")
    p.add_argument("out")
    p.add_argument("--command", default="tools/gpu_run.sh")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--chapters", nargs="*", default=list(CHAPTERS))
    p.set_defaults(run=cmd_summary)
    p = sub.add_parser("wheels", help="print name==version of what the run imports and FILE does not list")
    p.add_argument("--have", required=True, help="the names installed on the GPU machine, one a line")
    p.set_defaults(run=cmd_wheels)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
