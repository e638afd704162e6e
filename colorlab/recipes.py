"""The seed's two training recipes, end to end: data -> training stages -> evaluation -> files.

- "baseline": the pix2pix U-Net from scratch, cGAN + lambda * L1 (20 epochs in the seed).
- "resnet18": ResNet18-DynamicUnet, L1-only pretraining (20 epochs), then cGAN + L1 (20).
- "classification": ResNet18-DynamicUnet with one output per ab bin, rebalanced cross-entropy
  (`epochs` epochs, Adam as in L1 pretraining), decoded by the annealed mean (colorlab.classify);
  `init` may name a regression checkpoint of the same size to start from.

Each run writes into `out/`: `pretrain.pt` / `gan.pt` (checkpoints, resumable),
`history.json`, `metrics.json`, `losses.png` and `samples.png` (grayscale | prediction | truth).
Under torchrun (`colorlab train --nproc N`) every process trains, rank 0 alone writes these files,
and `batch_size` is the per-process batch (metrics.json records world_size and global_batch_size).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import distributed
from .cache import CachedImages
from .data import LOAD_SIDE_FACTOR, ImageDataset, load_split, make_loader, to_model_batch
from .evaluate import evaluate, sample_grid
from .models import AUTO, IMAGENET, build_discriminator, build_generator, check_size
from .runtime import pick_device
from .train import PRETRAIN, History, TrainConfig, fit, resumable_state, train_gan

RECIPES = ("baseline", "resnet18", "classification")
STAGES = ("pretrain", "gan")
DEFAULT_RUN_ROOT = "runs/book"
COLAB_DRIVE = Path("/content/drive/MyDrive")  # where Colab's drive.mount("/content/drive") puts your files


def stage_config(stage: str, epochs: int, seed: int = 0, **overrides) -> TrainConfig:
    """The seed's settings for a stage: "pretrain" (L1 only, Adam lr 1e-4) or "gan" (pix2pix, lr 2e-4, betas 0.5)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    base = PRETRAIN if stage == "pretrain" else {}
    return TrainConfig(**(base | dict(epochs=epochs, seed=seed) | overrides))


def resolve_run_root(root: str | Path = AUTO) -> Path:
    """Where the chapters keep their training runs: `root`, or for "auto" runs/book (relative to
    the chapter), or, in Colab with Google Drive mounted, a Drive folder that survives a runtime reset.

    Chapter 7 finds chapter 6's checkpoint there after a reset; a `colorlab train` run folder
    is reused by pointing `run_root` at the folder given to its `--run-root` (see `colorlab.recipes.run_dir`).
    """
    if str(root) != AUTO:
        return Path(root)
    if "google.colab" in sys.modules and COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "colorlab" / "runs"
    return Path(DEFAULT_RUN_ROOT)


def run_dir(recipe: str, root: str | Path = "auto", **params) -> Path:
    """A run folder named by its parameters, e.g. runs/book/resnet18-data=offline-n_images=64-seed=0-size=64.

    Chapters that train the same stage with the same parameters share its checkpoint, so
    when the book is built in order a later chapter resumes (= reuses) an earlier one's run.
    `root` "auto" is runs/book, or a Google Drive folder in Colab (`resolve_run_root`).
    """
    def tag(value) -> str:
        return Path(value).name if isinstance(value, (str, Path)) and ("/" in str(value)) else str(value)

    return resolve_run_root(root) / "-".join([recipe] + [f"{key}={tag(params[key])}" for key in sorted(params)])


def chapter_run_dir(recipe: str, root: str | Path, data: str, n_images: int | None, seed: int, size: int,
                    weights: str | None) -> Path:
    """The run folder chapters 5-8 use for these settings, so that they reuse a `colorlab train --run-root` run.

    The chapters name runs by their parameters; their `pretrained` is the recipe's `weights`
    ("none" for random init), and only the resnet18 runs carry it.
    """
    params = dict(data=data, n_images=n_images, seed=seed, size=size)
    if recipe == "resnet18":
        params["pretrained"] = "none" if weights is None else weights
    return run_dir(recipe, root, **params)


