"""sRGB <-> CIE Lab in PyTorch, batched and on any device.

The network sees lightness L (0..100) and predicts the two colour channels a, b
(roughly -128..127). Doing the conversion in torch, on a whole batch at once, lets it
run on the GPU instead of per image on the CPU (the reference tutorial's bottleneck).

Conventions follow scikit-image (D65 white point, 2-degree observer), so
`rgb_to_lab` agrees with `skimage.color.rgb2lab` to well under 0.5 Delta-E.
Tensors are channel-first: (3, H, W) or (B, 3, H, W); RGB is float in [0, 1].
"""

from __future__ import annotations

import functools

import torch

# sRGB primaries -> CIE XYZ (D65), the matrix scikit-image uses.
_XYZ_FROM_RGB = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_D65_WHITE = (0.95047, 1.0, 1.08883)
_EPS = 0.008856  # (6/29)^3: where the Lab cube root turns linear
_KAPPA = 7.787  # slope of the linear part

# Scaling to the network's [-1, 1] range (the reference tutorial and pix2pix's colorization mode).
L_SCALE = 50.0  # L in [0, 100]  ->  L / 50 - 1  in [-1, 1]
AB_SCALE = 110.0  # a, b in about [-110, 110] for sRGB  ->  ab / 110  in about [-1, 1]


def _channels_to_last(x: torch.Tensor) -> torch.Tensor:
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected a (3, H, W) or (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
    return x.movedim(-3, -1)


@functools.lru_cache(maxsize=None)
def _constant(name: str, device: torch.device) -> torch.Tensor:
    """A float32 conversion constant on `device`, copied there once: no host-device copy per batch."""
    values = {"xyz_from_rgb": _XYZ_FROM_RGB.T, "rgb_from_xyz": _RGB_FROM_XYZ.T,
              "white": torch.tensor(_D65_WHITE, dtype=torch.float64)}[name]
    return values.to(device=device, dtype=torch.float32)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> Lab (L in [0, 100]). Computes in float32, returns the input dtype."""
    dtype = rgb.dtype if rgb.is_floating_point() else torch.float32
    x = _channels_to_last(rgb).float().clamp(0.0, 1.0)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = (linear @ _constant("xyz_from_rgb", x.device)) / _constant("white", x.device)
    f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS) ** (1.0 / 3.0), _KAPPA * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-1)
    lab = torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-1)
    return lab.movedim(-1, -3).contiguous().to(dtype)  # contiguous: channels-first memory for convolutions


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab -> sRGB in [0, 1] (out-of-gamut colours clipped). Computes in float32."""
    dtype = lab.dtype
    L, a, b = _channels_to_last(lab).float().unbind(-1)
    fy = (L + 16.0) / 116.0
    f = torch.stack((fy + a / 500.0, fy, (fy - b / 200.0).clamp_min(0.0)), dim=-1)
    xyz = torch.where(f**3 > _EPS, f**3, (f - 16.0 / 116.0) / _KAPPA)
    xyz = xyz * _constant("white", lab.device)
    linear = (xyz @ _constant("rgb_from_xyz", lab.device)).clamp_min(0.0)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return rgb.clamp(0.0, 1.0).movedim(-1, -3).contiguous().to(dtype)


def normalize_lab(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lab -> (L, ab) scaled to [-1, 1]: the network's input and target."""
    L = lab[..., :1, :, :] / L_SCALE - 1.0
    ab = lab[..., 1:, :, :] / AB_SCALE
    return L, ab


def denormalize_lab(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """(L, ab) in [-1, 1] -> Lab. ab is clamped to [-1, 1] first (a generator without tanh may overshoot)."""
    return torch.cat(((L + 1.0) * L_SCALE, ab.clamp(-1.0, 1.0) * AB_SCALE), dim=-3)


def rgb_to_L_ab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sRGB in [0, 1] -> normalised (L, ab), shapes (B, 1, H, W) and (B, 2, H, W)."""
    return normalize_lab(rgb_to_lab(rgb))


def L_ab_to_rgb(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Normalised (L, ab) -> sRGB in [0, 1]: how a prediction becomes a picture."""
    return lab_to_rgb(denormalize_lab(L, ab))
