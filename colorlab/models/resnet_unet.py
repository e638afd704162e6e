"""Generator B ("final model"): a ResNet18 body inside fastai's DynamicUnet.

The encoder starts from ImageNet features, so the network already knows what grass, sky
and skin look like before it has seen one colour target. fastai builds the decoder and
the skip connections to fit the body ("dynamic"). The first convolution is adapted to
1 input channel (L) by `create_body(..., n_in=1)`, which sums the pretrained RGB filters.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

IMAGENET = "imagenet"
AUTO = "auto"  # ImageNet when it can be loaded (online or cached), else random init with a warning
LINEAR, TANH = "linear", "tanh"
OUTPUTS = (LINEAR, TANH)  # what the last layer does to the predicted ab: nothing, or bound it to (-1, 1)


class WeightsUnavailableError(RuntimeError):
    """The ImageNet weights could not be fetched (offline machine) and are not cached."""


def _resnet18(weights: str | Path | None) -> tuple[nn.Module, bool]:
    """The torchvision ResNet18 for `weights`, and whether it is pretrained."""
    from torchvision.models import ResNet18_Weights, resnet18

    if weights is None:
        return resnet18(weights=None), False
    if weights == AUTO:
        try:
            return _resnet18(IMAGENET)
        except WeightsUnavailableError as err:
            warnings.warn(f"{err} Using random init (weights=None) instead.", stacklevel=3)
            return resnet18(weights=None), False
    if weights == IMAGENET:
        try:
            return resnet18(weights=ResNet18_Weights.IMAGENET1K_V1), True
        except Exception as err:  # urllib / SSL / socket errors differ by platform
            raise WeightsUnavailableError(
                f"could not download torchvision's ResNet18 ImageNet weights ({type(err).__name__}: {err}). "
                "Offline fallback: weights=None (random init, `--weights none`) or a local file "
                "weights='resnet18.pth' holding a torchvision resnet18 state dict."
            ) from None
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"ResNet18 weights file not found: {path} (use 'imagenet', None or a .pth file)")
    model = resnet18(weights=None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model, True


def resnet18_unet(size: int = 256, weights: str | Path | None = IMAGENET, out_channels: int = 2,
                  output: str = LINEAR, in_channels: int = 1) -> nn.Module:
    """ResNet18 (head removed) + DynamicUnet decoder: 1 channel (L) in, `out_channels` (ab) out.

    `in_channels` > 1 adds inputs after L (colour hints: colorlab.hints); random-init weights only.

    weights: "imagenet" (torchvision download, needs the internet or a cached copy), None
    (random init, works offline), "auto" (ImageNet if possible, else None with a warning), or
    the path of a torchvision resnet18 state dict. `.pretrained` on the result says which.

    output: "linear" leaves the last convolution's values as they are (the reference tutorial's network: an
    adversarial loss can then push a/b far outside the gamut, which `denormalize_lab` clamps to
    the most saturated colour); "tanh" bounds them to (-1, 1), like the baseline U-Net. tanh has
    no parameters and tanh(x) ~ x for the small ab an L1-trained model predicts, so the same
    weights fit both, and a linear checkpoint can be fine-tuned with the bound.
    """
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
    with warnings.catch_warnings():  # fastai's import-time deprecation notices (torch.jit, pandas) are not ours
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastai.vision.learner import create_body
        from fastai.vision.models.unet import DynamicUnet

    resnet, pretrained = _resnet18(weights)
    body = create_body(resnet, n_in=in_channels, pretrained=pretrained, cut=-2)
    net = DynamicUnet(body, n_out=out_channels, img_size=(size, size))
    # fastai ends with ToTensorBase, which wraps outputs in its own tensor subclass: extra Python
    # per operation downstream, and torch.compile recurses on it. Plain tensors out instead.
    net.layers[-1] = nn.Tanh() if output == TANH else nn.Identity()
    net.pretrained = pretrained
    return net
