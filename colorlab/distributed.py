"""Training on several processes — GPUs, nodes, or CPU cores — with torchrun and DistributedDataParallel.

`colorlab.train.fit` runs unchanged under PyTorch's launcher:

    torchrun --standalone --nproc_per_node 8 -m colorlab train --recipe resnet18 --data coco

(`colorlab train --nproc 8` runs that line for you). Each process trains on its own slice of
every global batch (`colorlab.data.EpochSampler.shard`) and DDP averages the gradients. Each rank's
loss is the mean over its b images, so the average of the ranks' gradients is the gradient of the
mean over all world_size * b images: the global batch's loss, as one process with that batch
would compute it. This module holds every piece of that, as small functions `fit` calls at marked
places: the process group from torchrun's environment (`setup`), the DDP wrapper with optional
synchronised BatchNorm (`wrap`, `unwrap`), losses averaged over ranks (`reduce_mean`), one stop
decision for all ranks (`stop_agreed`), and files written by rank 0 only (`on_main`).

Without torchrun (no WORLD_SIZE in the environment, or 1) every function is a no-op: one process.

Joining waits at most `RENDEZVOUS_TIMEOUT_S` (120 s; `$COLORLAB_RENDEZVOUS_TIMEOUT` changes it) for
the other ranks, then stops with one line naming who is missing (torch would wait 30 minutes,
silently). Once joined, a collective may wait `COLLECTIVE_TIMEOUT_S`: rank 0 alone builds the image
cache while the others wait at a barrier, which takes minutes on a large data set.
"""

from __future__ import annotations

import atexit
import datetime
import inspect
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .data import EpochSampler

T = TypeVar("T")

# SyncBatchNorm is on by default below this per-process batch: the reference tutorial trains with
# batch 16, so with fewer images per process, BatchNorm's per-process statistics would be noisier
# than the recipe's (8 GPUs sharing its batch of 16 would normalise over 2 images each). Synced, they
# are the statistics of the whole global batch, exactly as one process with that batch computes
# them. From 16 images per process on, local statistics are as good as the reference's and the extra
# all-reduce per BatchNorm layer is not worth its time.
SYNC_BN_BELOW = 16
RENDEZVOUS_TIMEOUT_S = 120.0
COLLECTIVE_TIMEOUT_S = 30 * 60.0  # torch's own default for gloo and NCCL


class RendezvousError(ConnectionError):
    """The processes of a distributed run did not all meet (a peer never started, a wrong address)."""


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank among `world_size` processes, and its GPU on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the files and shows the progress bars."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group that torchrun describes in the environment; (Dist, this rank's device).

    NCCL on CUDA (each process takes GPU LOCAL_RANK of its node), gloo on the CPU. A group that
    is already initialised (a second stage in the same process, a test) is joined as it is.
    """
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Dist(), device
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        _join("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_teardown)
    here = current()
    if device.type == "cuda":
        device = torch.device("cuda", here.local_rank)
    return here, device


def _join(backend: str) -> None:
    """Join the process group of torchrun's environment, all ranks within the rendezvous timeout.

    Waits at most `$COLORLAB_RENDEZVOUS_TIMEOUT` (default `RENDEZVOUS_TIMEOUT_S`) seconds for the
    other ranks, then raises `RendezvousError` naming what is missing; once joined, collectives
    get `COLLECTIVE_TIMEOUT_S`.
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), os.environ.get("MASTER_PORT", "29500")
    seconds = float(os.environ.get("COLORLAB_RENDEZVOUS_TIMEOUT", RENDEZVOUS_TIMEOUT_S))
    try:
        with _cpp_log_held_back():
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    except (RuntimeError, OSError) as err:  # DistStoreError, DistNetworkError
        hosts = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"  # else torchrun's agent
        missing = f"the other {world_size - 1} rank(s) did not all join" if hosts else "rank 0 did not answer"
        raise RendezvousError(f"rank {rank} of {world_size}: {missing} at {host}:{port} (MASTER_ADDR:MASTER_PORT) "
                              f"within {seconds:g} s; start every rank with the same MASTER_ADDR, MASTER_PORT and "
                              "WORLD_SIZE, or let `colorlab ... --nproc N` (torchrun) start them; "
                              f"$COLORLAB_RENDEZVOUS_TIMEOUT sets the wait ({' '.join(str(err).split())[:100]})"
                              ) from None
    set_timeout = getattr(dist, "set_timeout", None) or dist.distributed_c10d._set_pg_timeout  # torch < 2.10
    set_timeout(datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))


