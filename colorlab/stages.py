"""Training stages: the settings of each, and the object that owns a stage's networks and optimizers.

A recipe (`colorlab.recipes`) is a list of stages; `colorlab.train.fit` runs any stage, and only
runs it: the loop (device, precision, data order, logging, checkpoints, signals) knows nothing
of discriminators or losses. What differs between stages lives here, once:

- the settings: `TrainConfig`, whose defaults are the GAN stage's (pix2pix), and `STAGE_DEFAULTS`,
  what the other stages change in it; `stage_config` combines the two. The CLI and
  `colorlab.recipes.RunConfig` read their defaults from here;
- the stage objects: `L1Stage` (L1 pretraining), `GANStage` (cGAN + lambda * L1 with a PatchGAN)
  and `ObjectiveStage` (any loss of the generator's output, e.g. chapter 9's classification).
  Each owns its networks, optimizers and objective, takes one optimisation step (`step`) and
  saves and restores all of that (`state_dict`). `wrap` is the one place where the networks a
  step runs can be wrapped (torch.compile today, DistributedDataParallel tomorrow) while
  checkpoints keep the unwrapped originals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .distributed import unwrap
from .losses import LAMBDA_L1, GANLoss, discriminator_loss, generator_loss
from .models import build_discriminator

# A loss without discriminator: (generator output, true ab) -> named losses, "loss_G" minimised.
Objective = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
L1_ADAM = {"lr_g": 1e-4, "betas": (0.9, 0.999)}  # the reference tutorial's L1-only stage: Adam(lr=1e-4)
# stage -> what it changes in TrainConfig's defaults (which are the GAN stage's)
# Colour hints (colorlab.hints) train only the zero-initialised weights that read the hints: Adam moves each
# weight by about lr per step, so 1e-4 would leave them near zero for many epochs; 1e-3 for both hint stages.
HINT_ADAM = {"lr_g": 1e-3, "betas": (0.9, 0.999)}
STAGE_DEFAULTS: dict[str, dict] = {"pretrain": L1_ADAM, "gan": {}, "classify": L1_ADAM,
                                   "hints": HINT_ADAM, "hints-gan": {"lr_g": HINT_ADAM["lr_g"]}}
STAGE_NAMES = tuple(STAGE_DEFAULTS)


@dataclass
class TrainConfig:
    """Hyper-parameters of one stage. Defaults are the reference tutorial's GAN settings (pix2pix)."""

    epochs: int = 20
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_l1: float = LAMBDA_L1
    gan_mode: str = "vanilla"
    seed: int = 0
    log_every: int = 25
    compile: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ValueError(f"learning rates must be positive, got lr_g={self.lr_g}, lr_d={self.lr_d}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        self.betas = tuple(self.betas)


def stage_config(stage: str, epochs: int, seed: int = 0, **overrides) -> TrainConfig:
    """The settings of `stage` ("pretrain", "gan" or "classify") for `epochs` epochs, with `overrides`."""
    if stage not in STAGE_DEFAULTS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGE_NAMES)}")
    return TrainConfig(**(STAGE_DEFAULTS[stage] | dict(epochs=epochs, seed=seed) | overrides))


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


