"""Networks: the two generators, the PatchGAN discriminator, and a builder that records
what it built, so a checkpoint can always be loaded back into the right architecture."""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from .patchgan import PatchDiscriminator, receptive_field
from .resnet_unet import AUTO, IMAGENET, LINEAR, OUTPUTS, TANH, WeightsUnavailableError, resnet18_unet
from .unet import Unet, UnetBlock, shape_trace

ARCHITECTURES = ("baseline", "resnet18")
MAX_UNET_DOWNSAMPLINGS = 8
# The output layer of new resnet18 generators. tanh bounds the predicted ab to the scaled range: unbounded,
# the GAN stage paints saturated blotches beyond the truth's chroma (results/blotches compares the two with
# everything else equal; chapter 7, section 7 reads it). A checkpoint whose spec has no "output" loads as
# the linear network it was trained as.
RESNET18_OUTPUT = TANH


def unet_depth(size: int) -> int:
    """Downsamplings for the baseline U-Net at `size`: 8 at 256 px (1x1 bottleneck), fewer below."""
    check_size(size)
    return min(MAX_UNET_DOWNSAMPLINGS, int(math.log2(size)))


def check_size(size: int) -> None:
    """Both generators halve the image 5 to 8 times: sides must be a power of two, 32..1024."""
    if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 1024 or size & (size - 1):
        raise ValueError(f"size must be a power of two between 32 and 1024 (e.g. 64, 128, 256), got {size!r}")


def generator_spec(arch: str, size: int, output: str | None = None) -> dict:
    """Everything needed to rebuild a generator; stored in every checkpoint.

    `output` (resnet18 only; None = RESNET18_OUTPUT) is recorded as spec["output"] when it is
    "tanh". A spec without the key is the linear output the first resnet18 checkpoints (the
    published ones included) were trained with, so they keep loading as that architecture.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    check_size(size)
    spec = {"arch": arch, "size": size}
    if arch == "baseline":
        if output is not None:
            raise ValueError("the baseline U-Net always ends in tanh; output= applies to 'resnet18' only")
        spec["n_down"] = unet_depth(size)
        return spec
    output = RESNET18_OUTPUT if output is None else output
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
    if output != LINEAR:
        spec["output"] = output
    return spec


def build_generator(arch: str, size: int = 256, weights: str | Path | None = None,
                    output: str | None = None) -> nn.Module:
    """The generator named `arch` for `size` px images, weights initialised as in the reference tutorial.

    The baseline gets N(0, 0.02²) init (standard deviation 0.02); `weights` and `output` apply to "resnet18" only (see
    resnet18_unet and generator_spec).
    """
    spec = generator_spec(arch, size, output)
    if arch == "baseline":
        net = init_weights(Unet(in_channels=1, out_channels=2, n_down=spec["n_down"]))
    else:
        net = resnet18_unet(size=size, weights=weights, output=spec.get("output", LINEAR))
        spec["pretrained"] = net.pretrained  # so a resumed run cannot mix ImageNet and random starts
    net.spec = spec  # read by the trainer and written into every checkpoint
    return net


def generator_from_spec(spec: dict) -> nn.Module:
    """The architecture a checkpoint's spec records, randomly initialised (its weights come next).

    A resnet18 spec without "output" is the old linear network, whatever RESNET18_OUTPUT says now;
    one with "hints" takes colour hints besides L (colorlab.hints).
    """
    if spec.get("hints"):
        from ..hints import hint_generator_from_spec

        return hint_generator_from_spec(spec)
    output = spec.get("output", LINEAR) if spec["arch"] == "resnet18" else None
    return build_generator(spec["arch"], spec["size"], weights=None, output=output)


def build_discriminator() -> nn.Module:
    """PatchGAN on concat(L, ab) with N(0, 0.02²) init (standard deviation 0.02)."""
    return init_weights(PatchDiscriminator(in_channels=3, n_layers=3))


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix init: conv weights ~ N(0, gain), BatchNorm scale ~ N(1, gain), biases 0."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


__all__ = [
    "ARCHITECTURES", "AUTO", "IMAGENET", "LINEAR", "OUTPUTS", "PatchDiscriminator", "RESNET18_OUTPUT", "TANH",
    "Unet", "UnetBlock", "WeightsUnavailableError", "build_discriminator", "build_generator", "check_size",
    "count_parameters", "generator_from_spec", "generator_spec", "init_weights", "receptive_field", "resnet18_unet",
    "shape_trace", "unet_depth",
]
