"""How much data does it take? Colorization quality against the number of training photos.

The reference tutorial's claim is that a pretrained encoder and L1 pretraining make colorization
work with little data (8,000 photos instead of ImageNet's million). This module measures the curve
behind such a claim on the project's own photos: nested, seeded subsets of the training photos
(each subset contains the smaller ones), every model trained for the same number of optimizer
steps whatever the subset's size (so that the curve measures data, not training time), and all
of them measured on the same held-out photos beside the grey yardstick.

The runs are the book's own: `colorlab.recipes.train_recipe` (the loop of every chapter, resumable
stage checkpoints, the image cache) for the `baseline` recipe (the pix2pix U-Net, cGAN + L1) and
the L1 stage of the `resnet18` recipe (the ResNet18-DynamicUnet). `weights` "imagenet" starts the
ResNet18 encoder from ImageNet, as the reference does; where the weights cannot be had (offline),
the study says so in one line and runs random-init, and its record says which it was.

    colorlab study configs/study64.yaml          # resumable: run it again after an interruption
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import catalogue, record as records
from .data import SkippedImageWarning, list_images, shared_data_dir, val_batches
from .evaluate import Grey, evaluate
from .io import scan_images
from .models.resnet_unet import IMAGENET, WeightsUnavailableError, _resnet18
from .recipes import train_recipe
from .runtime import pick_device

# this study's label -> the model of the catalogue it trains: the book's two generators, each in its first stage
MODELS: dict[str, catalogue.ModelEntry] = {
    "baseline U-Net (cGAN + L1)": catalogue.MODELS["baseline"],
    "ResNet18-UNet (L1)": catalogue.MODELS["L1-pretrained"],
}
METRICS = ("psnr", "ssim", "colourfulness", "dCF", "high_chroma")


@dataclass(frozen=True)
class StudyConfig:
    """One data-efficiency study. Every size must give whole epochs of `steps` (sizes multiples of `batch_size`)."""

    sizes: tuple[int, ...] = (80, 160, 320, 640, 1280)
    steps: int = 80  # optimizer steps of every run, whatever its number of photos
    seeds: tuple[int, ...] = (0,)
    extra_seeds: tuple[int, ...] = (1,)  # more seeds at the smallest sizes, so that the noise shows
    extra_seed_sizes: tuple[int, ...] = (80, 160)
    size: int = 64
    batch_size: int = 16
    weights: str | None = None  # "imagenet": the ResNet18 encoder pretrained (online, or cached)
    models: tuple[str, ...] = tuple(MODELS)
    n_val: int | None = None  # held-out photos measured (None: all usable)
    device: str = "auto"
    out: str = "runs/study64"
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for n in self.sizes:
            per_epoch = n // self.batch_size
            if n % self.batch_size or self.steps % per_epoch:
                raise ValueError(f"study: {n} photos give {per_epoch} steps per epoch of {self.batch_size}; "
                                 f"{self.steps} steps must be whole epochs of every size (sizes multiples of "
                                 f"the batch size, steps a multiple of each size's steps per epoch)")
        if unknown := [m for m in self.models if m not in MODELS]:
            raise ValueError(f"study: unknown models {unknown}; choose from {list(MODELS)}")

    def epochs(self, n_photos: int) -> int:
        return self.steps // (n_photos // self.batch_size)

    def runs(self) -> list[tuple[str, int, int]]:
        """(model, photos, seed) of every run, in the order they are trained (small sizes first)."""
        extra = [(n, s) for n in self.extra_seed_sizes if n in self.sizes for s in self.extra_seeds]
        pairs = [(n, s) for n in self.sizes for s in self.seeds] + extra
        return [(model, n, s) for n, s in sorted(pairs) for model in self.models]


def small_study(n_train: int, batch_size: int, epochs: int, size: int, device: str, out: str | Path) -> StudyConfig:
    """A study small enough for a chapter: subsets of 1, 2 and 4 batches (those that `n_train` photos allow),
    `epochs` epochs of the largest, two seeds at the smallest."""
    sizes = tuple(k * batch_size for k in (1, 2, 4) if k * batch_size <= n_train)
    if not sizes:
        raise ValueError(f"study: {n_train} training photos are fewer than one batch of {batch_size}")
    return StudyConfig(sizes=sizes, steps=epochs * (sizes[-1] // batch_size), extra_seed_sizes=sizes[:1],
                       size=size, batch_size=batch_size, device=device, out=str(out))


def nested_subsets(files: list[Path], sizes: tuple[int, ...], seed: int) -> dict[int, list[Path]]:
    """size -> the first `size` files of one seeded permutation of the sorted files: each subset holds the smaller."""
    if max(sizes) > len(files):
        raise ValueError(f"study: {max(sizes)} photos asked for, {len(files)} usable ones found")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = [sorted(files)[i] for i in order]
    return {n: chosen[:n] for n in sizes}


def usable_photos(folder: Path) -> list[Path]:
    """The readable colour photos of `folder`, sorted (grayscale and broken ones left out, as in training)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        return sorted(scan_images(list_images(folder)).kept)


