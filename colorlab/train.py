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
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm  # plain text bars: notebooks without ipywidgets too

from . import distributed
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .data import epoch_positions, flip_mask, to_model_batch
from .runs import spec_differences
from .runtime import PrecisionPolicy, announce, pick_device, precision_policy
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


@dataclass
class ResumePoint:
    """Where `fit` starts an epoch: at its beginning, or where an interrupted run's checkpoint left it."""

    epoch: int = 0
    step: int = 0  # steps of the epoch already taken
    samples: int = 0  # [ddp] the global sample position those steps reached in the epoch's order
    partial: dict[str, torch.Tensor] = field(default_factory=dict)  # their loss sums
    rng: dict | None = None  # the RNG state to restore once the epoch's DataLoader iterator has drawn its seed

    @classmethod
    def from_checkpoint(cls, state: dict, batch_size: int) -> "ResumePoint":
        return cls(state["epoch"], state["step"], state.get("samples", state["step"] * batch_size), state["partial"],
                   state["rng"])


@dataclass
class _Loop:
    """What every epoch of one `fit` call shares: where it runs and where it saves."""

    stage: Stage
    loader: DataLoader
    ddp: distributed.Dist
    device: torch.device
    precision: PrecisionPolicy
    scaler: torch.amp.GradScaler | None
    checkpoint_path: str | Path | None
    progress: bool
    run_spec: dict | None  # the run's specification (colorlab.runs.RunSpec), stored in every checkpoint

    @property
    def global_batch(self) -> int:
        return self.loader.batch_size * self.ddp.world_size  # [ddp]

    def save(self, point: ResumePoint, history: History) -> None:
        """Checkpoint the stage at `point` (rank 0 writes; every rank resumes from the ranks' mean loss sums)."""
        if self.checkpoint_path is None:
            return
        sums = distributed.reduce_mean(point.partial, self.ddp)  # [ddp]
        distributed.on_main(self.ddp, save_checkpoint, self.checkpoint_path, {  # [ddp] rank 0 writes, the others wait
            "spec": self.stage.generator.spec, "stage": self.stage.name, "config": asdict(self.stage.config),
            "epoch": point.epoch, "step": point.step, "samples": point.samples,
            "partial": {k: v.detach().cpu() for k, v in sums.items()}, **self.stage.state_dict(),
            "history": history.epochs, "rng": capture_rng(),
        } | ({"run": dict(self.run_spec)} if self.run_spec is not None else {}))


def fit(
    stage: Stage,
    loader: DataLoader,
    device: str | torch.device = "auto",
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    sync_bn: bool | None = None,
    epoch_lines: bool = True,
    ddp: distributed.Dist | None = None,
    run_spec: Mapping | None = None,
) -> History:
    """Train `stage` (`colorlab.stages`) on `loader` (uint8 RGB batches) for `stage.config.epochs` epochs.

    Returns the per-epoch history. With `checkpoint_path`, saves after every epoch and
    on interruption; `resume=True` continues from that file if it exists.

    Under torchrun, each process trains on its share of every global batch (the loader's
    batch_size is the per-process batch) and `sync_bn` (None: `distributed.use_sync_bn`'s rule)
    makes BatchNorm use the global batch's statistics. Rank 0 writes the checkpoint; the returned
    history holds the losses averaged over the ranks. `ddp` is the process group's `Dist` when the
    caller has resolved it (`distributed.setup`) and `device` is then this rank's device.
    `run_spec`, the run's specification (`colorlab.runs.RunSpec` as a dict), is stored in every
    checkpoint; resuming from a checkpoint of another specification is refused, naming the differences.

    `progress` shows a bar per epoch (cleared when the epoch ends); `epoch_lines` prints one line
    per epoch that stays (`epoch_line`): a notebook whose bars are off, e.g. a chapter in Colab,
    is never silent for an epoch longer than one takes.
    """
    config = stage.config
    if ddp is None:  # [ddp] process group from torchrun's environment
        ddp, device = distributed.setup(pick_device(device))
    precision = precision_policy(torch.device(device))
    if ddp.is_main:  # [ddp] one line per run, not per process
        announce(precision)
    loop = _Loop(stage, loader, ddp, torch.device(device), precision, precision.grad_scaler(), checkpoint_path,
                 progress, None if run_spec is None else dict(run_spec))
    stage.to(loop.device, torch.channels_last if loop.device.type == "cuda" else torch.contiguous_format)

    history, start = History(), ResumePoint()
    if resume and (state := resumable_state(checkpoint_path, stage.generator.spec, stage.name, config,
                                            map_location=loop.device, run_spec=run_spec)):
        stage.load_state_dict(state)
        history, start = History(state["history"]), ResumePoint.from_checkpoint(state, loader.batch_size)
        restore_rng(start.rng)

    # compile=True compiles the networks (forward and backward), not the step: backward(),
    # zero_grad() and requires_grad_() break a compiled step into pieces, and the optimizers'
    # identity would be guarded on.
    sync = distributed.use_sync_bn(loader.batch_size, sync_bn)  # [ddp]
    stage.wrap(lambda net: distributed.wrap(net, ddp, loop.device, sync))  # [ddp] DDP wrappers
    if config.compile:
        stage.wrap(torch.compile)
    distributed.shard(loader, ddp)  # [ddp] each rank its slice of every global batch
    with _stop_on_signals() as stop:
        for epoch in range(start.epoch, config.epochs):
            point = start if epoch == start.epoch else ResumePoint(epoch)
            began = time.perf_counter()
            sums, step = _train_epoch(loop, point, history, stop)
            sums = distributed.reduce_mean(sums, ddp)  # [ddp] the history holds the ranks' mean
            _check_finite(sums, epoch, step, checkpoint_path)
            means = {k: v.item() / max(step, 1) for k, v in sums.items()}
            seconds = time.perf_counter() - began
            history.append(means | {"seconds": seconds})
            loop.save(ResumePoint(epoch + 1), history)
            if epoch_lines and ddp.is_main:  # [ddp] one line per epoch, rank 0's
                images = min((step - point.step) * loop.global_batch, len(loader.dataset) - point.samples)
                print(epoch_line(stage.name, epoch + 1, config.epochs, means, images, seconds), flush=True)
    stage.finish()
    return history


