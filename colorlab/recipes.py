"""The recipes as data, and the one function that trains them: `train_recipe`.

A recipe is a named list of stages (`colorlab.stages`), each trained by `colorlab.train.fit`:

- "baseline": the pix2pix U-Net from scratch, cGAN + lambda * L1 (20 epochs in the reference tutorial);
- "resnet18": ResNet18-DynamicUnet, L1-only pretraining (20 epochs), then cGAN + L1 (20);
- "classification": ResNet18-DynamicUnet with one output per ab bin, rebalanced cross-entropy
  (Adam as in L1 pretraining), decoded by the annealed mean (colorlab.classify); `init` may
  name a regression checkpoint of the same size to start from;
- "hints", "hints-gan": the ResNet18-DynamicUnet widened to read colour hints (colorlab.hints), from `init`.

A recipe is data (`Recipe`): its stages and the factories of what differs between recipes (generator,
objective, evaluation), which `train_recipe` and `run` read instead of branching on its name. `colorlab train` and the studies
execute a run with `run` (split, train, evaluate, record: `colorlab.record`); `colorlab experiment`, the
chapters and tools/blotches.py train through `train_recipe`. A run writes into `out/`: one
checkpoint per stage (`pretrain.pt`, `gan.pt`, `classify.pt`; resumable), and with `run` also
`history.json`, `metrics.json`, `losses.png` and `samples.png` (grayscale | prediction | truth).
Under torchrun (`colorlab train --nproc N`) every process trains, rank 0 alone writes these files,
and `batch_size` is the per-process batch (metrics.json records world_size and global_batch_size).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from . import distributed
from .cache import train_loader
from .data import COCO_CAP, LOAD_SIDE_FACTOR, load_split, val_batches
from .evaluate import evaluate, sample_grid
from .models import IMAGENET, build_generator, check_size
from .record import now, provenance, training_seconds, write_record
from .runs import RunSpec
from .runtime import pick_device
from .stages import Objective, TrainConfig, build_stage, stage_config
from .train import History, fit, loss_figure, resumable_state

REFERENCE_EPOCHS = TrainConfig.epochs  # epochs of every stage in the reference tutorial


def _regression_generator(name: str):
    def build(size: int, weights: str | None, output: str | None, init: str | Path | None) -> nn.Module:
        return build_generator(name, size, weights=weights, output=output)
    return build


def _classifier(size, weights, output, init):
    from .classify import new_classifier

    return new_classifier(size, weights=weights, init=init)


def _hint_generator(size, weights, output, init):
    from .hints import hints_start

    if init is None:
        raise ValueError("a hints recipe starts from a 1-channel model: give init (a checkpoint or a "
                         "published resnet18 model's name, e.g. resnet18-l1-64)")
    return hints_start(init, size)


def _classification_objective(generator: nn.Module, train_files: list[Path], size: int):
    from .classify import objective_for

    return objective_for(generator, train_files, size)


def _classification_evaluation(generator: nn.Module, batches: list, out: Path, seed: int) -> tuple[nn.Module, dict]:
    """Its network outputs bin logits: decode them to ab, and add Zhang et al.'s accuracy measure."""
    from .classify import ClassColorizer, ab_accuracy_auc, decoding_grid

    colorizer = ClassColorizer(generator)
    decoding_grid(colorizer, *batches[0]).savefig(out / "grid.png", dpi=80)
    return colorizer, {"auc": ab_accuracy_auc(colorizer, batches)}


def _hint_evaluation(generator: nn.Module, batches: list, out: Path, seed: int) -> tuple[nn.Module, dict]:
    """Without hints it is measured as any generator; with them, PSNR per number of hints."""
    from .hints import HINT_COUNTS, evaluate_hints

    return generator, {"psnr_vs_hints": evaluate_hints(generator, batches, HINT_COUNTS, seed)}