@contextmanager
def _cpp_log_held_back() -> Iterator[None]:
    """Hold back what torch's C++ side writes to stderr (fd 2) in the block; repeat it unless the block fails.

    A client that cannot reach rank 0 logs each retry with a 30-frame C++ stack trace before the
    Python exception that `_rendezvous` turns into one line; after a successful join, nothing is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)  # reached only when the block succeeded
        os.write(2, held.read())


def current() -> Dist:
    """This process's place in the initialised process group; rank 0 of 1 when there is none."""
    if not dist.is_initialized():
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def on_main(d: Dist, write: Callable[..., T], *args, **kwargs) -> T | None:
    """Run `write` on rank 0 only, then wait until it is done everywhere: one set of files, complete
    before any rank reads it or goes on."""
    result = write(*args, **kwargs) if d.is_main else None
    barrier(d)
    return result


def main_first(d: Dist, make: Callable[..., T], *args, **kwargs) -> T:
    """`make()` on rank 0, then on the other ranks: for a step that writes shared files (the image
    cache, the offline photos) that the other ranks then only read."""
    if d.is_main:
        result = make(*args, **kwargs)
    barrier(d)
    return result if d.is_main else make(*args, **kwargs)


def reduce_mean(values: dict[str, torch.Tensor], d: Dist) -> dict[str, torch.Tensor]:
    """The ranks' average of each value (e.g. loss sums), the same on every rank; a new dict."""
    if not d.enabled or not values:
        return dict(values)
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / d.world_size))