class Stage:
    """One training stage: its networks, their optimizers and its objective (subclasses fill in `step`).

    `networks` are the modules it trains (saved under their names), `optimizers` theirs (made
    by `to`, on the device's terms: fused Adam on CUDA). `step_networks` are what `step` runs:
    the networks themselves, or what `wrap` made of them.
    """

    name = "stage"

    def __init__(self, generator: nn.Module, config: TrainConfig) -> None:
        if getattr(generator, "spec", None) is None:
            raise ValueError("generator has no .spec: build it with colorlab.models.build_generator")
        self.generator, self.config = generator, config
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.step_networks: dict[str, nn.Module] = {}

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def _learning_rates(self) -> dict[str, tuple[str, float]]:
        """optimizer key -> (the network it steps, its learning rate)."""
        return {"opt_g": ("generator", self.config.lr_g)}

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> "Stage":
        """Move the networks to `device` in training mode and make their optimizers there."""
        for net in self.networks.values():
            net.to(device, memory_format=memory_format).train()
        self.optimizers = {key: torch.optim.Adam(self.networks[net].parameters(), lr=lr, betas=self.config.betas,
                                                 fused=device.type == "cuda")
                           for key, (net, lr) in self._learning_rates().items()}
        self.step_networks = dict(self.networks)
        return self

    def wrap(self, fn: Callable[[nn.Module], nn.Module]) -> None:
        """Run `step` through fn(network) for each network (they share the parameters; checkpoints save the originals)."""
        self.step_networks = {name: fn(net) for name, net in self.step_networks.items()}

    def state_dict(self) -> dict[str, dict]:
        return ({name: net.state_dict() for name, net in self.networks.items()}
                | {key: opt.state_dict() for key, opt in self.optimizers.items()})

    def load_state_dict(self, state: dict) -> None:
        for name, net in self.networks.items():
            net.load_state_dict(state[name])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state[key])

    def at(self, epoch: int, positions: torch.Tensor) -> None:
        """Told before each step: the epoch and the epoch positions of the batch's photos (for per-photo draws)."""

    def step(self, L: torch.Tensor, ab: torch.Tensor,
             scaler: torch.amp.GradScaler | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def finish(self) -> None:
        """Called when training ends: leave the networks as a user expects them."""


class ObjectiveStage(Stage):
    """The generator alone, minimising `objective(output, true ab)["loss_G"]` (e.g. rebalanced cross-entropy)."""

    name = "classify"

    def __init__(self, generator: nn.Module, config: TrainConfig, objective: Objective) -> None:
        super().__init__(generator, config)
        self.objective = objective

    def step(self, L, ab, scaler=None):
        opt_g = self.optimizers["opt_g"]
        opt_g.zero_grad(set_to_none=True)
        losses = self.objective(self.step_networks["generator"](L).float(), ab)
        backward_and_step(losses["loss_G"], opt_g, scaler)
        if scaler is not None:
            scaler.update()
        return losses


class L1Stage(ObjectiveStage):
    """L1 pretraining: the generator alone, regressing the true colours (the reference tutorial's stage 1)."""

    name = "pretrain"

    def __init__(self, generator: nn.Module, config: TrainConfig) -> None:
        super().__init__(generator, config, lambda fake_ab, ab: generator_loss(None, None, fake_ab, ab))


class GANStage(Stage):
    """cGAN + lambda * L1 against a PatchGAN `discriminator` (pix2pix; the baseline and stage 2)."""

    name = "gan"

    def __init__(self, generator: nn.Module, config: TrainConfig, discriminator: nn.Module) -> None:
        super().__init__(generator, config)
        self.discriminator = discriminator
        self.gan_loss = GANLoss(config.gan_mode)

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def _learning_rates(self):
        return super()._learning_rates() | {"opt_d": ("discriminator", self.config.lr_d)}

    def to(self, device, memory_format=torch.contiguous_format):
        self.gan_loss.to(device)
        return super().to(device, memory_format)

    def step(self, L, ab, scaler=None):
        return pix2pix_step(self.step_networks["generator"], self.step_networks["discriminator"],
                            self.optimizers["opt_g"], self.optimizers["opt_d"], self.gan_loss, L, ab,
                            self.config.lambda_l1, scaler)

    def finish(self) -> None:
        set_requires_grad(self.discriminator, True)  # frozen during G steps only


def pix2pix_step(generator, discriminator, opt_g, opt_d, gan_loss, L, ab, lambda_l1,
                 scaler: torch.amp.GradScaler | None = None) -> dict[str, torch.Tensor]:
    """One optimisation step of pix2pix: the D step, then the G step.

    With a `scaler` (fp16 autocast), each loss is scaled before its backward pass, each
    optimizer steps through the scaler (skipping a step whose gradients overflowed), and the
    scale is updated once, after both players' steps.
    """
    fake_ab = generator(L)
    set_requires_grad(discriminator, True)
    opt_d.zero_grad(set_to_none=True)
    d_losses = discriminator_loss(
        gan_loss, discriminator(torch.cat([L, ab], 1)), discriminator(torch.cat([L, fake_ab.detach()], 1))
    )
    backward_and_step(d_losses["loss_D"], opt_d, scaler)
    set_requires_grad(discriminator, False)  # G's step must not update D
    # through the unwrapped D under DDP: no D gradients are wanted, so DDP must not wait for any
    fake_logits = unwrap(discriminator)(torch.cat([L, fake_ab], 1))
    opt_g.zero_grad(set_to_none=True)
    g_losses = generator_loss(gan_loss, fake_logits, fake_ab.float(), ab, lambda_l1)
    backward_and_step(g_losses["loss_G"], opt_g, scaler)
    if scaler is not None:
        scaler.update()
    return d_losses | g_losses


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)


def _objective_stage(generator: nn.Module, config: TrainConfig, objective: Objective | None) -> Stage:
    if objective is None:
        raise ValueError("the classify stage needs an objective (colorlab.classify.ClassificationObjective)")
    return ObjectiveStage(generator, config, objective)


def _hint_stage(name: str) -> Callable[[nn.Module, TrainConfig, Objective | None], Stage]:
    def build(generator: nn.Module, config: TrainConfig, objective: Objective | None) -> Stage:
        from .hints import build_hint_stage  # colorlab.hints builds on this module

        return build_hint_stage(name, generator, config)
    return build


# stage name -> how it is built from (generator, config, objective): the table `build_stage` looks up
STAGE_BUILDERS: dict[str, Callable[[nn.Module, TrainConfig, Objective | None], Stage]] = {
    "pretrain": lambda generator, config, objective: L1Stage(generator, config),
    "gan": lambda generator, config, objective: GANStage(generator, config, build_discriminator()),
    "classify": _objective_stage,
    "hints": _hint_stage("hints"),  # the two objectives above, given simulated colour hints (colorlab.hints)
    "hints-gan": _hint_stage("hints-gan"),
}


def build_stage(name: str, generator: nn.Module, config: TrainConfig, objective: Objective | None = None) -> Stage:
    """The stage `name` for `generator` (`STAGE_BUILDERS`): "pretrain", "gan" (with a new PatchGAN), "classify"
    (needs `objective`), or "hints" / "hints-gan" (the same two objectives given simulated colour hints)."""
    if name not in STAGE_BUILDERS:
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(STAGE_NAMES)}")
    return STAGE_BUILDERS[name](generator, config, objective)


__all__ = ["GANStage", "L1Stage", "Objective", "ObjectiveStage", "STAGE_BUILDERS", "STAGE_DEFAULTS", "Stage", "TrainConfig",
           "build_stage", "pix2pix_step", "set_requires_grad", "stage_config"]