@dataclass(frozen=True)
class Recipe:
    """A recipe as data: its stages in order, and the factories of what differs between recipes.

    `generator(size, weights, output, init)` builds its untrained generator; `objective(generator,
    train_files, size)` the loss of a stage that needs one (classification's rebalanced
    cross-entropy); `evaluation(generator, batches, out, seed)` returns the model to score with
    `evaluate` and the recipe's extra metrics (writing any extra figure into `out`). The last
    stage trains for a run's `epochs`, the stages before it for its `pretrain_epochs`.
    """

    stages: tuple[str, ...]
    generator: Callable[..., nn.Module]
    objective: Callable[..., Objective] | None = None
    evaluation: Callable[..., tuple[nn.Module, dict]] | None = None

    def stage_epochs(self, epochs: int, pretrain_epochs: int) -> dict[str, int]:
        return {stage: epochs if stage == self.stages[-1] else pretrain_epochs for stage in self.stages}


RECIPES: dict[str, Recipe] = {
    "baseline": Recipe(("gan",), _regression_generator("baseline")),
    "resnet18": Recipe(("pretrain", "gan"), _regression_generator("resnet18")),
    "classification": Recipe(("classify",), _classifier, _classification_objective, _classification_evaluation),
    "hints": Recipe(("hints",), _hint_generator, evaluation=_hint_evaluation),
    "hints-gan": Recipe(("hints", "hints-gan"), _hint_generator, evaluation=_hint_evaluation),
}


class Trained(NamedTuple):
    """What `train_recipe` returns: the trained generator, and per stage its history (every epoch, resumed
    ones included, with its seconds) and its checkpoint (which keeps the generator as that stage left it)."""

    generator: nn.Module
    histories: dict[str, History]
    checkpoints: dict[str, Path]


def recipe_generator(recipe: str, size: int, weights: str | None = None, output: str | None = None,
                     init: str | Path | None = None) -> nn.Module:
    """The untrained generator of `recipe` (random init; the resnet18 encoder from `weights`)."""
    return _recipe(recipe).generator(size, weights, output, init)


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def train_recipe(recipe: str, train_files: list[Path], out: str | Path, *, size: int, epochs: Mapping[str, int],
                 batch_size: int = 16, seed: int = 0, stages: Sequence[str] | None = None,
                 generator: nn.Module | None = None, weights: str | None = None, output: str | None = None,
                 init: str | Path | None = None, overrides: Mapping[str, dict] | None = None,
                 device: str | torch.device = "auto", resume: bool = True, progress: bool = True,
                 cache: bool = True, num_workers: int | None = None, prefix: str = "",
                 ddp: distributed.Dist | None = None, run_spec: Mapping | None = None,
                 epoch_lines: bool = True) -> Trained:
    """Train `recipe`'s `stages` (all by default) in order on `train_files`, each into `out/<prefix><stage>.pt`.

    Seeds torch with `seed` and builds the recipe's generator (unless `generator` continues one,
    e.g. chapter 7's GAN stage after chapter 6's pretraining), then seeds again before each stage
    builds its networks (the GAN stage's discriminator): a stage starts the same whether the
    stages before it ran in this call, in an earlier one or were resumed, so chapters 6 and 7
    trained one stage each give `colorlab train`'s run. `epochs` maps each stage to its epochs; `overrides` a stage to
    changes of its settings (`colorlab.stages.stage_config`). With `resume`, every stage's
    checkpoint is checked before the first one trains, and each stage continues from its own
    (a finished one returns its stored history at once). `cache` decodes every image once
    (`colorlab.cache`), as `colorlab train` does. `ddp` is the process group's `Dist` when the caller
    has resolved it with `distributed.setup` (then `device` is this rank's); else it is resolved here.
    `run_spec` (a `RunSpec` as a dict) is stored in every checkpoint, and a checkpoint of another
    specification is refused before any stage trains.
    """
    entry = _recipe(recipe)
    stages = tuple(stages or entry.stages)
    if unknown := [stage for stage in stages if stage not in entry.stages]:
        raise ValueError(f"the {recipe} recipe has no stage {', '.join(unknown)}; its stages: "
                         f"{', '.join(entry.stages)}")
    if missing := [stage for stage in stages if stage not in epochs]:
        raise ValueError(f"no epochs given for stage {', '.join(missing)}")
    out = Path(out)
    if ddp is None:  # [ddp] resolved once, here or by the caller, and passed down to fit
        ddp, device = distributed.setup(pick_device(device))
    loader = distributed.main_first(ddp, train_loader, train_files, size, batch_size, seed, cache=cache,  # [ddp]
                                    num_workers=num_workers, progress=progress and ddp.is_main)  # rank 0 caches
    configs = {stage: stage_config(stage, epochs[stage], seed, **(overrides or {}).get(stage, {})) for stage in stages}
    torch.manual_seed(seed)
    if generator is None:
        generator = entry.generator(size, weights, output, init)
    checkpoints = {stage: out / f"{prefix}{stage}.pt" for stage in stages}
    if resume:  # every stage's checkpoint must fit before the first one trains
        for stage, config in configs.items():
            resumable_state(checkpoints[stage], generator.spec, stage, config, run_spec=run_spec)
    out.mkdir(parents=True, exist_ok=True)
    histories = {}
    for stage, config in configs.items():
        objective = None
        if entry.objective is not None:
            objective = distributed.main_first(ddp, entry.objective, generator, train_files, size)  # [ddp] its cache
        torch.manual_seed(seed)
        histories[stage] = fit(build_stage(stage, generator, config, objective), loader, device=device,
                               checkpoint_path=checkpoints[stage], resume=resume, progress=progress, ddp=ddp,
                               run_spec=run_spec, epoch_lines=epoch_lines)
    return Trained(generator, histories, checkpoints)


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

    def spec(self, world_size: int = 1) -> RunSpec:
        """The run's specification: what decides its weights (`colorlab.runs.RunSpec`), epochs apart."""
        return RunSpec.of(asdict(self) | {"max_side": LOAD_SIDE_FACTOR * self.size}, world_size)

    @property
    def stage_epochs(self) -> dict[str, int]:
        """Epochs per stage: `epochs` for the recipe's last stage, `pretrain_epochs` for the ones before it."""
        return RECIPES[self.recipe].stage_epochs(self.epochs, self.pretrain_epochs)