def encoder_weights(wanted: str | None) -> str | None:
    """`wanted` if the ResNet18 weights can be had here, else None after one line saying why (offline)."""
    if wanted != IMAGENET:
        return wanted
    try:
        _resnet18(IMAGENET)
    except WeightsUnavailableError:
        print("study: the ImageNet weights cannot be downloaded here (offline) and are not cached: "
              "the ResNet18 runs start from random init (weights: null in the record)", flush=True)
        return None
    return IMAGENET


def run_key(model: str, n_photos: int, seed: int) -> str:
    return f"{MODELS[model].recipe}-{n_photos}-seed{seed}"


def run_study(config: StudyConfig, train: Path | list[Path] | None = None, val: Path | list[Path] | None = None,
              command: str = "colorlab study", progress: bool = True) -> dict:
    """Train and measure every run of `config` not yet in `out/metrics.json`; returns the whole record.

    `train` and `val` are folders (their usable photos are taken) or lists of photo files; by
    default ../shared/data/photos/train and val. The record is rewritten after each run, so an
    interrupted study resumes where it stopped (a run interrupted mid-training resumes from its
    stage checkpoint). `progress`: progress bars and a line per epoch (a chapter turns both off and
    keeps the one line per run).
    """
    root = shared_data_dir()
    train = train or (root / "photos" / "train" if root else None)
    val = val or (root / "photos" / "val" if root else None)
    if train is None or val is None:
        raise FileNotFoundError("study: no photos: ../shared/data (or $COLORLAB_SHARED_DATA) is not here; "
                                "give the training and held-out photos (--train DIR --val DIR)")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "metrics.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record and record.get("config", {}).get("sizes") is not None and record["config"] != _jsonable(config):
        raise ValueError(f"study: {record_path} holds a study with other settings; use another `out`")
    device = pick_device(config.device)
    weights = encoder_weights(config.weights)
    photos = usable_photos(train) if isinstance(train, Path) else sorted(train)
    held_out = (usable_photos(val) if isinstance(val, Path) else sorted(val))[:config.n_val]
    batches = val_batches(held_out, config.size, device)
    record.update({"config": _jsonable(config), "weights_used": weights, "n_train_usable": len(photos),
                   "n_val": len(held_out), "val_photos": str(val) if isinstance(val, Path) else "a list of files"})
    record["provenance"] = records.provenance(command, device, started=record.get("provenance", {}).get("started"))
    grey = evaluate(Grey(), batches)
    record.setdefault("yardsticks", {"grey": _pick(grey), "truth": {"colourfulness": grey["colourfulness_true"],
                                                                    "high_chroma": grey["high_chroma_true"]}})
    runs = record.setdefault("runs", {})
    subsets = {seed: nested_subsets(photos, config.sizes, seed) for seed in {s for _, _, s in config.runs()}}
    todo = [r for r in config.runs() if run_key(*r) not in runs]
    for model, n, seed in todo:
        began = time.perf_counter()
        recipe, stages = MODELS[model].recipe, MODELS[model].stages
        print(f"study: run {len(runs) + 1} of {len(config.runs())}: {model}, {n} photos, seed {seed}, "
              f"{config.epochs(n)} epoch(s) = {config.steps} steps", flush=True)
        trained = train_recipe(recipe, subsets[seed][n], out / run_key(model, n, seed), size=config.size,
                               epochs={stage: config.epochs(n) for stage in stages}, batch_size=config.batch_size,
                               seed=seed, stages=stages, weights=weights if recipe == "resnet18" else None,
                               device=device, resume=True, progress=progress, epoch_lines=progress)
        seconds = sum(records.training_seconds(trained.histories).values())
        runs[run_key(model, n, seed)] = {"model": model, "photos": n, "seed": seed, "epochs": config.epochs(n),
                                         "steps": config.steps, "train_seconds": round(seconds, 1),
                                         "metrics": _pick(evaluate(trained.generator, batches)),
                                         "wall_seconds": round(time.perf_counter() - began, 1),
                                         "finished": records.now(), "commit": records.commit()}
        record["wall_seconds"] = round(sum(r["wall_seconds"] for r in runs.values()), 1)
        records.write_record(out, record)
    record["provenance"]["finished"] = records.now()
    records.write_record(out, record)
    return record


def recorded_study(folder: str | Path | None = None) -> dict | None:
    """The record of the study in `folder`, by default results/study64 beside the book
    (`book.recorded_results`); None where it is not at hand (a pip install)."""
    from .book import recorded_results

    folder = folder or recorded_results("study64")
    path = Path(folder or "") / "metrics.json"
    return json.loads(path.read_text()) if folder and path.is_file() else None


