"""What training on many GPUs would cost: measured FLOPs per image, and wall-clock from stated assumptions.

The appendix "Training on many GPUs" computes its table here. Only the FLOPs are measured (by
`torch.utils.flop_counter.FlopCounterMode`, from the shapes alone: a FLOP count does not depend
on the device). The GPU's throughput, its utilisation and the
scaling efficiency across GPUs are *assumptions*, passed in by the caller and printed with the
table, because no GPU measured them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import build_generator
from .stages import build_stage, stage_config

COCO_TRAIN_IMAGES = 118_287  # COCO 2017 train split (Lin et al. 2014; cocodataset.org's train2017 has 118,287 images)


def step_flops(size: int, gan: bool, batch_size: int = 2, device: str | torch.device = "meta",
               arch: str = "resnet18") -> float:
    """FLOPs of one training step per image, forward and backward, for the generator `arch` (the
    ResNet18-UNet by default; "baseline" is the pix2pix U-Net) with the PatchGAN's two steps when
    `gan`, at `size` px: what the reference recipe runs at every step. The GPU run's model FLOP
    utilisation (benchmarks/throughput.py) divides the measured images/s times this by the GPU's peak.

    Counted on PyTorch's "meta" device by default: tensors there have shapes but no values, so no
    arithmetic runs and 256 px costs no more than 32 px; the count is the one a real device gives
    (tests/test_scaling.py compares it with the CPU's). The optimizer's element-wise update is not
    counted (FlopCounterMode counts matrix products and convolutions, nearly all of the work).
    """
    torch.manual_seed(0)
    generator = build_generator(arch, size, weights=None)  # built on the CPU (fastai runs it once)
    name = "gan" if gan else "pretrain"
    stage = build_stage(name, generator, stage_config(name, epochs=1)).to(torch.device(device))
    L, ab = (torch.rand(batch_size, channels, size, size, device=device) * 2 - 1 for channels in (1, 2))
    with FlopCounterMode(display=False) as counter:
        stage.step(L, ab)
    return counter.get_total_flops() / batch_size


@dataclass(frozen=True)
class Assumptions:
    """What the wall-clock table assumes, not measures: one GPU's peak, the fraction of it a training
    step reaches, and the fraction of linear speed-up kept at each number of GPUs."""

    gpu: str
    peak_flops: float  # per second, dense (no sparsity), in the training precision
    utilisation: float
    efficiency: dict[int, float]  # number of GPUs -> fraction of linear speed-up


def wallclock_hours(flops_per_image: dict[str, float], epochs: dict[str, int], n_images: int,
                    assumptions: Assumptions) -> list[dict]:
    """One row per number of GPUs: the hours of the recipe (stages `epochs`, FLOPs per image of each)."""
    total = sum(flops_per_image[stage] * epochs[stage] * n_images for stage in epochs)
    rows = []
    for gpus, efficiency in assumptions.efficiency.items():
        per_second = gpus * assumptions.peak_flops * assumptions.utilisation * efficiency
        rows.append({"GPUs": gpus, "scaling efficiency (assumed)": efficiency,
                     "PFLOP in total": total / 1e15, "hours": total / per_second / 3600})
    return rows


__all__ = ["Assumptions", "COCO_TRAIN_IMAGES", "step_flops", "wallclock_hours"]
