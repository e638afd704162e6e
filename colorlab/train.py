"""Training: L1-only pretraining of a generator, and conditional-GAN training.

One loop serves both stages. Its guarantees, beyond the seed's recipe:
- resumable: a checkpoint (atomic) after every epoch and when interrupted (Ctrl-C or
  SIGTERM, at the next step boundary); `resume=True` continues bit-identically on the CPU,
  because data order and flips depend only on (seed, epoch, sample position) and all RNGs are saved
  (and restored after the resumed epoch's DataLoader iterator has drawn its seed);
- scalable: the same loop runs under torchrun on several GPUs or nodes (DistributedDataParallel);
  the lines marked `# [ddp]` call colorlab.distributed, and do nothing in a single process;
- fast: Lab conversion and flips on the device; on CUDA, mixed precision chosen per GPU
  (`colorlab.runtime.precision_policy`: bf16, or fp16 + GradScaler), channels_last and fused
  Adam; losses summed on the device and read back only every `log_every` steps,
  optionally (`compile=True`) both networks compiled with torch.compile;
- safe: a NaN/inf loss stops training with a clear error and keeps the last good checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm  # plain text bars: notebooks without ipywidgets too

from . import distributed
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .data import epoch_positions, flip_mask, to_model_batch
from .losses import LAMBDA_L1, GANLoss, discriminator_loss, generator_loss
from .runtime import announce, pick_device, precision_policy


# A stage's loss without discriminator: (generator output, true ab) -> named losses, "loss_G" minimised.
Objective = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the last good checkpoint is left untouched."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one stage. Defaults are the seed's GAN settings (pix2pix)."""

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
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ValueError(f"learning rates must be positive, got lr_g={self.lr_g}, lr_d={self.lr_d}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        self.betas = tuple(self.betas)


PRETRAIN = dict(epochs=20, lr_g=1e-4, betas=(0.9, 0.999))  # the seed's L1-only stage: Adam(lr=1e-4)


@dataclass
class History:
    """Per-epoch mean losses (and seconds) of one stage: what the loss-curve plots read."""

    epochs: dict[str, list[float]] = field(default_factory=dict)

    def append(self, means: dict[str, float]) -> None:
        for key, value in means.items():
            self.epochs.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> list[float]:
        return self.epochs[key]

    def __len__(self) -> int:
        return len(self.epochs.get("seconds", []))

    def plot(self, ax=None, keys: tuple[str, ...] | None = None):
        """Loss curves, one line per loss (L1 terms on their own axis scale via log y)."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6, 3.5))[1]
        for key in keys or [k for k in self.epochs if k.startswith("loss")]:
            ax.plot(range(1, len(self.epochs[key]) + 1), self.epochs[key], marker="o", label=key)
        ax.set(xlabel="epoch", ylabel="mean loss", yscale="log")
        ax.legend()
        return ax


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


@contextmanager
def _stop_on_signals():
    """Turn Ctrl-C / SIGTERM into a flag checked between steps, so a checkpoint is consistent."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum, frame):
        flag["stop"] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=device.type == "cuda")