def curves(record: dict) -> dict[str, dict[int, list[float]]]:
    """model -> photos -> the PSNR of each seed's run."""
    table: dict[str, dict[int, list[float]]] = {}
    for run in record["runs"].values():
        table.setdefault(run["model"], {}).setdefault(run["photos"], []).append(run["metrics"]["psnr"])
    return {model: dict(sorted(by_n.items())) for model, by_n in table.items()}


def study_figure(record: dict, metrics: tuple[str, ...] = ("psnr", "colourfulness")):
    """One panel per metric: each model's value against the number of photos (log scale), every seed a dot,
    their mean a line; the grey yardstick (and the truth, for colourfulness) as horizontal lines."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for model in dict.fromkeys(r["model"] for r in record["runs"].values()):
            points = [(r["photos"], r["metrics"][metric]) for r in record["runs"].values() if r["model"] == model]
            sizes = sorted({n for n, _ in points})
            means = [sum(v for m, v in points if m == n) / sum(1 for m, _ in points if m == n) for n in sizes]
            line, = ax.plot(sizes, means, marker="o", label=model)
            ax.scatter(*zip(*points), color=line.get_color(), s=14, alpha=0.6)
        ax.axhline(record["yardsticks"]["grey"][metric], color="grey", linestyle="--", label="grey (ab = 0)")
        if metric in record["yardsticks"]["truth"]:
            ax.axhline(record["yardsticks"]["truth"][metric], color="black", linestyle=":", label="truth")
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["photos"] for r in record["runs"].values()}))
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.minorticks_off()
        ax.set_xlabel("training photos")
        ax.set_ylabel({"psnr": "PSNR (dB)", "colourfulness": "colourfulness"}.get(metric, metric))
        ax.set_title(f"{metric} on {record['n_val']} held-out photos, {record['config']['steps']} steps each")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def rows(record: dict) -> list[dict[str, object]]:
    """The record as table rows: the yardsticks (grey, truth) first, then one row per model and size with the
    mean over seeds of each metric and, where there are several seeds, half their range ("± METRIC")."""
    grey, truth = record["yardsticks"]["grey"], record["yardsticks"]["truth"]
    table = [{"model": "grey (ab = 0)", **grey},
             {"model": "truth", "colourfulness": truth["colourfulness"], "dCF": 0.0, "high_chroma": truth["high_chroma"]}]
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in record["runs"].values():
        groups.setdefault((run["model"], run["photos"]), []).append(run)
    for (model, n), runs in sorted(groups.items()):
        row: dict[str, object] = {"model": model, "photos": n, "seeds": len(runs)}
        for metric in METRICS:
            values = [r["metrics"][metric] for r in runs]
            row[metric] = sum(values) / len(values)
            if len(values) > 1:
                row[f"± {metric}"] = (max(values) - min(values)) / 2
        row["training s"] = sum(r["train_seconds"] for r in runs) / len(runs)
        table.append(row)
    return table


def _cells(record: dict) -> tuple[list[str], list[list[str]]]:
    """(columns, rows of text): `rows` with the mean ± half the seeds' range where there are several seeds."""
    def cell(row: dict, key: str) -> str:
        if key not in row:
            return "-"
        value = row[key]
        if not isinstance(value, float):
            return str(value)
        text = f"{value:.0f}" if key == "training s" else f"{value:.4f}" if key == "high_chroma" else f"{value:.3f}"
        return text + (f" ± {row['± ' + key]:.3f}" if f"± {key}" in row else "")

    columns = ["model", "photos", "seeds", *METRICS, "training s"]
    return columns, [[cell(row, key) for key in columns] for row in rows(record)]


def table(record: dict) -> str:
    """The record as a markdown table (`rows`; the mean ± half the seeds' range where there are several seeds)."""
    columns, cells = _cells(record)
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                     + ["| " + " | ".join(row) + " |" for row in cells])


def frame(record: dict):
    """The same table as a pandas DataFrame of text cells, indexed by model (for a notebook)."""
    import pandas as pd

    columns, cells = _cells(record)
    return pd.DataFrame(cells, columns=columns).set_index("model")


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {key: metrics[key] for key in METRICS}


def _jsonable(config: StudyConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


def load_config(path: str | Path) -> StudyConfig:
    """A StudyConfig from a YAML file of its fields (lists for the tuples); unknown keys are refused."""
    import yaml

    values = yaml.safe_load(Path(path).read_text()) or {}
    known = StudyConfig.__dataclass_fields__
    if unknown := sorted(set(values) - set(known)):
        raise ValueError(f"{path}: unknown study settings {', '.join(unknown)}; known: {', '.join(known)}")
    return StudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
