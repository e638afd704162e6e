"""The conditional GAN objective of pix2pix: an adversarial term plus lambda * L1.

The discriminator only ever sees the adversarial term; L1 pulls the generator towards
the true colours (it alone gives plausible but greyish results, see chapter 6), the GAN
term pushes it towards colours that look real (more vivid, sometimes wrong).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

GAN_MODES = ("vanilla", "lsgan")
LAMBDA_L1 = 100.0


class GANLoss(nn.Module):
    """Loss of a patch-logit map against an all-real or all-fake target.

    vanilla: binary cross-entropy on logits (the original GAN); lsgan: mean squared error
    (least-squares GAN, smoother gradients when D is confident).
    """

    def __init__(self, mode: str = "vanilla", real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN loss {mode!r}; choose one of {', '.join(GAN_MODES)}")
        self.mode = mode
        self.register_buffer("real_label", torch.tensor(real_label))
        self.register_buffer("fake_label", torch.tensor(fake_label))

    def forward(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = (self.real_label if target_is_real else self.fake_label).to(logits.dtype).expand_as(logits)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)


def discriminator_loss(gan_loss: GANLoss, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """D's loss: real pairs should score real, fake pairs fake; halved as in pix2pix."""
    real = gan_loss(real_logits, True)
    fake = gan_loss(fake_logits, False)
    return {"loss_D": (real + fake) / 2, "loss_D_real": real, "loss_D_fake": fake}


def generator_loss(
    gan_loss: GANLoss | None,
    fake_logits: torch.Tensor | None,
    fake_ab: torch.Tensor,
    real_ab: torch.Tensor,
    lambda_l1: float = LAMBDA_L1,
) -> dict[str, torch.Tensor]:
    """G's loss: fool D (its fakes should score real) + lambda * L1 to the true ab.

    With `gan_loss=None` this is the L1-only objective of the pretraining stage.
    """
    l1 = F.l1_loss(fake_ab, real_ab)
    if gan_loss is None:
        return {"loss_G": l1, "loss_G_L1": l1}
    adversarial = gan_loss(fake_logits, True)
    return {"loss_G": adversarial + lambda_l1 * l1, "loss_G_GAN": adversarial, "loss_G_L1": l1}
