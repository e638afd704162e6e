"""The pix2pix U-Net generator ("baseline"), built recursively from the inside out.

Each `UnetBlock` halves the image on the way down, runs its inner block, doubles it on the
way up and concatenates its own input (the skip connection), so fine detail from early
layers reaches the output directly. With 8 downsamplings a 256 px image shrinks to 1x1.
"""

from __future__ import annotations

import torch
from torch import nn


class UnetBlock(nn.Module):
    """One level of the U: down-conv -> `submodule` -> up-conv, with a skip around it."""

    def __init__(
        self,
        outer_channels: int,
        inner_channels: int,
        submodule: nn.Module | None = None,
        in_channels: int | None = None,
        dropout: bool = False,
        innermost: bool = False,
        outermost: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        in_channels = outer_channels if in_channels is None else in_channels
        down_conv = nn.Conv2d(in_channels, inner_channels, kernel_size=4, stride=2, padding=1, bias=False)
        # The inner block returns cat(x, up(x)), hence twice the channels coming back up.
        up_in = inner_channels if innermost else inner_channels * 2
        up_conv = nn.ConvTranspose2d(up_in, outer_channels, kernel_size=4, stride=2, padding=1, bias=outermost)
        if outermost:
            layers = [down_conv, submodule, nn.ReLU(), up_conv, nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2), down_conv, nn.ReLU(), up_conv, nn.BatchNorm2d(outer_channels)]
        else:
            layers = [nn.LeakyReLU(0.2), down_conv, nn.BatchNorm2d(inner_channels), submodule,
                      nn.ReLU(), up_conv, nn.BatchNorm2d(outer_channels)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class Unet(nn.Module):
    """pix2pix U-Net: `n_down` downsamplings, 1 channel (L) in, 2 channels (ab) out, tanh.

    Input sides must be multiples of 2**n_down (256 for the default 8).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, n_down: int = 8, num_filters: int = 64) -> None:
        super().__init__()
        if n_down < 5:
            raise ValueError(f"n_down must be >= 5 (4 fixed outer levels + an innermost one), got {n_down}")
        self.n_down = n_down
        widest = num_filters * 8
        block = UnetBlock(widest, widest, innermost=True)
        for _ in range(n_down - 5):  # the deep, widest levels; dropout as in pix2pix
            block = UnetBlock(widest, widest, submodule=block, dropout=True)
        channels = widest
        for _ in range(3):  # 512 -> 256 -> 128 -> 64 filters on the way out
            block = UnetBlock(channels // 2, channels, submodule=block)
            channels //= 2
        self.model = UnetBlock(out_channels, channels, in_channels=in_channels, submodule=block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = 2**self.n_down
        if x.shape[-1] % stride or x.shape[-2] % stride:
            raise ValueError(f"U-Net with {self.n_down} downsamplings needs sides that are multiples of "
                             f"{stride}, got {tuple(x.shape[-2:])}")
        return self.model(x)


def shape_trace(net: Unet, size: int) -> list[tuple[str, tuple[int, ...]]]:
    """(step, (C, H, W)) for one `size` px image on its way down the U and back up: the
    sizes that the recursive construction hides, for printing.

    Steps: "input", "down k" (after level k's down-conv; level 1 is the outermost),
    "up k" (after its up-conv) and "skip k" (up k concatenated with the level's input: the
    skip connection doubles the channels). Recorded with forward hooks during one no-grad
    pass in eval mode; the network's train/eval mode is restored afterwards.
    """
    in_channels = net.model.model[0].in_channels
    trace: list[tuple[str, tuple[int, ...]]] = [("input", (in_channels, size, size))]

    def record(step: str):
        return lambda module, inputs, output: trace.append((step, tuple(output.shape[1:])))

    hooks = []
    blocks = [m for m in net.modules() if isinstance(m, UnetBlock)]  # outermost first
    for level, block in enumerate(blocks, start=1):
        for layer in block.model:
            if isinstance(layer, nn.ConvTranspose2d):
                hooks.append(layer.register_forward_hook(record(f"up {level}")))
            elif isinstance(layer, nn.Conv2d):
                hooks.append(layer.register_forward_hook(record(f"down {level}")))
        if not block.outermost:
            hooks.append(block.register_forward_hook(record(f"skip {level}")))
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, in_channels, size, size))
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    return trace
