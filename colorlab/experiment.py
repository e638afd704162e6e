"""The reference tutorial's comparison as one experiment: baseline vs L1-pretrained vs pretrained + GAN.

`colorlab experiment --config configs/reference.yaml --out results/reference` trains the three models
on the same data, evaluates them on the same validation photos in one pass, and writes small
artifacts meant to be committed (no weights): `metrics.json` (metrics per model, stage
wall-clock times, command, commit, device), `losses.png`, `grid.png` (gray | baseline |
L1-pretrained | +GAN | truth) and, when the old photos are present, `old_photos.png`.
Checkpoints go to `<out>/checkpoints/` (git-ignored), so an interrupted experiment resumes.

The whole config is checked before any data is read or model trained (`ExperimentConfig.from_yaml`):
a YAML error, a duplicate key, a python tag, an alias bomb or a `notes:` value that metrics.json
cannot hold would otherwise surface only after hours of training, or never (a silently lost key).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from . import distributed, hub
from .catalogue import FINAL, GREY, MODELS, STAGES
from .checkpoint import load_generator
from .colorize import colorize_image
from .color import L_ab_to_rgb
from .data import LOAD_SIDE_FACTOR, load_split, val_batches
from .evaluate import Grey, comparison_grid, evaluate, grayscale_rgb, predict_rgb
from .io import list_images, load_rgb
from .models import OUTPUTS, check_size
from .published_data import eval_photos_dir
from .recipes import RECIPES, REFERENCE_EPOCHS, train_recipe
from .record import now, provenance, training_seconds, write_record
from .runs import LIMITS
from .runtime import pick_device
from .train import loss_figure

MAX_CONFIG_BYTES = 64 * 1024  # a config is a screenful of settings; more is a mistake or an attack
MAX_ALIASES = 16  # YAML aliases (*name): a few reuse a value; thousands nest into a "billion laughs" bomb
MAX_NOTES_BYTES = 16 * 1024  # notes as JSON, as metrics.json will hold them
NO_LOSSES = ("losses.png is missing: the published files are generator-only checkpoints without training history, "
             "so their loss curves cannot be drawn; models exported with --export-models keep each stage's history "
             "in their manifest entry")


@dataclass
class ExperimentConfig:
    """What the experiment trains; see configs/reference.yaml for the values used and why."""

    data: str = "shared"
    n_images: int | None = None
    size: int = 256
    batch_size: int = 16
    seed: int = 0
    weights: str | None = "auto"
    output: str | None = None  # the resnet18 output layer: None = the library's default, or one of models.OUTPUTS
    baseline_epochs: int = REFERENCE_EPOCHS
    pretrain_epochs: int = REFERENCE_EPOCHS
    gan_epochs: int = REFERENCE_EPOCHS
    grid_rows: int = 8
    cache: bool = True
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a bad setting in one line naming it, before any data is read or model trained."""
        types = {"data": str, "size": int, "batch_size": int, "seed": int, "baseline_epochs": int,
                 "pretrain_epochs": int, "gan_epochs": int, "grid_rows": int, "cache": bool, "notes": dict}
        for name, kind in types.items():
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")
        for name in ("batch_size", "baseline_epochs", "pretrain_epochs", "gan_epochs", "grid_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.n_images is not None and (isinstance(self.n_images, bool) or not isinstance(self.n_images, int)
                                          or self.n_images < 2):
            raise ValueError(f"n_images must be an integer >= 2 (train + val) or null for all, got {self.n_images!r}")
        limits = {"batch_size": LIMITS["batch_size"], "seed": LIMITS["seed"], "n_images": LIMITS["n_images"]}
        limits |= {name: LIMITS["epochs"] for name in ("baseline_epochs", "pretrain_epochs", "gan_epochs")}
        for name, high in limits.items():
            if (getattr(self, name) or 0) > high:
                raise ValueError(f"{name} must be at most {high:_}, got {getattr(self, name)}")
        if self.weights is not None and not isinstance(self.weights, str):
            raise ValueError(f"weights must be auto, imagenet, null or a file, got {self.weights!r}")
        if self.output not in (None, *OUTPUTS):
            raise ValueError(f"output must be null or one of {', '.join(OUTPUTS)}, got {self.output!r}")
        check_size(self.size)
        if problem := _not_json(self.notes, "notes"):
            raise ValueError(f"{problem}: metrics.json records the notes as JSON (strings, numbers, true/false, "
                             "null, lists, mappings); quote it")
        if len(json.dumps(self.notes)) > MAX_NOTES_BYTES:
            raise ValueError(f"notes take {len(json.dumps(self.notes)):_} bytes as JSON, more than {MAX_NOTES_BYTES:_}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ExperimentConfig":
        """Read and check a config file: every problem is one ValueError line naming the file, before any work."""
        values = _read_yaml(Path(path))
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown settings {', '.join(sorted(map(str, unknown)))}")
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (it would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict:
    """A config file's settings as a dict; ValueError in one line for anything else."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:_} bytes, more than a config's {MAX_CONFIG_BYTES:_}")
    text = path.read_text()
    try:
        aliases = sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader))
        if aliases > MAX_ALIASES:
            raise ValueError(f"{path}: {aliases} YAML aliases (*name), more than {MAX_ALIASES}; "
                             "write the values out instead")
        values = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: no python tags, no code
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(f"{path}: {where}{' '.join(str(err.problem or err.context).split())}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config is a mapping of settings (name: value), not a {type(values).__name__}")
    return values


def _not_json(value, where: str) -> str | None:
    """Where `value` holds something JSON cannot write (a date, a set...), e.g. 'notes.when is a date', or None."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    if isinstance(value, list):
        return next((p for i, item in enumerate(value) if (p := _not_json(item, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r}, not a string"
            if problem := _not_json(item, f"{where}.{key}"):
                return problem
        return None
    return f"{where} is a {type(value).__name__} ({value!r})"


def run_experiment(config: ExperimentConfig, out: str | Path, device: str = "auto", progress: bool = True,
                   command: str = "", export: str | Path | None = None) -> dict | None:
    """Train the three models, evaluate them together, write the artifacts; returns the summary.

    Under torchrun (`colorlab experiment --nproc N`) every process trains; rank 0 alone evaluates,
    writes and returns the summary (the other ranks return None).

    `command` is recorded in metrics.json, so that a committed result says how to reproduce it.
    With `export`, the three generators are also written there as publishable files (`export_models`).
    """
    started = now()
    ddp, device = distributed.setup(pick_device(device))
    out = Path(out)
    checkpoints = out / "checkpoints"
    train_files, val_files = distributed.main_first(ddp, load_split, config.data, config.n_images, seed=config.seed,
                                                    max_side=LOAD_SIDE_FACTOR * config.size)  # as recipes.run splits
    common = dict(size=config.size, batch_size=config.batch_size, seed=config.seed, device=device, ddp=ddp,
                  resume=True, progress=progress, cache=config.cache)
    trained = {
        "baseline": train_recipe("baseline", train_files, checkpoints, epochs={"gan": config.baseline_epochs},
                                 prefix="baseline_", **common),
        "resnet18": train_recipe("resnet18", train_files, checkpoints, weights=config.weights, output=config.output,
                                 epochs={"pretrain": config.pretrain_epochs, "gan": config.gan_epochs},
                                 prefix="resnet18_", **common),
    }
    if not ddp.is_main:  # [ddp] rank 0 alone evaluates and writes
        return None
    histories = {entry.label: trained[entry.recipe].histories[entry.stage] for entry in STAGES}
    models = {key: (trained[entry.recipe].generator if entry.stages == RECIPES[entry.recipe].stages
                    # an earlier stage's end, kept by its checkpoint (deepcopy fails on DynamicUnet's hooks)
                    else load_generator(checkpoints / entry.checkpoint, map_location=device)[0])
              for key, entry in MODELS.items()}

    summary = {
        **provenance(command, device, started), "config": asdict(config),
        "pretrained_backbone": bool(getattr(trained["resnet18"].generator, "pretrained", False)),
        "n_train": len(train_files), "n_val": len(val_files),
        "world_size": ddp.world_size, "global_batch_size": config.batch_size * ddp.world_size,
        "seconds": training_seconds(histories),
        "metrics": _write_results(models, histories, val_files, config, out, device),
        "history": {stage: h.epochs for stage, h in histories.items()},
    }
    write_record(out, summary)
    if export is not None:
        export_models(checkpoints, export, summary)
    return summary


def _write_results(models: dict, histories: dict, val_files: list[Path], config: ExperimentConfig, out: Path,
                   device: torch.device) -> dict:
    """Evaluate `models` on the same validation photos; write grid.png, losses.png (when there are
    training histories) and old_photos.png (when the shared old photos are here); returns the metrics."""
    batches = val_batches(val_files, config.size, device)
    metrics = {name: evaluate(model, batches) for name, model in models.items()} | {GREY: evaluate(Grey(), batches)}
    L, ab = batches[0]
    rows = min(config.grid_rows, len(L))
    columns = {"gray": grayscale_rgb(L[:rows])} | {name: predict_rgb(m, L[:rows]) for name, m in models.items()}
    fig = comparison_grid(columns | {"truth": L_ab_to_rgb(L[:rows], ab[:rows])}, max_rows=rows, cell_inches=1.6)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "grid.png", dpi=60)
    if histories:
        loss_figure(histories, panel_size=(4.5, 3.2)).savefig(out / "losses.png", dpi=60)
    _old_photos(models[FINAL], config.size, device, out / "old_photos.png")
    return metrics


def _old_photos(generator, size: int, device, path: Path) -> None:
    """The 'colorize old photos' demo: before | after for the old photos (../shared/data or the release asset)."""
    root = eval_photos_dir()
    if root is None or not (root / "old-photos").is_dir():
        return
    import matplotlib.pyplot as plt

    files = list_images(root / "old-photos")
    fig, axes = plt.subplots(len(files), 2, figsize=(5, 2.5 * len(files)), squeeze=False)
    for (before, after), file in zip(axes, files):
        photo = load_rgb(file, max_side=512)
        before.imshow(photo)
        after.imshow(colorize_image(generator, photo, size, device))
        for ax in (before, after):
            ax.axis("off")
    axes[0][0].set_title("old photo")
    axes[0][1].set_title("colorized")
    fig.tight_layout()
    fig.savefig(path, dpi=50)


def export_models(checkpoints: Path, folder: str | Path, summary: dict) -> list[dict]:
    """Write the experiment's three generators as publishable files plus their MANIFEST.json into `folder`.

    Each entry has what `colorlab.hub`'s registry needs (file, sha256, bytes, spec, training
    facts, validation metrics) and each stage's loss history, so that a later publication can
    draw its loss curves: the generator-only files themselves carry no history.
    """
    folder, config = Path(folder), summary["config"]
    entries = []
    for key, model in MODELS.items():
        stages = [stage.label for stage in model.trained_stages]
        entry = hub.export_checkpoint(checkpoints / model.checkpoint, folder / f"{model.published_name(config['size'])}.pt")
        del entry["history"]  # one stage's only; the summary has every stage's
        entry |= {
            "what": model.what,
            "epochs": {stage.objective: len(summary["history"][stage.label]["loss_G"]) for stage in model.trained_stages},
            "trained_on": f"{summary['n_train']} photos of data={config['data']}, {config['size']} px, "
                          f"batch {config['batch_size']}, seed {config['seed']}",
            "backbone_init": ("N(0, 0.02)" if model.recipe == "baseline" else
                              "ImageNet" if summary["pretrained_backbone"] else "random"),
            **{field: summary[field] for field in ("config", "command", "commit", "device", "versions", "date")},
            "seconds_per_stage": {stage: summary["seconds"][stage] for stage in stages},
            "validation": {"photos": f"{summary['n_val']} validation photos of data={config['data']}",
                           "metrics": summary["metrics"][key]},
            "history": {stage: summary["history"][stage] for stage in stages},
        }
        entries.append(entry)
    manifest = {"format": "colorlab-published-models-v1", "models": entries}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    return entries


def _published_name(model: str, size: int) -> str:
    """The preferred published model of `size` px that stands for the experiment's `model`."""
    names = hub.stage_models(MODELS[model].hub_stage, size)
    if not names:
        raise hub.PublishedModelError(f"no published {model} model of {size} px; published ones: {', '.join(hub.MODELS)}")
    return names[0]


def evaluate_published(config: ExperimentConfig, out: str | Path, device: str = "auto", command: str = "") -> dict:
    """The experiment's evaluation and figures for the published models of `config.size`, without training.

    `colorlab experiment --from-published` uses it to make results/cpu64 from the published
    files themselves. Their files hold no training history, so no losses.png is written
    (the summary says so under "missing").
    """
    started, device, out = now(), pick_device(device), Path(out)
    _, val_files = load_split(config.data, config.n_images, seed=config.seed, max_side=LOAD_SIDE_FACTOR * config.size)
    names = {model: _published_name(model, config.size) for model in MODELS}
    models = {model: hub.load_pretrained(name, device) for model, name in names.items()}
    summary = {
        **provenance(command, device, started), "config": asdict(config),
        "published_models": {model: {"name": name, "sha256": hub.get(name).sha256, "trained": hub.get(name).describe()}
                             for model, name in names.items()},
        "n_val": len(val_files),
        "metrics": _write_results(models, {}, val_files, config, out, device),
        "missing": {"losses.png": NO_LOSSES},
    }
    write_record(out, summary)
    return summary