def stop_agreed(stop: bool, d: Dist, device: torch.device, compare: bool = True) -> bool:
    """True on every rank when any rank asks to stop (a SIGTERM may reach one process, not all).

    A single process stops at once. Ranks compare their flags only where `compare` is True (fit:
    every `log_every` steps, where it reads the losses back anyway: on GPUs the comparison waits for
    the device), so all ranks stop after the same step and save one consistent checkpoint; a rank
    that stopped alone would leave the others waiting in their next all-reduce forever.
    """
    if not d.enabled:
        return stop
    if not compare:
        return False
    flag = torch.tensor([float(stop)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def shard(loader: DataLoader, d: Dist) -> None:
    """Make `loader` yield this rank's slice of every global batch (`EpochSampler.shard`)."""
    if not d.enabled:
        return
    if not isinstance(loader.sampler, EpochSampler):
        raise ValueError("training on several processes needs a loader from colorlab.data.make_loader "
                         "(its EpochSampler gives each rank its share of the data)")
    loader.sampler.shard(d.rank, d.world_size, loader.batch_size, loader.drop_last)


def use_sync_bn(batch_size: int, sync_bn: bool | None = None) -> bool:
    """`sync_bn`, or when None: on for per-process batches below SYNC_BN_BELOW (see there why)."""
    return batch_size < SYNC_BN_BELOW if sync_bn is None else sync_bn


def wrap(net: nn.Module, d: Dist, device: torch.device, sync_bn: bool) -> nn.Module:
    """`net` in DistributedDataParallel (itself when not distributed); checkpoints keep saving `net`.

    With `sync_bn`, its BatchNorm layers normalise over the global batch: torch's SyncBatchNorm on
    GPUs, `AllReduceBatchNorm` on the CPU (torch's refuses CPU tensors). Buffers are not broadcast
    at each forward: synced running statistics are equal on all ranks anyway, unsynced ones only
    matter in eval mode, where rank 0's (saved in the checkpoint) are the ones used.
    """
    if not d.enabled:
        return net
    if sync_bn:
        convert_batchnorm(net, device)
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                   **_NO_BUFFER_SYNC)


# torch 2.14 renamed DDP's broadcast_buffers (now deprecated) to forward_sync_buffers; colorlab supports torch >= 2.4
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


def unwrap(net: nn.Module | None) -> nn.Module | None:
    """The module inside a DDP wrapper (compiled or not), for a forward pass whose gradients DDP must not
    average: the discriminator in the generator's step."""
    inner = getattr(net, "_orig_mod", net)  # torch.compile's wrapper
    return inner.module if isinstance(inner, DistributedDataParallel) else net


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over all ranks; its gradient is the sum of the ranks' gradients (the loss
    being the sum of the ranks' losses, each rank's input reaches every rank's loss through it)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class AllReduceBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, with all-reduce (any backend).

    The CPU stand-in for torch's SyncBatchNorm, which requires GPU tensors. Mean and variance are
    computed in two passes (sum, then sum of squared deviations) through a differentiable all-reduce
    (`_SumOverRanks`), so the backward pass sums the gradients of the statistics over the ranks, as
    SyncBatchNorm does. In eval mode, or in a single process, it is
    plain BatchNorm2d; it has the same parameters and buffers, so checkpoints do not change.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = count.item()
        mean = _SumOverRanks.apply(x.sum((0, 2, 3))) / n
        centred = x - mean[None, :, None, None]
        var = _SumOverRanks.apply((centred * centred).sum((0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), momentum)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def convert_batchnorm(net: nn.Module, device: torch.device) -> None:
    """Make `net`'s BatchNorm layers synchronised, in place (parameters and buffers are kept)."""
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(net)  # replaces the BatchNorm children in place
        return
    for module in net.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = AllReduceBatchNorm  # a subclass adding no state: a safe in-place swap


TORCHRUN = "from colorlab.distributed import torchrun; import sys; sys.exit(torchrun(sys.argv[1:]))"


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The launcher line for `colorlab ARGV` on `nproc` processes of this machine: torchrun, via `torchrun`."""
    return [sys.executable, "-c", TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "colorlab", *argv]


def torchrun(args: list[str]) -> int:
    """torchrun (`python -m torch.distributed.run ARGS`), with a rank's failure reported in one line.

    torchrun itself reports a rank killed by a signal (SIGKILL, the out-of-memory killer) with its
    own traceback and a 30-line table; here it is one line naming the rank, its process and the
    signal or exit code. The ranks' own output (progress bars, their one-line errors) is unchanged.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its log lines repeat the failure
    os.environ[LAUNCHER_PID] = str(os.getpid())  # the ranks inherit it: `launcher_reports`
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        print(f"colorlab: rank {rank} (process {failure.pid}) {how}; torchrun stopped the other ranks "
              "(for `train`, the same command with --resume continues from the last checkpoint)", file=sys.stderr)
        return 1
    return 0


LAUNCHER_PID = "COLORLAB_LAUNCHER_PID"


def launcher_reports() -> bool:
    """True in a rank started by `torchrun` (this module's) whose launcher still runs: it reports a lost rank.

    A rank that loses contact with a killed one then stays silent, so that the job ends with the
    launcher's one line instead of one more per surviving rank. Under a plain `torchrun`, or once
    the launcher itself is gone, the rank says what happened itself.
    """
    return os.environ.get(LAUNCHER_PID, "") == str(os.getppid())


def lost_a_rank(err: BaseException) -> bool:
    """True for the error a rank gets when another rank of its job died (gloo/NCCL connection closed or reset)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    return isinstance(err, getattr(dist, "DistError", ())) or any(
        word in str(err) for word in ("gloo", "NCCL", "Connection closed", "Connection reset"))


def launch(nproc: int, argv: list[str]) -> None:
    """Replace this process by torchrun running `colorlab ARGV` on `nproc` processes (`--nproc`).

    torchrun then receives the signals (Ctrl-C, SIGTERM) and forwards them to every rank.
    """
    command = torchrun_command(nproc, argv)
    print("running: torchrun " + " ".join(command[3:]), file=sys.stderr, flush=True)
    os.execv(command[0], command)


__all__ = ["AllReduceBatchNorm", "Dist", "RendezvousError", "SYNC_BN_BELOW", "barrier", "convert_batchnorm", "current", "launch", "main_first",
           "on_main",
           "reduce_mean", "lost_a_rank", "setup", "shard", "stop_agreed", "torchrun", "torchrun_command", "unwrap", "use_sync_bn", "wrap"]
