"""The recipes as data, and the one function that trains them: `train_recipe`.

A recipe is a named list of stages (`colorlab.stages`), each trained by `colorlab.train.fit`:

- "baseline": the pix2pix U-Net from scratch, cGAN + lambda * L1 (20 epochs in the reference tutorial);
- "resnet18": ResNet18-DynamicUnet, L1-only pretraining (20 epochs), then cGAN + L1 (20);
- "classification": ResNet18-DynamicUnet with one output per ab bin, rebalanced cross-entropy
  (Adam as in L1 pretraining), decoded by the annealed mean (colorlab.classify); `init` may
  name a regression checkpoint of the same size to start from.

`colorlab train` (`run`: train, evaluate, write the files), `colorlab experiment`, the chapters
and tools/blotches.py all train through `train_recipe`. A run writes into `out/`: one
checkpoint per stage (`pretrain.pt`, `gan.pt`, `classify.pt`; resumable), and with `run` also
`history.json`, `metrics.json`, `losses.png` and `samples.png` (grayscale | prediction | truth).
Under torchrun (`colorlab train --nproc N`) every process trains, rank 0 alone writes these files,
and `batch_size` is the per-process batch (metrics.json records world_size and global_batch_size).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from . import distributed
from .data import COCO_CAP, LOAD_SIDE_FACTOR, load_split, train_loader, val_batches
from .evaluate import evaluate, sample_grid
from .models import IMAGENET, build_generator, check_size
from .runtime import pick_device
from .stages import TrainConfig, build_stage, stage_config
from .train import History, fit, loss_figure, resumable_state

RECIPES: dict[str, tuple[str, ...]] = {"baseline": ("gan",), "resnet18": ("pretrain", "gan"),
                                       "classification": ("classify",),
                                       "hints": ("hints",), "hints-gan": ("hints", "hints-gan")}
HINT_RECIPES = ("hints", "hints-gan")  # colour hints besides L (colorlab.hints): start from `init`, a 1-channel model
REFERENCE_EPOCHS = TrainConfig.epochs  # epochs of every stage in the reference tutorial


class Trained(NamedTuple):
    """What `train_recipe` returns: the trained generator, and per stage its history, the wall-clock seconds
    this call spent on it, and its checkpoint (which keeps the generator as that stage left it)."""

    generator: nn.Module
    histories: dict[str, History]
    seconds: dict[str, float]
    checkpoints: dict[str, Path]


def recipe_generator(recipe: str, size: int, weights: str | None = None, output: str | None = None,
                     init: str | Path | None = None) -> nn.Module:
    """The untrained generator of `recipe` (random init; the resnet18 encoder from `weights`)."""
    if recipe == "classification":
        from .classify import new_classifier

        return new_classifier(size, weights=weights, init=init)
    if recipe in HINT_RECIPES:
        from .hints import hints_start

        if init is None:
            raise ValueError(f"the {recipe} recipe starts from a 1-channel model: give init (a checkpoint or a "
                             "published resnet18 model's name, e.g. resnet18-l1-64)")
        return hints_start(init, size)
    return build_generator(recipe, size, weights=weights, output=output)


def train_recipe(recipe: str, train_files: list[Path], out: str | Path, *, size: int, epochs: Mapping[str, int],
                 batch_size: int = 16, seed: int = 0, stages: Sequence[str] | None = None,
                 generator: nn.Module | None = None, weights: str | None = None, output: str | None = None,
                 init: str | Path | None = None, overrides: Mapping[str, dict] | None = None,
                 device: str | torch.device = "auto", resume: bool = True, progress: bool = True,
                 cache: bool = True, num_workers: int | None = None, prefix: str = "") -> Trained:
    """Train `recipe`'s `stages` (all by default) in order on `train_files`, each into `out/<prefix><stage>.pt`.

    Seeds torch with `seed` and builds the recipe's generator (unless `generator` continues one,
    e.g. chapter 7's GAN stage after chapter 6's pretraining), then seeds again before each stage
    builds its networks (the GAN stage's discriminator): a stage starts the same whether the
    stages before it ran in this call, in an earlier one or were resumed, so chapters 6 and 7
    trained one stage each give `colorlab train`'s run. `epochs` maps each stage to its epochs; `overrides` a stage to
    changes of its settings (`colorlab.stages.stage_config`). With `resume`, every stage's
    checkpoint is checked before the first one trains, and each stage continues from its own
    (a finished one returns its stored history at once). `cache` decodes every image once
    (`colorlab.cache`), as `colorlab train` does.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    stages = tuple(stages or RECIPES[recipe])
    if unknown := [stage for stage in stages if stage not in RECIPES[recipe]]:
        raise ValueError(f"the {recipe} recipe has no stage {', '.join(unknown)}; its stages: "
                         f"{', '.join(RECIPES[recipe])}")
    if missing := [stage for stage in stages if stage not in epochs]:
        raise ValueError(f"no epochs given for stage {', '.join(missing)}")
    out, (ddp, device) = Path(out), distributed.setup(pick_device(device))
    loader = distributed.main_first(ddp, train_loader, train_files, size, batch_size, seed, cache=cache,  # [ddp]
                                    num_workers=num_workers, progress=progress and ddp.is_main)  # rank 0 caches
    configs = {stage: stage_config(stage, epochs[stage], seed, **(overrides or {}).get(stage, {})) for stage in stages}
    torch.manual_seed(seed)
    if generator is None:
        generator = recipe_generator(recipe, size, weights=weights, output=output, init=init)
    checkpoints = {stage: out / f"{prefix}{stage}.pt" for stage in stages}
    if resume:  # every stage's checkpoint must fit before the first one trains
        for stage, config in configs.items():
            resumable_state(checkpoints[stage], generator.spec, stage, config)
    out.mkdir(parents=True, exist_ok=True)
    histories, seconds = {}, {}
    for stage, config in configs.items():
        began = time.perf_counter()
        objective = None
        if stage == "classify":
            from .classify import objective_for

            objective = distributed.main_first(ddp, objective_for, generator, train_files, size)  # [ddp] its cache
        torch.manual_seed(seed)
        histories[stage] = fit(build_stage(stage, generator, config, objective), loader, device=device,
                               checkpoint_path=checkpoints[stage], resume=resume, progress=progress)
        seconds[stage] = time.perf_counter() - began
    return Trained(generator, histories, seconds, checkpoints)


@dataclass
class RunConfig:
    """One training run. Defaults are the reference tutorial's settings (COCO, 256 px, batch 16, 20 + 20 epochs)."""

    recipe: str = "resnet18"
    data: str = "coco"
    n_images: int | None = COCO_CAP
    size: int = 256
    batch_size: int = 16
    epochs: int = REFERENCE_EPOCHS
    pretrain_epochs: int = REFERENCE_EPOCHS
    weights: str | None = IMAGENET
    gan_mode: str = TrainConfig.gan_mode
    lambda_l1: float = TrainConfig.lambda_l1
    device: str = "auto"
    seed: int = 0
    out: str = "runs/resnet18"
    resume: bool = False
    num_workers: int | None = None
    progress: bool = True
    cache: bool = True  # decode + resize each image once into a uint8 cache (colorlab.cache) instead of every epoch
    init: str | None = None  # classification: a regression checkpoint whose fitting weights start the run; hints: the 1-channel model

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        check_size(self.size)
        for name in ("epochs", "pretrain_epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.n_images is not None and self.n_images < 2:
            raise ValueError(f"n_images must be >= 2 (train + val), got {self.n_images}")

    @property
    def stage_epochs(self) -> dict[str, int]:
        """Epochs per stage: `epochs` for the GAN and classification stages, `pretrain_epochs` for L1 pretraining."""
        return {"pretrain": self.pretrain_epochs, "gan": self.epochs, "classify": self.epochs,
                "hints": self.pretrain_epochs if self.recipe == "hints-gan" else self.epochs, "hints-gan": self.epochs}


def run(config: RunConfig) -> dict | None:
    """Train `config.recipe`, evaluate on the validation split, write the run's files; returns the summary.

    Under torchrun, rank 0 evaluates, writes and returns the summary; the other ranks return None.
    """
    began = time.perf_counter()
    ddp, device = distributed.setup(pick_device(config.device))
    train_files, val_files = distributed.main_first(ddp, load_split, config.data, config.n_images, seed=config.seed,
                                                    max_side=LOAD_SIDE_FACTOR * config.size)  # [ddp] offline photos
    out = Path(config.out)  # created only once the data is known to be usable
    generator, histories, *_ = train_recipe(
        config.recipe, train_files, out, size=config.size, epochs=config.stage_epochs, batch_size=config.batch_size,
        seed=config.seed, weights=config.weights, init=config.init,
        overrides={"gan": dict(gan_mode=config.gan_mode, lambda_l1=config.lambda_l1)}, device=device,
        resume=config.resume, progress=config.progress, cache=config.cache, num_workers=config.num_workers)
    if not ddp.is_main:  # [ddp]
        return None

    batches = val_batches(val_files, config.size, device)
    extra = {}
    if config.recipe == "classification":  # its network outputs bin logits: decode them to ab
        from .classify import ClassColorizer, ab_accuracy_auc, decoding_grid

        generator = ClassColorizer(generator)
        extra["auc"] = ab_accuracy_auc(generator, batches)  # Zhang et al.'s accuracy measure
        decoding_grid(generator, *batches[0]).savefig(out / "grid.png", dpi=80)
    if config.recipe in HINT_RECIPES:  # without hints it is measured as any generator; with them, here
        from .hints import HINT_COUNTS, evaluate_hints

        extra["psnr_vs_hints"] = evaluate_hints(generator, batches, HINT_COUNTS, config.seed)
    metrics = evaluate(generator, batches) | extra
    fig = sample_grid(generator, *batches[0])
    fig.savefig(out / "samples.png", dpi=80)
    loss_figure(histories).savefig(out / "losses.png", dpi=80)
    summary = {"config": asdict(config), "device": str(device), "n_train": len(train_files), "n_val": len(val_files),
               "world_size": ddp.world_size, "global_batch_size": config.batch_size * ddp.world_size,
               "metrics": metrics, "seconds": round(time.perf_counter() - began, 1)}
    (out / "history.json").write_text(json.dumps({k: h.epochs for k, h in histories.items()}, indent=1))
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


__all__ = ["HINT_RECIPES", "RECIPES", "RunConfig", "Trained", "recipe_generator", "run", "train_recipe"]
