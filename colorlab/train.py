"""The training loop: one `fit` for every stage (`colorlab.stages`: L1 pretraining, cGAN, classification).

`fit` is only the loop: what a stage trains and how it steps is the stage object's business.
Its guarantees, beyond the reference tutorial's recipe:
- resumable: a checkpoint (atomic) after every epoch and when interrupted (Ctrl-C or
  SIGTERM, at the next step boundary); `resume=True` continues bit-identically on the CPU,
  because data order and flips depend only on (seed, epoch, sample position) and all RNGs are
  saved (and restored after the resumed epoch's DataLoader iterator has drawn its seed);
- scalable: the same loop runs under torchrun on several GPUs or nodes (DistributedDataParallel);
  the lines marked `# [ddp]` call colorlab.distributed, and do nothing in a single process;
- fast: Lab conversion and flips on the device; on CUDA, mixed precision chosen per GPU
  (`colorlab.runtime.precision_policy`: bf16, or fp16 + GradScaler), channels_last and fused
  Adam; losses summed on the device and read back only every `log_every` steps,
  optionally (`compile=True`) the stage's networks compiled with torch.compile;
- safe: a NaN/inf loss stops training with a clear error and keeps the last good checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm  # plain text bars: notebooks without ipywidgets too

from . import distributed
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .data import epoch_positions, flip_mask, to_model_batch
from .runtime import announce, pick_device, precision_policy
from .stages import Stage, TrainConfig


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the last good checkpoint is left untouched."""


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


def fit(
    stage: Stage,
    loader: DataLoader,
    device: str | torch.device = "auto",
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    sync_bn: bool | None = None,
    epoch_lines: bool = True,
) -> History:
    """Train `stage` (`colorlab.stages`) on `loader` (uint8 RGB batches) for `stage.config.epochs` epochs.

    Returns the per-epoch history. With `checkpoint_path`, saves after every epoch and
    on interruption; `resume=True` continues from that file if it exists.

    Under torchrun, each process trains on its share of every global batch (the loader's
    batch_size is the per-process batch) and `sync_bn` (None: `distributed.use_sync_bn`'s rule)
    makes BatchNorm use the global batch's statistics. Rank 0 writes the checkpoint; the returned
    history holds the losses averaged over the ranks.

    `progress` shows a bar per epoch (cleared when the epoch ends); `epoch_lines` prints one line
    per epoch that stays (`epoch_line`): a notebook whose bars are off, e.g. a chapter in Colab,
    is never silent for an epoch longer than one takes.
    """
    config = stage.config
    ddp, device = distributed.setup(pick_device(device))  # [ddp] process group from torchrun's environment
    cuda = device.type == "cuda"
    precision = precision_policy(device)
    if ddp.is_main:  # [ddp] one line per run, not per process
        announce(precision)
    scaler = precision.grad_scaler()
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    stage.to(device, memory_format)

    history, start_epoch, start_step, start_sample, partial, rng = History(), 0, 0, 0, {}, None
    if resume and (state := resumable_state(checkpoint_path, stage.generator.spec, stage.name, config,
                                            map_location=device)):
        stage.load_state_dict(state)
        history = History(state["history"])
        start_epoch, start_step, partial, rng = state["epoch"], state["step"], state["partial"], state["rng"]
        start_sample = state.get("samples", start_step * loader.batch_size)  # [ddp] global position in the epoch
        restore_rng(rng)

    def checkpoint(epoch: int, step: int, samples: int, sums: dict[str, torch.Tensor]) -> None:
        if checkpoint_path is None:
            return
        sums = distributed.reduce_mean(sums, ddp)  # [ddp] every rank resumes from the ranks' mean
        distributed.on_main(ddp, save_checkpoint, checkpoint_path, {  # [ddp] rank 0 writes, the others wait
            "spec": stage.generator.spec, "stage": stage.name, "config": asdict(config), "epoch": epoch,
            "step": step, "samples": samples, "partial": {k: v.detach().cpu() for k, v in sums.items()},
            **stage.state_dict(),
            "history": history.epochs, "rng": capture_rng(),
        })

    # compile=True compiles the networks (forward and backward), not the step: backward(),
    # zero_grad() and requires_grad_() break a compiled step into pieces, and the optimizers'
    # identity would be guarded on.
    sync = distributed.use_sync_bn(loader.batch_size, sync_bn)  # [ddp]
    stage.wrap(lambda net: distributed.wrap(net, ddp, device, sync))  # [ddp] DDP wrappers
    if config.compile:
        stage.wrap(torch.compile)
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
            bar = tqdm(batches, desc=f"{stage.name} epoch {epoch + 1}/{config.epochs}",
                       disable=not (progress and ddp.is_main),  # [ddp] one bar, rank 0's
                       initial=first_step, total=first_step + len(loader), leave=False)
            step = first_step
            for step, rgb in enumerate(bar, start=first_step + 1):
                taken = (step - first_step - 1) * loader.batch_size
                flip = flip_mask(config.seed, epoch, positions[taken:taken + len(rgb)])
                L, ab = to_model_batch(rgb, device, flip=flip)
                if cuda:
                    L, ab = (t.contiguous(memory_format=torch.channels_last) for t in (L, ab))
                stage.at(epoch, positions[taken:taken + len(rgb)])
                with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.autocast):
                    losses = stage.step(L, ab, scaler)
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
            seconds = time.perf_counter() - began
            history.append(means | {"seconds": seconds})
            checkpoint(epoch + 1, 0, 0, {})
            if epoch_lines and ddp.is_main:  # [ddp] one line per epoch, rank 0's
                images = min((step - first_step) * global_batch, len(loader.dataset) - epoch_start)
                print(epoch_line(stage.name, epoch + 1, config.epochs, means, images, seconds), flush=True)
    stage.finish()
    return history


def epoch_line(stage: str, epoch: int, epochs: int, losses: dict[str, float], images: int, seconds: float) -> str:
    """One line about a finished epoch: its losses, images per second, and the time the remaining epochs will take."""
    left = (epochs - epoch) * seconds
    shown = ", ".join(f"{key} {value:.4f}" for key, value in losses.items())
    return (f"{stage} epoch {epoch}/{epochs}: {shown}; {images / max(seconds, 1e-9):.1f} images/s; "
            f"{seconds:.0f} s, about {left:.0f} s left")


def resumable_state(checkpoint_path: str | Path | None, spec: dict, stage: str, config: TrainConfig,
                    map_location: str | torch.device = "cpu") -> dict | None:
    """The checkpoint `fit(...)` of `stage` (a name) would resume, None if there is no such file.

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


__all__ = ["History", "NonFiniteLossError", "epoch_line", "fit", "loss_figure", "resumable_state"]