@dataclass
class RunConfig:
    """One training run. Defaults are the seed's settings (COCO, 256 px, batch 16, 20 + 20 epochs)."""

    recipe: str = "resnet18"
    data: str = "coco"
    n_images: int | None = 10_000
    size: int = 256
    batch_size: int = 16
    epochs: int = 20
    pretrain_epochs: int = 20
    weights: str | None = IMAGENET
    gan_mode: str = "vanilla"
    lambda_l1: float = 100.0
    device: str = "auto"
    seed: int = 0
    out: str = "runs/resnet18"
    resume: bool = False
    num_workers: int | None = None
    progress: bool = True
    cache: bool = True  # decode + resize each image once into a uint8 cache (colorlab.cache) instead of every epoch
    init: str | None = None  # classification recipe: a regression checkpoint whose fitting weights start the run

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        check_size(self.size)
        for name in ("epochs", "pretrain_epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.n_images is not None and self.n_images < 2:
            raise ValueError(f"n_images must be >= 2 (train + val), got {self.n_images}")


def train_loader(files, size: int, batch_size: int, seed: int, cache: bool = True, num_workers: int | None = None,
                 progress: bool = True):
    """The training DataLoader; with `cache`, images are decoded and resized once (colorlab.cache)."""
    if cache:  # batches are one read from a memory map: worker processes would only add overhead
        return make_loader(CachedImages(files, size, progress=progress), batch_size, train=True, seed=seed,
                           num_workers=num_workers or 0)
    return make_loader(ImageDataset(files, size), batch_size, train=True, seed=seed, num_workers=num_workers)


def val_batches(files, size: int, device, batch_size: int = 16):
    """Validation (L, ab) batches in a fixed order, no flips."""
    loader = make_loader(ImageDataset(files, size), batch_size=batch_size, train=False, num_workers=0)
    return [to_model_batch(rgb, device) for rgb in loader]


def run(config: RunConfig) -> dict | None:
    """Train `config.recipe`, evaluate on the validation split, write the run's files; returns the summary.

    Under torchrun, rank 0 evaluates, writes and returns the summary; the other ranks return None.
    """
    began = time.perf_counter()
    ddp, device = distributed.setup(pick_device(config.device))  # rank 0 first where files are written:
    train_files, val_files = distributed.main_first(ddp, load_split, config.data, config.n_images, seed=config.seed,
                                                    max_side=LOAD_SIDE_FACTOR * config.size)  # offline photos
    out = Path(config.out)  # created only once the data is known to be usable
    out.mkdir(parents=True, exist_ok=True)
    loader = distributed.main_first(ddp, train_loader, train_files, config.size, config.batch_size, config.seed,
                                    cache=config.cache, num_workers=config.num_workers,  # the image cache
                                    progress=config.progress and ddp.is_main)
    common = dict(device=device, resume=config.resume, progress=config.progress)
    histories: dict[str, History] = {}
    torch.manual_seed(config.seed)
    if config.recipe == "classification":
        from .classify import train_classifier

        generator, histories["classify"] = train_classifier(train_files, loader, config, out / "classify.pt", **common)
    else:
        generator = build_generator(config.recipe, config.size, weights=config.weights)
        stages = {}
        if config.recipe == "resnet18":
            stages["pretrain"] = stage_config("pretrain", config.pretrain_epochs, config.seed)
        stages["gan"] = stage_config("gan", config.epochs, config.seed, gan_mode=config.gan_mode,
                                     lambda_l1=config.lambda_l1)
        if config.resume:  # every stage's checkpoint must fit before the first one trains
            for stage, stage_settings in stages.items():
                resumable_state(out / f"{stage}.pt", generator.spec, stage, stage_settings)
        if config.recipe == "resnet18":
            histories["pretrain"] = fit(generator, loader, stages["pretrain"], checkpoint_path=out / "pretrain.pt",
                                        **common)
        histories["gan"] = train_gan(generator, build_discriminator(), loader, stages["gan"],
                                     checkpoint_path=out / "gan.pt", **common)

    if not ddp.is_main:
        return None
    batches = val_batches(val_files, config.size, device)
    metrics = evaluate(generator, batches)
    if config.recipe == "classification":
        from .classify import ab_accuracy_auc, decoding_grid

        metrics["auc"] = ab_accuracy_auc(generator, batches)  # Zhang et al.'s accuracy measure
        decoding_grid(generator, *batches[0]).savefig(out / "grid.png", dpi=80)
    fig = sample_grid(generator, *batches[0])
    fig.savefig(out / "samples.png", dpi=80)
    loss_figure(histories).savefig(out / "losses.png", dpi=80)
    summary = {"config": asdict(config), "device": str(device), "n_train": len(train_files), "n_val": len(val_files),
               "world_size": ddp.world_size, "global_batch_size": config.batch_size * ddp.world_size,
               "metrics": metrics, "seconds": round(time.perf_counter() - began, 1)}
    (out / "history.json").write_text(json.dumps({k: h.epochs for k, h in histories.items()}, indent=1))
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def loss_figure(histories: dict[str, History], panel_size: tuple[float, float] = (6, 3.5)):
    """One panel of loss curves per training stage, titled by the stage's name."""
    import matplotlib.pyplot as plt

    width, height = panel_size
    fig, axes = plt.subplots(1, len(histories), figsize=(width * len(histories), height), squeeze=False)
    for ax, (stage, history) in zip(axes[0], histories.items()):
        history.plot(ax)
        ax.set_title(stage)
    fig.tight_layout()
    return fig