def _train_epoch(loop: _Loop, point: ResumePoint, history: History, stop: dict) -> tuple[dict[str, torch.Tensor], int]:
    """The steps of `point.epoch` from `point` on: (the loss sums of the epoch's steps, the number of its last step).

    Flips and per-photo draws follow each photo's place in the epoch's global order, not the rank
    or the step. A stop request (Ctrl-C, SIGTERM) saves a checkpoint after the step and raises
    KeyboardInterrupt.
    """
    stage, loader, ddp, device, config = loop.stage, loop.loader, loop.ddp, loop.device, loop.stage.config
    sums = {k: v.to(device) for k, v in point.partial.items()}
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(point.epoch, start=point.samples)
    positions = epoch_positions(loader)  # [ddp] flips follow the sample's place in the epoch, not the rank
    batches = iter(loader)  # draws a base seed from the global torch RNG, even with 0 workers
    if point.step:
        # The interrupted run had drawn that seed before the checkpoint's RNG state was
        # taken: drawing it again would shift every Dropout mask after the resume.
        restore_rng(point.rng)
    bar = tqdm(batches, desc=f"{stage.name} epoch {point.epoch + 1}/{config.epochs}",
               disable=not (loop.progress and ddp.is_main),  # [ddp] one bar, rank 0's
               initial=point.step, total=point.step + len(loader), leave=False)
    step = point.step
    for step, rgb in enumerate(bar, start=point.step + 1):
        taken = (step - point.step - 1) * loader.batch_size
        mine = positions[taken:taken + len(rgb)]
        L, ab = to_model_batch(rgb, device, flip=flip_mask(config.seed, point.epoch, mine))
        if device.type == "cuda":
            L, ab = (t.contiguous(memory_format=torch.channels_last) for t in (L, ab))
        stage.at(point.epoch, mine)
        with torch.autocast(device.type, dtype=loop.precision.dtype, enabled=loop.precision.autocast):
            losses = stage.step(L, ab, loop.scaler)
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float()
        if step % config.log_every == 0:
            logged = distributed.reduce_mean(sums, ddp)  # [ddp] the ranks' mean, and NaN stops all
            _check_finite(logged, point.epoch, step, loop.checkpoint_path)
            bar.set_postfix({k: f"{v.item() / step:.4f}" for k, v in logged.items()})
        if distributed.stop_agreed(stop["stop"], ddp, device, step % config.log_every == 0):  # [ddp]
            position = point.samples + (step - point.step) * loop.global_batch
            loop.save(ResumePoint(point.epoch, step, min(position, len(loader.dataset)), sums), history)
            raise KeyboardInterrupt(f"training interrupted at epoch {point.epoch + 1}, step {step}; "
                                    f"resume with resume=True from {loop.checkpoint_path}")
    return sums, step


def epoch_line(stage: str, epoch: int, epochs: int, losses: dict[str, float], images: int, seconds: float) -> str:
    """One line about a finished epoch: its losses, images per second, and the time the remaining epochs will take."""
    left = (epochs - epoch) * seconds
    shown = ", ".join(f"{key} {value:.4f}" for key, value in losses.items())
    return (f"{stage} epoch {epoch}/{epochs}: {shown}; {images / max(seconds, 1e-9):.1f} images/s; "
            f"{seconds:.0f} s, about {left:.0f} s left")


def resumable_state(checkpoint_path: str | Path | None, spec: dict, stage: str, config: TrainConfig,
                    map_location: str | torch.device = "cpu", run_spec: Mapping | None = None) -> dict | None:
    """The checkpoint `fit(...)` of `stage` (a name) would resume, None if there is no such file.

    Raises (CheckpointError, ValueError) when it belongs to another generator, stage, settings or run
    specification (`run_spec`, compared when both the checkpoint and the caller have one):
    call it for every stage before training, so that a mismatch is reported before hours of work.
    """
    if not checkpoint_path or not Path(checkpoint_path).is_file():
        return None
    state = load_checkpoint(checkpoint_path, expected_spec=spec, map_location=map_location)
    if state["stage"] != stage:
        raise ValueError(f"{checkpoint_path} is a '{state['stage']}' checkpoint, this is the '{stage}' stage")
    _check_same_config(state["config"], asdict(config), checkpoint_path)
    if run_spec is not None and "run" in state and (differences := spec_differences(state["run"], run_spec)):
        raise ValueError(f"cannot resume from {checkpoint_path}: it belongs to another run ({'; '.join(differences)}); "
                         "use another checkpoint path or resume=False")
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
