"""Where the work runs: the device and the numeric precision of training.

`pick_device("auto")` takes CUDA, then Apple's MPS (students on MacBooks), then the CPU.
`precision_policy(device)` decides how `colorlab.train.fit` runs its forward passes:

- CUDA with compute capability >= 8.0 (A100, H100, RTX 30xx and later): bf16 autocast. These
  GPUs compute bf16 natively, and bf16 has fp32's exponent range, so no loss scaling is needed;
- older CUDA GPUs (Colab's free T4 is 7.5, V100 is 7.0): fp16 autocast with a GradScaler. bf16
  is emulated there and slower than fp16, whose narrow range needs the loss scaled so that small
  gradients do not underflow to zero;
- CPU and MPS: fp32. Autocast would only add casts there (CPU bf16 is slower than fp32 on most
  laptops, and MPS autocast support varies between torch releases).

`announce(policy)` prints the choice once per process and policy, so a chapter that trains
several stages says it once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere: the first CUDA generation with bf16 tensor cores


def mps_available() -> bool:
    """Apple's Metal GPU backend is built into this torch and usable on this machine."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA, else MPS, else CPU; an explicit device is checked to exist here.

    Raises RuntimeError (one line, with the alternatives) for a GPU this machine lacks, and
    ValueError for a string torch does not know as a device.
    """
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={str(device)!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'") \
            from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but no CUDA GPU is available; use device='auto' or 'cpu'")
    if device.type == "mps" and not mps_available():
        raise RuntimeError("device='mps' was asked for but Apple's MPS backend is not available; "
                           "use device='auto' or 'cpu'")
    return device


@dataclass(frozen=True)
class PrecisionPolicy:
    """How one training run computes: autocast dtype (None: plain fp32) and whether gradients are scaled."""

    device_type: str
    dtype: torch.dtype | None
    grad_scaling: bool
    reason: str

    @property
    def autocast(self) -> bool:
        return self.dtype is not None

    def describe(self) -> str:
        name = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(self.dtype, "fp32")
        scaling = " + GradScaler" if self.grad_scaling else ""
        return f"precision on {self.device_type}: {name}{scaling} ({self.reason})"

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A fresh GradScaler for this device when the policy scales gradients, else None."""
        return torch.amp.GradScaler(self.device_type) if self.grad_scaling else None


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) compute capability of a CUDA device (a separate function so tests can mock it)."""
    return torch.cuda.get_device_capability(device)


def precision_policy(device: str | torch.device) -> PrecisionPolicy:
    """The precision of training on `device`: see the module docstring for the rules and why."""
    device = torch.device(device)
    if device.type != "cuda":
        return PrecisionPolicy(device.type, None, False, f"no autocast on {device.type}")
    capability = cuda_capability(device)
    shown = "{}.{}".format(*capability)
    if tuple(capability) >= NATIVE_BF16_CAPABILITY:
        return PrecisionPolicy("cuda", torch.bfloat16, False, f"compute capability {shown} has native bf16")
    return PrecisionPolicy("cuda", torch.float16, True, f"compute capability {shown} < 8.0 emulates bf16")


_announced: set[PrecisionPolicy] = set()


def announce(policy: PrecisionPolicy) -> None:
    """Print `policy` the first time this process trains with it, and never again."""
    if policy not in _announced:
        _announced.add(policy)
        print(policy.describe(), flush=True)


__all__ = ["PrecisionPolicy", "announce", "cuda_capability", "mps_available", "pick_device", "precision_policy"]