def fit(
    generator: nn.Module,
    loader: DataLoader,
    config: TrainConfig,
    discriminator: nn.Module | None = None,
    device: str | torch.device = "auto",
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    objective: Objective | None = None,
    sync_bn: bool | None = None,
) -> History:
    """Train `generator` on `loader` (uint8 RGB batches): L1 only, or cGAN + L1 with a discriminator.

    Returns the per-epoch history. With `checkpoint_path`, saves after every epoch and
    on interruption; `resume=True` continues from that file if it exists. `objective`
    replaces the L1 loss of a stage without discriminator: (generator output, true ab) ->
    losses, "loss_G" being minimised (e.g. `colorlab.classify.ClassificationObjective`).

    Under torchrun, each process trains on its share of every global batch (the loader's
    batch_size is the per-process batch) and `sync_bn` (None: `distributed.use_sync_bn`'s rule)
    makes BatchNorm use the global batch's statistics. Rank 0 writes the checkpoint; the returned
    history holds the losses averaged over the ranks.
    """
    if objective is not None and discriminator is not None:
        raise ValueError("an objective replaces the L1-only loss; it cannot be combined with a discriminator")
    ddp, device = distributed.setup(pick_device(device))  # [ddp] process group from torchrun's environment
    spec = getattr(generator, "spec", None)
    if spec is None:
        raise ValueError("generator has no .spec: build it with colorlab.models.build_generator")
    stage = "pretrain" if discriminator is None else "gan"
    cuda = device.type == "cuda"
    precision = precision_policy(device)
    if ddp.is_main:  # [ddp] one line per run, not per process
        announce(precision)
    scaler = precision.grad_scaler()
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    nets = [generator] + ([discriminator] if discriminator is not None else [])
    for net in nets:
        net.to(device, memory_format=memory_format).train()
    opt_g = _adam(generator.parameters(), config.lr_g, config.betas, device)
    opt_d, gan_loss = None, None
    if discriminator is not None:
        opt_d = _adam(discriminator.parameters(), config.lr_d, config.betas, device)
        gan_loss = GANLoss(config.gan_mode).to(device)

    history, start_epoch, start_step, start_sample, partial, rng = History(), 0, 0, 0, {}, None
    if resume and (state := resumable_state(checkpoint_path, spec, stage, config, map_location=device)):
        generator.load_state_dict(state["generator"])
        opt_g.load_state_dict(state["opt_g"])
        if discriminator is not None:
            discriminator.load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["opt_d"])
        history = History(state["history"])
        start_epoch, start_step, partial, rng = state["epoch"], state["step"], state["partial"], state["rng"]
        start_sample = state.get("samples", start_step * loader.batch_size)  # [ddp] global position in the epoch
        restore_rng(rng)

    def checkpoint(epoch: int, step: int, samples: int, sums: dict[str, torch.Tensor]) -> None:
        if checkpoint_path is None:
            return
        sums = distributed.reduce_mean(sums, ddp)  # [ddp] every rank resumes from the ranks' mean
        distributed.on_main(ddp, save_checkpoint, checkpoint_path, {  # [ddp] rank 0 writes, the others wait
            "spec": spec, "stage": stage, "config": asdict(config), "epoch": epoch, "step": step,
            "samples": samples, "partial": {k: v.detach().cpu() for k, v in sums.items()},
            "generator": generator.state_dict(), "opt_g": opt_g.state_dict(),
            "discriminator": discriminator.state_dict() if discriminator is not None else {},
            "opt_d": opt_d.state_dict() if opt_d is not None else {},
            "history": history.epochs, "rng": capture_rng(),
        })

    # compile=True compiles the two networks (forward and backward), not train_step: backward(),
    # zero_grad() and requires_grad_() break a compiled step into pieces, and the optimizers'
    # identity would be guarded on. The wrappers share the parameters; checkpoints save the originals.
    sync = distributed.use_sync_bn(loader.batch_size, sync_bn)  # [ddp]
    step_g, step_d = (None if net is None else distributed.wrap(net, ddp, device, sync)  # [ddp] DDP wrappers
                      for net in (generator, discriminator))
    if config.compile:
        step_g = torch.compile(step_g)
        step_d = torch.compile(step_d) if step_d is not None else None
    sampler = loader.sampler
    distributed.shard(loader, ddp)  # [ddp] each rank its slice of every global batch
    global_batch = loader.batch_size * ddp.world_size  # [ddp]
    with _stop_on_signals() as stop:
        for epoch in range(start_epoch, config.epochs):
            first_step = start_step if epoch == start_epoch else 0
            epoch_start = start_sample if epoch == start_epoch else 0  # [ddp] a global sample position
            sums = {k: v.to(device) for k, v in partial.items()} if epoch == start_epoch else {}
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch, start=epoch_start)
            positions = epoch_positions(loader)  # [ddp] flips follow the sample's place in the epoch, not the rank
            began = time.perf_counter()
            batches = iter(loader)  # draws a base seed from the global torch RNG, even with 0 workers
            if first_step and epoch == start_epoch:
                # The interrupted run had drawn that seed before the checkpoint's RNG state was
                # taken: drawing it again would shift every Dropout mask after the resume.
                restore_rng(rng)
            bar = tqdm(batches, desc=f"{stage} epoch {epoch + 1}/{config.epochs}",
                       disable=not (progress and ddp.is_main),  # [ddp] one bar, rank 0's
                       initial=first_step, total=first_step + len(loader), leave=False)
            step = first_step
            for step, rgb in enumerate(bar, start=first_step + 1):
                taken = (step - first_step - 1) * loader.batch_size
                flip = flip_mask(config.seed, epoch, positions[taken:taken + len(rgb)])
                L, ab = to_model_batch(rgb, device, flip=flip)
                if cuda:
                    L, ab = (t.contiguous(memory_format=torch.channels_last) for t in (L, ab))
                with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.autocast):
                    losses = train_step(step_g, step_d, opt_g, opt_d, gan_loss, L, ab, config.lambda_l1,
                                        scaler=scaler, objective=objective)
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
                if step % config.log_every == 0:
                    logged = distributed.reduce_mean(sums, ddp)  # [ddp] the ranks' mean, and NaN stops all
                    _check_finite(logged, epoch, step, checkpoint_path)
                    bar.set_postfix({k: f"{v.item() / step:.4f}" for k, v in logged.items()})
                if distributed.stop_agreed(stop["stop"], ddp, device, step % config.log_every == 0):  # [ddp]
                    position = epoch_start + (step - first_step) * global_batch
                    checkpoint(epoch, step, min(position, len(loader.dataset)), sums)
                    raise KeyboardInterrupt(f"training interrupted at epoch {epoch + 1}, step {step}; "
                                            f"resume with resume=True from {checkpoint_path}")
            sums = distributed.reduce_mean(sums, ddp)  # [ddp] the history holds the ranks' mean
            _check_finite(sums, epoch, step, checkpoint_path)
            means = {k: v.item() / max(step, 1) for k, v in sums.items()}
            history.append(means | {"seconds": time.perf_counter() - began})
            checkpoint(epoch + 1, 0, 0, {})
    if discriminator is not None:
        set_requires_grad(discriminator, True)
    return history


