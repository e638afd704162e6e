"""The pix2pix PatchGAN discriminator.

Instead of one real/fake verdict per image it outputs a grid of logits, one per
overlapping 70x70 patch (30x30 of them at 256 px), so it judges local texture and colour
and leaves global structure to the L1 term.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(in_ch: int, out_ch: int, stride: int, norm: bool = True, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=stride, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    if act:
        layers.append(nn.LeakyReLU(0.2))
    return layers


class PatchDiscriminator(nn.Module):
    """PatchGAN on concat(L, ab): 3 channels in, a map of patch logits out (no sigmoid)."""

    def __init__(self, in_channels: int = 3, num_filters: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers = _conv_block(in_channels, num_filters, stride=2, norm=False)
        for i in range(n_layers):  # the last of these keeps the resolution (stride 1)
            stride = 1 if i == n_layers - 1 else 2
            layers += _conv_block(num_filters * 2**i, num_filters * 2 ** (i + 1), stride=stride)
        layers += _conv_block(num_filters * 2**n_layers, 1, stride=1, norm=False, act=False)
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def receptive_field(n_layers: int = 3) -> int:
    """Side of the input patch that one output logit sees (70 for the default 3 layers)."""
    kernels_strides = [(4, 2)] + [(4, 1 if i == n_layers - 1 else 2) for i in range(n_layers)] + [(4, 1)]
    field = 1
    for kernel, stride in reversed(kernels_strides):
        field = (field - 1) * stride + kernel
    return field