def run(config: RunConfig, command: str = "") -> dict | None:
    """Execute one run: split the data, train `config.recipe`, evaluate on the validation split, write the files.

    The one execute function of a run: `colorlab train` and the studies call it. It writes the
    checkpoints, `history.json`, `samples.png`, `losses.png` and the record `metrics.json`
    (`colorlab.record`: provenance, the config, data sizes, metrics, training seconds summed from
    the histories); returns the record. `command` is recorded as the way to reproduce it.
    Under torchrun, rank 0 evaluates, writes and returns the record; the other ranks return None.
    """
    started = now()
    recipe = _recipe(config.recipe)
    ddp, device = distributed.setup(pick_device(config.device))
    train_files, val_files = distributed.main_first(ddp, load_split, config.data, config.n_images, seed=config.seed,
                                                    max_side=LOAD_SIDE_FACTOR * config.size)  # [ddp] offline photos
    out = Path(config.out)  # created only once the data is known to be usable
    generator, histories, _ = train_recipe(
        config.recipe, train_files, out, size=config.size, epochs=config.stage_epochs, batch_size=config.batch_size,
        seed=config.seed, weights=config.weights, init=config.init,
        overrides={"gan": dict(gan_mode=config.gan_mode, lambda_l1=config.lambda_l1)}, device=device,
        resume=config.resume, progress=config.progress, cache=config.cache, num_workers=config.num_workers, ddp=ddp,
        run_spec=config.spec(ddp.world_size).as_dict())
    if not ddp.is_main:  # [ddp]
        return None

    batches = val_batches(val_files, config.size, device)
    extra = {}
    if recipe.evaluation is not None:
        generator, extra = recipe.evaluation(generator, batches, out, config.seed)
    metrics = evaluate(generator, batches) | extra
    sample_grid(generator, *batches[0]).savefig(out / "samples.png", dpi=80)
    loss_figure(histories).savefig(out / "losses.png", dpi=80)
    summary = {**provenance(command, device, started), "config": asdict(config), "n_train": len(train_files),
               "n_val": len(val_files), "world_size": ddp.world_size,
               "global_batch_size": config.batch_size * ddp.world_size, "metrics": metrics,
               "seconds": training_seconds(histories)}
    write_record(out, {k: h.epochs for k, h in histories.items()}, "history.json")
    write_record(out, summary)
    return summary


__all__ = ["RECIPES", "REFERENCE_EPOCHS", "Recipe", "RunConfig", "Trained", "recipe_generator", "run", "train_recipe"]