def train_step(generator, discriminator, opt_g, opt_d, gan_loss, L, ab, lambda_l1,
               scaler: torch.amp.GradScaler | None = None,
               objective: Objective | None = None) -> dict[str, torch.Tensor]:
    """One optimisation step; with a discriminator, the D step then the G step of pix2pix.

    With a `scaler` (fp16 autocast), each loss is scaled before its backward pass, each
    optimizer steps through the scaler (skipping a step whose gradients overflowed), and the
    scale is updated once, after both players' steps. An `objective` replaces the L1 term
    (and forbids a discriminator): e.g. chapter 9's rebalanced cross-entropy.
    """
    fake_ab = generator(L)
    losses: dict[str, torch.Tensor] = {}
    fake_logits = None
    if discriminator is not None:
        set_requires_grad(discriminator, True)
        opt_d.zero_grad(set_to_none=True)
        d_losses = discriminator_loss(
            gan_loss, discriminator(torch.cat([L, ab], 1)), discriminator(torch.cat([L, fake_ab.detach()], 1))
        )
        _backward_and_step(d_losses["loss_D"], opt_d, scaler)
        losses.update(d_losses)
        set_requires_grad(discriminator, False)  # G's step must not update D
        # [ddp] through the unwrapped D: no D gradients are wanted, so DDP must not wait for any
        fake_logits = distributed.unwrap(discriminator)(torch.cat([L, fake_ab], 1))
    opt_g.zero_grad(set_to_none=True)
    if objective is not None:
        g_losses = objective(fake_ab.float(), ab)
    else:
        g_losses = generator_loss(gan_loss, fake_logits, fake_ab.float(), ab, lambda_l1)
    _backward_and_step(g_losses["loss_G"], opt_g, scaler)
    if scaler is not None:
        scaler.update()
    return losses | g_losses


def resumable_state(checkpoint_path: str | Path | None, spec: dict, stage: str, config: TrainConfig,
                    map_location: str | torch.device = "cpu") -> dict | None:
    """The checkpoint `fit(..., resume=True)` would continue from, None if there is no such file.

    Raises (CheckpointError, ValueError) when it belongs to another generator, stage or settings:
    call it for every stage before training, so that a mismatch is reported before hours of work.
    """
    if not checkpoint_path or not Path(checkpoint_path).is_file():
        return None
    state = load_checkpoint(checkpoint_path, expected_spec=spec, map_location=map_location)
    if state["stage"] != stage:
        raise ValueError(f"{checkpoint_path} is a '{state['stage']}' checkpoint, this is the '{stage}' stage")
    _check_same_config(state["config"], asdict(config), checkpoint_path)
    return state


def _backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None):
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)


RESUMABLE_CHANGES = ("epochs", "log_every", "compile")  # may differ between a run and its continuation


def _check_same_config(saved: dict, current: dict, checkpoint_path) -> None:
    """Resuming with other hyper-parameters would silently mix two runs: refuse, naming the differences."""
    def plain(value):  # tuples come back from a checkpoint as lists
        return list(value) if isinstance(value, (tuple, list)) else value

    differences = [f"{key}={saved.get(key)!r} there, {value!r} now" for key, value in current.items()
                   if key not in RESUMABLE_CHANGES and plain(saved.get(key)) != plain(value)]
    if differences:
        raise ValueError(f"cannot resume from {checkpoint_path}: it was trained with other settings "
                         f"({'; '.join(differences)}); use another checkpoint path or resume=False")


def _check_finite(sums: dict[str, torch.Tensor], epoch: int, step: int, checkpoint_path) -> None:
    bad = [k for k, v in sums.items() if not torch.isfinite(v)]
    if bad:
        kept = f"the last good checkpoint is kept at {checkpoint_path}" if checkpoint_path else "no checkpoint was set"
        raise NonFiniteLossError(f"{', '.join(bad)} became NaN/inf by epoch {epoch + 1}, step {step}; {kept}. "
                                 "Try a lower learning rate or check the data.")


def pretrain_generator(generator: nn.Module, loader: DataLoader, epochs: int = 20, lr: float = 1e-4,
                       seed: int = 0, **fit_kwargs) -> History:
    """Stage 1 of the final recipe: L1 loss only, Adam(lr=1e-4) as in the seed."""
    config = TrainConfig(**(PRETRAIN | dict(epochs=epochs, lr_g=lr, seed=seed)))
    return fit(generator, loader, config, **fit_kwargs)


def train_gan(generator: nn.Module, discriminator: nn.Module, loader: DataLoader, config: TrainConfig | None = None,
              **kwargs) -> History:
    """cGAN + lambda * L1 training (the baseline recipe, and stage 2 of the final one)."""
    return fit(generator, loader, config or TrainConfig(), discriminator=discriminator, **kwargs)


__all__ = ["History", "NonFiniteLossError", "TrainConfig", "fit",
           "pretrain_generator", "resumable_state", "set_requires_grad", "train_gan"]
